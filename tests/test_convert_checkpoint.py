"""tools/model_converters/convert_checkpoint.py on synthetic checkpoints in the official SimAM layout (torchvision models with
SimAM wrapped in as the official code does), and on wrong files: refused with a clear message, nothing
written."""
import os
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torchvision
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import involution_mm  # noqa: F401
from conftest import REPO, randomise_norms, run_command
from involution_mm.checkpoint import CheckpointError
from involution_mm.convert import CONVERSIONS, ConversionError, convert_checkpoint, main, save_atomically
from test_simam_layer import ReferenceSimAM

E_LAMBDA = 0.1


def official_simam_resnet(arch: str) -> nn.Module:
    """torchvision's ResNet/ResNeXt with conv2 = Sequential(conv2, SimAM) in every block, as released."""
    model = getattr(torchvision.models, arch)()
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            block.conv2 = nn.Sequential(block.conv2, ReferenceSimAM(E_LAMBDA))
    return model


def official_simam_mobilenet_v2() -> nn.Module:
    """torchvision's MobileNetV2 with each depthwise conv-BN-ReLU6 as Sequential(conv, SimAM, BN, ReLU6), and
    the classifier as Sequential(Linear), as in the official SimAM code."""
    model = torchvision.models.mobilenet_v2()
    for block in model.features[1:-1]:
        conv, norm, act = block.conv[-3]
        assert conv.groups == conv.in_channels  # the depthwise one
        block.conv[-3] = nn.Sequential(conv, ReferenceSimAM(E_LAMBDA), norm, act)
    model.classifier = nn.Sequential(model.classifier[1])
    return model


def save_official(model: nn.Module, path, prefix: str = 'module.') -> str:
    """Save as the official training script does: a dict with the (DataParallel) state dict and more."""
    state = {prefix + k: v for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save(dict(epoch=100, arch='resnet', state_dict=state, best_acc=torch.tensor(71.3),
                    optimizer=optimizer.state_dict()), str(path))
    return str(path)


def mmpretrain_classifier(model: str) -> nn.Module:
    init_default_scope('mmpretrain')
    return CONVERSIONS[model, 'mmpretrain'].build().eval()


def leftovers(folder) -> list:
    return [name for name in os.listdir(folder) if name.endswith('.part')]


@pytest.fixture(scope='module')
def resnet18(tmp_path_factory):
    model = randomise_norms(official_simam_resnet('resnet18'))
    return model, save_official(model, tmp_path_factory.mktemp('released') / 'resnet18.pth.tar')


@pytest.mark.parametrize('arch, model, prefix', [
    ('resnet50', 'simam-resnet50', ''),
    ('resnext50_32x4d', 'simam-resnext50', 'module.'),
])
def test_resnets_convert_to_classifiers_with_the_same_outputs(tmp_path, arch, model, prefix):
    reference = randomise_norms(official_simam_resnet(arch))
    src = save_official(reference, tmp_path / f'{arch}.pth.tar', prefix)
    dst = tmp_path / 'converted.pth'
    assert 'tensors' in convert_checkpoint(src, str(dst), model)
    classifier = mmpretrain_classifier(model)
    load_checkpoint(classifier, str(dst), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x, mode='tensor'), reference(x), rtol=1e-4, atol=1e-4)


def test_resnet18_converts_for_its_config(tmp_path, resnet18):
    reference, src = resnet18
    dst = tmp_path / 'converted.pth'
    convert_checkpoint(src, str(dst), 'simam-resnet18')
    cfg = Config.fromfile(osp.join(REPO, 'configs/simam/simam-resnet18_8xb32_in1k.py'))
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    classifier = MODELS.build(cfg.model).eval()
    load_checkpoint(classifier, str(dst), strict=True)
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['model'] == 'simam-resnet18' and saved['meta']['converted_from'] == 'resnet18.pth.tar'
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x, mode='tensor'), reference(x), rtol=1e-4, atol=1e-4)


def test_mobilenet_v2_converts_with_the_same_outputs(tmp_path):
    reference = randomise_norms(official_simam_mobilenet_v2())
    src = save_official(reference, tmp_path / 'mobilenet_v2.pth.tar')
    dst = tmp_path / 'converted.pth'
    convert_checkpoint(src, str(dst), 'simam-mobilenetv2')
    classifier = mmpretrain_classifier('simam-mobilenetv2')
    load_checkpoint(classifier, str(dst), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x, mode='tensor'), reference(x), rtol=1e-4, atol=1e-4)


def test_mmdet_backbone_checkpoint_loads_into_both_routes(tmp_path):
    reference = randomise_norms(official_simam_resnet('resnet50'))
    src = save_official(reference, tmp_path / 'resnet50.pth.tar')
    dst = tmp_path / 'simam-resnet50_mmdet.pth'
    convert_checkpoint(src, str(dst), 'simam-resnet50', 'mmdet')
    assert not any(key.startswith('fc.') for key in torch.load(dst, weights_only=True)['state_dict'])
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    plugins = [dict(cfg=dict(type='SimAM', e_lambda=E_LAMBDA), stages=(True, True, True, True),
                    position='after_conv2')]
    plugin = MODELS.build(dict(type='ResNet', depth=50, plugins=plugins))
    paper = MODELS.build(dict(type='SimAMResNet', depth=50, e_lambda=E_LAMBDA))
    for backbone in (plugin, paper):
        load_checkpoint(backbone, str(dst), strict=True)
        backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        stages = (reference.layer1, reference.layer2, reference.layer3, reference.layer4)
        for layer, ours in zip(stages, paper(x)):
            features = layer(features)
            torch.testing.assert_close(ours, features, rtol=1e-4, atol=1e-4)  # the official detector backbone


def test_files_without_bn_counters_convert(tmp_path, resnet18):
    """Checkpoints from torch < 0.4.1 have no num_batches_tracked; the counters start at 0."""
    reference, _ = resnet18
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith('num_batches_tracked')}
    torch.save(state, str(tmp_path / 'old.pth'))
    convert_checkpoint(str(tmp_path / 'old.pth'), str(tmp_path / 'converted.pth'), 'simam-resnet18')
    converted = torch.load(tmp_path / 'converted.pth', weights_only=True)['state_dict']
    counters = [v for k, v in converted.items() if k.endswith('num_batches_tracked')]
    assert len(counters) == 20 and all(v.item() == 0 for v in counters)
    load_checkpoint(mmpretrain_classifier('simam-resnet18'), str(tmp_path / 'converted.pth'), strict=True)


def test_command_line_writes_and_keeps_an_existing_output(tmp_path, resnet18):
    _, src = resnet18
    dst = tmp_path / 'out' / 'simam-resnet18.pth'
    dst.parent.mkdir()
    out = run_command(['python', 'tools/model_converters/convert_checkpoint.py', src, str(dst), '--model', 'simam-resnet18'])
    assert dst.is_file() and 'simam-resnet18' in out
    assert oct(dst.stat().st_mode & 0o777) != oct(0o600)  # not the temporary file's private mode
    written = dst.read_bytes()
    assert main([src, str(dst), '--model', 'simam-resnet18']) == 2  # exists: kept
    assert dst.read_bytes() == written
    assert main([src, str(dst), '--model', 'simam-resnet18', '--force']) == 0
    assert leftovers(dst.parent) == []


def _wrong_files(tmp_path, resnet18):
    reference, src = resnet18
    state = {k: v for k, v in reference.state_dict().items()}
    renamed = dict(state)
    renamed['layer1.0.conv2.weight'] = renamed.pop('layer1.0.conv2.0.weight')
    reshaped = dict(state, **{'fc.weight': torch.zeros(10, 512)})
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(open(src, 'rb').read()[:100000])
    files = {
        'renamed': (renamed, ['1 missing: layer1.0.conv2.0.weight', '1 unexpected: layer1.0.conv2.weight']),
        'reshaped': (reshaped, ['fc.weight is (10, 512), expected (1000, 512)']),
        'plain-torchvision': (torchvision.models.resnet18().state_dict(), ['8 missing', '8 unexpected']),
        'not-a-state-dict': ([1, 2, 3], ['holds no state dict']),
    }
    for name, (content, _) in files.items():
        torch.save(content, str(tmp_path / f'{name}.pth'))
    messages = {name: expected for name, (_, expected) in files.items()}
    messages['truncated'] = ['truncated or corrupt']
    return messages


def test_wrong_files_are_refused_and_nothing_is_written(tmp_path, resnet18, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    for name, expected in _wrong_files(tmp_path, resnet18).items():
        dst = out / f'{name}-converted.pth'
        assert main([str(tmp_path / f'{name}.pth'), str(dst), '--model', 'simam-resnet18']) == 2, name
        error = capsys.readouterr().err
        assert error.startswith('error: ') and all(part in error for part in expected), (name, error)
        assert not dst.exists() and leftovers(out) == []
    with pytest.raises(CheckpointError):
        convert_checkpoint(str(tmp_path / 'truncated.pth'), str(out / 'x.pth'), 'simam-resnet18')
    assert os.listdir(out) == []


def test_the_wrong_model_is_refused_with_the_right_one_named(tmp_path, resnet18):
    _, src = resnet18
    with pytest.raises(ConversionError) as error:
        convert_checkpoint(src, str(tmp_path / 'x.pth'), 'simam-resnet34')
    message = str(error.value)
    assert 'missing: layer1.2.' in message and 'pass --model simam-resnet18' in message
    assert message.endswith('Nothing was written.')
    assert not (tmp_path / 'x.pth').exists()
    with pytest.raises(KeyError, match='simam-mobilenetv2 --to mmpretrain'):
        convert_checkpoint(src, str(tmp_path / 'x.pth'), 'simam-mobilenetv2', 'mmdet')


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):

    def failing_save(obj, file):
        file.write(b'partial bytes')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='disk full'):
        save_atomically({'a': torch.zeros(1)}, str(tmp_path / 'out.pth'))
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------------------
# Output paths and writing (issue 24): refused in one line, never replaced without --force.

def _convert_error(capsys, *args) -> str:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
    return err


def test_a_dangling_symlink_is_not_replaced_without_force(tmp_path, capsys, resnet18):
    _, src = resnet18
    link = tmp_path / 'link.pth'
    link.symlink_to(tmp_path / 'gone.pth')
    assert 'link.pth exists; pass --force to overwrite it' in _convert_error(capsys, src, link, '--model',
                                                                            'simam-resnet18')
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / 'gone.pth')
    assert main([src, str(link), '--model', 'simam-resnet18', '--force']) == 0
    assert link.is_file() and not link.is_symlink() and not (tmp_path / 'gone.pth').exists()


def test_a_file_path_ending_in_a_slash_is_refused(tmp_path, capsys, resnet18):
    _, src = resnet18
    err = _convert_error(capsys, src, f'{tmp_path}/newdir/', '--model', 'simam-resnet18')
    assert f'cannot write {tmp_path}/newdir/: a path ending in "/" names a folder' in err
    assert f'mkdir -p {tmp_path}/newdir/' in err
    assert os.listdir(tmp_path) == []


def test_of_two_writers_of_one_new_output_one_is_refused(tmp_path):
    """The output is put in place with a hard link, which fails if another conversion took the name since
    the first check: the other's file is kept and this one is refused."""
    from involution_mm.output_files import OutputExistsError, written_atomically
    out = tmp_path / 'x.pth'
    with pytest.raises(OutputExistsError, match='x.pth exists; pass --force to overwrite it'):
        with written_atomically(str(out), overwrite=False) as temporary:
            with open(temporary, 'w') as file:
                file.write('mine')
            out.write_text('the other conversion')  # finished first
    assert out.read_text() == 'the other conversion' and os.listdir(tmp_path) == ['x.pth']
    with written_atomically(str(tmp_path / 'y.pth'), overwrite=False) as temporary:
        with open(temporary, 'w') as file:
            file.write('alone')
    assert (tmp_path / 'y.pth').read_text() == 'alone' and sorted(os.listdir(tmp_path)) == ['x.pth', 'y.pth']


def test_a_file_size_limit_is_one_line_and_leaves_nothing(tmp_path, resnet18):
    """ulimit -f, as a full disk: torch's writer would say 'unexpected pos'; the tool says what happened."""
    import resource
    import subprocess
    import sys
    _, src = resnet18

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    out = tmp_path / 'out'
    out.mkdir()
    proc = subprocess.run([sys.executable, 'tools/model_converters/convert_checkpoint.py', src, str(out / 'x.pth'),
                           '--model', 'simam-resnet18'], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=300, preexec_fn=limit_file_size)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f'error: cannot write {out / "x.pth"}: the file would exceed the file size limit (ulimit -f); raise the '
        'limit or write elsewhere; nothing was written')
    assert os.listdir(out) == []


def test_other_libraries_warnings_are_not_printed_as_the_tools_own(tmp_path, capsys, recwarn, resnet18, monkeypatch):
    """Only the converter's own warnings become ``warning:`` lines; another library's is shown as Python shows
    warnings (here recorded by pytest), under its own category and place."""
    import warnings

    import involution_mm.convert as convert
    _, src = resnet18
    read = convert.read_checkpoint

    def read_with_a_warning(path):
        warnings.warn('pkg_resources is deprecated as an API', UserWarning)
        return read(path)

    monkeypatch.setattr(convert, 'read_checkpoint', read_with_a_warning)
    assert main([src, str(tmp_path / 'x.pth'), '--model', 'simam-resnet18']) == 0
    assert 'warning: pkg_resources' not in capsys.readouterr().err
    assert any(w.category is UserWarning and 'pkg_resources is deprecated as an API' in str(w.message)
               and w.filename == __file__ for w in recwarn)


def test_a_config_whose_model_cannot_be_built_is_one_line(tmp_path, capsys, resnet18):
    _, src = resnet18
    config = tmp_path / 'bad_depth.py'
    config.write_text(f"_base_ = ['{REPO}/configs/rednet/rednet26_64xb32-warmup-coslr-130e_in1k.py']\n"
                      "model = dict(backbone=dict(depth=50.0))\n")
    err = _convert_error(capsys, src, tmp_path / 'x.pth', '--config', config)
    assert f'cannot build the model of {config}: ' in err and 'RedNet depth must be an int' in err
    assert not (tmp_path / 'x.pth').exists()
