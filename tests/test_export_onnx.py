"""ONNX export through tools/deployment/export_onnx.py as a user runs it: standard operators only, a dynamic batch, and
outputs equal to PyTorch's on ONNX Runtime for images given as a user has them (RGB, 0-255: the model's
preprocessing is in the graph); the asked opset or a one-line refusal; clear one-line errors for bad output
paths, checkpoints and configs."""
import os
import os.path as osp
import re
import resource
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, randomise_norms, run_command

onnx = pytest.importorskip('onnx', reason='the deploy extra (onnx, onnxscript, onnxruntime) is not installed')
onnxruntime = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

REDNET26 = osp.join('configs', 'rednet', 'rednet26_64xb32-warmup-coslr-130e_in1k.py')
DETECTOR = osp.join('configs', 'involution_det', 'mask-rcnn_rednet50-involution-fpn-head_1x_coco.py')


def graph_facts(path):
    """(operator domains, operator types, batch dimension of the first input) of an ONNX file."""
    model = onnx.load(path)
    onnx.checker.check_model(model)
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    return ({node.domain for node in model.graph.node}, {node.op_type for node in model.graph.node},
            batch.dim_param or batch.dim_value)


def predict_as_mmpretrain(model, rgb_images: torch.Tensor) -> np.ndarray:
    """Scores of ``model`` for RGB images as mmpretrain computes them: the images in the BGR order mmcv
    loads, through the model's own data_preprocessor."""
    data = model.data_preprocessor({'inputs': list(rgb_images.flip(1)), 'data_samples': None})
    with torch.no_grad():
        return model(data['inputs'], mode='tensor').numpy()


def calibrated(model, rgb_images: torch.Tensor):
    """``model`` with random BN affine parameters and every BN's running statistics those of ``rgb_images``
    (through the model's data_preprocessor): a stand-in for a trained model, whose activations stay in range
    on images and whose scores depend on them (untrained RedNets overflow on images in [0, 255])."""
    randomise_norms(model)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # the running statistics become the (one) batch's
    model.train()
    with torch.no_grad():
        model(model.data_preprocessor({'inputs': list(rgb_images.flip(1))})['inputs'], mode='tensor')
    return model.eval()


def random_images(count: int, size: int) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def close(got: np.ndarray, want: np.ndarray, tolerance: float = 1e-4) -> bool:
    return got.shape == want.shape and np.abs(got - want).max() <= tolerance * max(1.0, np.abs(want).max())


def test_rednet26_classifier_exports_with_a_dynamic_batch(tmp_path):
    """The whole classifier, a checkpoint loaded, the default (dynamo) exporter; the graph takes RGB images
    with values 0-255 and gives mmpretrain's scores (its data_preprocessor is in the graph), for batches
    other than the exported one."""
    from involution_mm.upstream import build_model_from_config
    model = calibrated(build_model_from_config(osp.join(REPO, REDNET26))[0], random_images(8, 64))
    checkpoint, out = tmp_path / 'rednet26.pth', tmp_path / 'rednet26.onnx'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    log = run_command(['python', 'tools/deployment/export_onnx.py', REDNET26, str(checkpoint), str(out), '--shape', '64'])
    assert 'ONNX Runtime matches PyTorch on a batch of 3' in log
    domains, op_types, batch = graph_facts(str(out))
    assert domains <= {'', 'ai.onnx'} and isinstance(batch, str)  # standard operators; symbolic batch
    assert {'Slice', 'Mul', 'Add', 'Conv'} <= op_types
    session = onnxruntime.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['images']
    for size in (1, 5):
        images = torch.randint(0, 256, (size, 3, 64, 64), dtype=torch.uint8)
        want = predict_as_mmpretrain(model, images)
        got = session.run(None, {'images': images.float().numpy()})[0]
        assert np.isfinite(want).all() and close(got, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['rednet26.onnx', 'rednet26.pth']  # no leftovers


def generated_images(count: int, size: int) -> torch.Tensor:
    """``count`` RGB uint8 images of the demo dataset's patterns, (N, 3, size, size)."""
    sys.path.insert(0, osp.join(REPO, 'tools', 'dataset_converters'))
    from demo_data.imagenet import PATTERNS, pattern_image
    rng = np.random.default_rng(0)
    names = sorted(PATTERNS)
    images = [pattern_image(rng, names[i % len(names)], size) for i in range(count)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def test_uint8_images_give_the_pytorch_models_predictions(tmp_path):
    """A 4-class RedNet-26 exported (TorchScript exporter) for uint8 images: on generated images in
    RGB order, ONNX Runtime gives the scores and top-1 classes of the PyTorch model fed as mmpretrain feeds
    it; the same images in BGR order do not (the graph's channel order is real); the metadata says what the
    input is."""
    from involution_mm.export import TensorProgram, export_onnx, preprocessing_of
    from involution_mm.upstream import build_model_from_config
    images = generated_images(8, 48)
    torch.manual_seed(0)  # the same random weights every run
    model = calibrated(build_model_from_config(osp.join(REPO, REDNET26), {'model.head.num_classes': 4})[0], images)
    out = tmp_path / 'four.onnx'
    export_onnx(TensorProgram(model, 'mmpretrain', preprocessing_of(model, 'mmpretrain')), str(out), (48, 48),
                exporter='torchscript', input_dtype='uint8')
    want = predict_as_mmpretrain(model, images)
    assert np.ptp(want, axis=0).max() > 0.1  # the scores depend on the image
    session = onnxruntime.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    got = session.run(None, {'images': images.numpy()})[0]
    assert close(got, want, 1e-3) and (got.argmax(1) == want.argmax(1)).all()
    swapped = session.run(None, {'images': images.flip(1).contiguous().numpy()})[0]
    assert not close(swapped, want, 1e-2)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props['input_layout'] == 'NCHW' and props['input_channel_order'] == 'RGB'
    assert props['input_range'] == '0-255' and props['input_dtype'] == 'uint8' and props['input_size'] == '48x48'
    assert 'mean (123.675, 116.28, 103.53)' in props['preprocessing']


def test_no_preprocessing_writes_the_mmdeploy_style_graph(tmp_path):
    """Without the preprocessing (--no-preprocessing) the graph takes the data_preprocessor's output (normalised, RGB for our configs),
    as mmdeploy's graphs do, and its metadata says so."""
    from involution_mm.export import TensorProgram, export_onnx
    from involution_mm.upstream import build_model_from_config
    images = generated_images(4, 32)
    model = calibrated(build_model_from_config(osp.join(REPO, REDNET26))[0], images)
    out = tmp_path / 'plain.onnx'
    export_onnx(TensorProgram(model, 'mmpretrain'), str(out), (32, 32), exporter='torchscript')
    normalised = model.data_preprocessor({'inputs': list(images.flip(1))})['inputs']
    session = onnxruntime.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['inputs']
    assert close(session.run(None, {'inputs': normalised.numpy()})[0], predict_as_mmpretrain(model, images), 1e-3)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props['input_channel_order'] == 'RGB' and props['input_range'] == 'preprocessed'
    assert props['preprocessing'].startswith('not in the graph: apply to float32, (x - mean) / std')


@pytest.mark.parametrize('scope, config, shape', [
    ('mmpretrain', REDNET26, (37, 45)),
    ('mmdet', DETECTOR, (45, 70)),  # padded to a multiple of 32 by the preprocessor
    ('mmseg', 'configs/involution_seg/fpn_rednet50-involution-neck_4xb2-80k_cityscapes-512x1024.py', (40, 56)),
])
def test_the_graphs_preprocessing_is_the_frameworks(scope, config, shape):
    """What the exported graph applies to RGB images equals what each framework's data_preprocessor does to
    the same images loaded in BGR order (channel order, mean and std, padding)."""
    from involution_mm.export import Preprocess, preprocessing_of
    from involution_mm.upstream import build_model_from_config
    model, _ = build_model_from_config(osp.join(REPO, config), {'model.backbone.depth': 26})
    images = torch.randint(0, 256, (2, 3, *shape), dtype=torch.uint8)
    want = model.data_preprocessor({'inputs': list(images.flip(1)), 'data_samples': None})['inputs']
    preprocessing = preprocessing_of(model, scope)
    assert preprocessing.mean == pytest.approx((123.675, 116.28, 103.53)) and not preprocessing.to_bgr  # RGB
    got = Preprocess(preprocessing)(images)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)


def test_detector_involution_neck_and_head_export(tmp_path):
    """Backbone, involution FPN and involution RPN head of a detector (a RedNet-26 backbone to keep the test
    short), with the TorchScript exporter; the tool checks ONNX Runtime against PyTorch itself."""
    out = tmp_path / 'detector.onnx'
    log = run_command(['python', 'tools/deployment/export_onnx.py', DETECTOR, str(out), '--shape', '64', '--exporter',
                       'torchscript', '--opset', '13', '--cfg-options', 'model.backbone.depth=26'])
    assert 'outputs feat0, feat1, feat2, feat3, feat4, cls0, cls1, cls2, cls3, cls4, reg0' in log
    assert 'ONNX Runtime matches PyTorch on a batch of 3' in log
    assert not re.search(r'^\s*%\S+ : ', log, re.MULTILINE)  # no TorchScript graph dump
    domains, _, batch = graph_facts(str(out))
    assert domains <= {'', 'ai.onnx'} and batch == 'batch'
    model = onnx.load(str(out))
    assert [o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')] == [13]  # --opset honoured
    assert {p.key: p.value for p in model.metadata_props}['input_channel_order'] == 'RGB'


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
def test_involution_layers_in_onnx_runtime(tmp_path, exporter):
    """Involution layers alone (stride 1 and 2, K 7 and 3, odd sizes), whose outputs depend strongly on the
    input, so the comparison checks the exported aggregation itself; a dynamic batch (and, with the
    TorchScript exporter, dynamic height and width: the dynamo exporter takes them too, but its symbolic
    shape reasoning over every tap's slice costs about a minute here)."""
    from involution_mm.layers import Involution
    torch.manual_seed(0)
    layers = randomise_norms(torch.nn.Sequential(Involution(32, 7, 1), torch.nn.ReLU(), Involution(32, 3, 2)))
    example = torch.randn(2, 32, 13, 11)
    path = str(tmp_path / 'layers.onnx')
    if exporter == 'dynamo':
        torch.onnx.export(layers, (example, ), path, input_names=['x'], dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim('batch')}, ))
    else:
        torch.onnx.export(layers, (example, ), path, input_names=['x'], dynamo=False,
                          dynamic_axes={'x': {0: 'batch', 2: 'height', 3: 'width'}})
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    for shape in ((1, 32, 13, 11), (3, 32, 13, 11) if exporter == 'dynamo' else (3, 32, 9, 16)):
        x = torch.randn(shape)
        with torch.no_grad():
            want = layers(x).numpy()
        got = session.run(None, {'x': x.numpy()})[0]
        assert got.shape == want.shape and want.std() > 0.1
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize('make_out, message', [
    (lambda tmp: tmp, 'is a folder; give the path of a file'),
    (lambda tmp: tmp / 'missing' / 'model.onnx', 'does not exist; create it first'),
    (lambda tmp: (tmp / 'file').write_text('x') and tmp / 'file' / 'model.onnx', 'is a file, not a folder'),
    (lambda tmp: (tmp / 'old.onnx').write_text('x') and tmp / 'old.onnx', 'exists; pass --force to overwrite'),
])
def test_output_path_problems_are_one_line(tmp_path, make_out, message):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, 'tools/deployment/export_onnx.py', REDNET26, str(make_out(tmp_path))], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and message in errors[0] and 'Traceback' not in proc.stderr


def export_error(capsys, *args) -> str:
    """Run the exporter in this process; it must refuse with exit status 2 and one ``error:`` line."""
    from involution_mm.export import main
    assert main([str(a) for a in args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith('error: ') and captured.err.count('\n') == 1, captured.err
    return captured.err


@pytest.mark.parametrize('exporter, opset', [('dynamo', 7), ('dynamo', 17), ('dynamo', 99), ('torchscript', 7),
                                             ('torchscript', 10), ('torchscript', 99)])
def test_an_opset_the_exporter_cannot_write_is_refused(tmp_path, capsys, exporter, opset):
    from involution_mm.export import supported_opsets
    opsets = supported_opsets(exporter)
    err = export_error(capsys, REDNET26, tmp_path / 'x.onnx', '--exporter', exporter, '--opset', opset)
    assert f'the {exporter} exporter writes opsets {opsets.start} to {opsets.stop - 1}, not --opset {opset}' in err
    assert os.listdir(tmp_path) == []


def test_a_checkpoint_with_another_head_size_is_one_line(tmp_path, capsys):
    from involution_mm.upstream import build_model_from_config
    model = build_model_from_config(osp.join(REPO, REDNET26), {'model.head.num_classes': 4})[0]
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'four.pth')
    err = export_error(capsys, REDNET26, tmp_path / 'four.pth', tmp_path / 'x.onnx')
    assert f'four.pth does not fit the model of {REDNET26}: 2 of ' in err
    assert 'head.fc.weight: (4, 2048) in the file, (1000, 2048) in the model' in err
    assert os.listdir(tmp_path) == ['four.pth']


@pytest.mark.parametrize('option, message', [
    ('model.backbone.depth=50.0', 'RedNet depth must be an int'),
    ('model.backbone.type=RedNt', 'RedNt is not in the mmpretrain::model registry'),
    ('model.head.num_classes=-3', 'cannot build the model of'),
])
def test_config_options_that_break_the_model_are_one_line(tmp_path, capsys, option, message):
    err = export_error(capsys, REDNET26, tmp_path / 'x.onnx', '--cfg-options', option)
    assert f'cannot build the model of {REDNET26}: ' in err and message in err


def test_ctrl_c_during_the_check_leaves_nothing(tmp_path, capsys, monkeypatch):
    """The file is checked on ONNX Runtime before it is moved into place, so an interrupted check leaves no
    unchecked file behind, as the message says."""
    import involution_mm.export as export

    def fake_export(program, out_file, *args, **kwargs):
        with open(out_file, 'wb') as file:
            file.write(b'onnx')
        return ['scores']

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, 'export_onnx', fake_export)
    monkeypatch.setattr(export, 'verify_onnx', interrupted)
    assert export.main([REDNET26, str(tmp_path / 'x.onnx'), '--shape', '32']) == 130
    assert capsys.readouterr().err == 'interrupted; nothing was written\n'
    assert os.listdir(tmp_path) == []


def test_a_file_size_limit_is_one_line_and_leaves_nothing(tmp_path):
    """ulimit -f (as a full disk): one line that says so, no traceback, nothing left behind."""

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    proc = subprocess.run([sys.executable, 'tools/deployment/export_onnx.py', REDNET26, str(tmp_path / 'x.onnx'),
                           '--shape', '32', '--exporter', 'torchscript', '--no-verify'], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300,
                          preexec_fn=limit_file_size)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith('the file would exceed the file size limit (ulimit -f); '
                                                         'raise the limit or write elsewhere; nothing was written')
    assert os.listdir(tmp_path) == []
