"""Released checkpoints (mmcls 0.x / mmdet 2.x / mmseg 0.x era, saved by mmcv 1.x) in the official layouts of
official_layouts.json convert with no renaming, load with strict matching, and evaluate with our configs."""
import os
import os.path as osp
import re

import pytest
import torch
from mmengine.runner import load_checkpoint

import involution_mm  # noqa: F401
from conftest import REPO, parse_test_accuracies, run_command
from involution_mm.checkpoint import CheckpointError
from involution_mm.convert import ConversionError, convert_checkpoint
from involution_mm.upstream import build_model_from_config

CLASSIFIER = 'configs/rednet/rednet26_64xb32-warmup-coslr-130e_in1k.py'
DETECTOR = 'configs/involution_det/mask-rcnn_rednet50-involution-fpn-head_1x_coco.py'
SEGMENTOR = 'configs/involution_seg/fpn_rednet50-involution-neck_4xb2-80k_cityscapes-512x1024.py'


def released_tensor(key: str, shape) -> torch.Tensor:
    """A plausible trained value: positive BN variances, a step counter, small weights."""
    if key.endswith('num_batches_tracked'):
        return torch.tensor(1000)
    if key.endswith('running_var'):
        return torch.rand(shape) + 0.5
    return torch.randn(shape) * 0.05


def write_released(path, layouts, config=None, classes=('a', 'b')) -> dict:
    """Save, as mmcv 1.x did, a checkpoint whose keys and shapes are the given official layouts; keys the
    layouts do not cover (standard upstream heads) come from the config's model. Returns the state dict."""
    shapes = {key: shape for layout in layouts for key, shape in layout.items()}
    if config is not None:
        model_state = build_model_from_config(osp.join(REPO, config))[0].state_dict()
        for key, value in model_state.items():
            shapes.setdefault(key, list(value.shape))
    state = {key: released_tensor(key, shape) for key, shape in shapes.items()}
    torch.save({'meta': {'mmcv_version': '1.3.0', 'CLASSES': classes, 'epoch': 12, 'iter': 88000,
                         'config': "model = dict(type='...')", 'env_info': 'sys.platform: linux'},
                'state_dict': state,
                'optimizer': {'state': {}, 'param_groups': [{'lr': 0.02, 'momentum': 0.9, 'params': [0, 1]}]}},
               str(path))
    return state


def assert_loads_strictly(config: str, checkpoint: str, expected: dict) -> None:
    model = build_model_from_config(osp.join(REPO, config))[0]
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def test_classifier_converts_without_renaming(tmp_path, official_layouts):
    src, dst = tmp_path / 'rednet26.pth', tmp_path / 'rednet26_mmpretrain.pth'
    state = write_released(src, [official_layouts['rednet26_in1k_classifier']], classes=('cat', 'dog'))
    convert_checkpoint(str(src), str(dst), config=osp.join(REPO, CLASSIFIER))
    assert_loads_strictly(CLASSIFIER, str(dst), state)
    converted = torch.load(str(dst), weights_only=True)
    assert set(converted) == {'meta', 'state_dict'}  # the optimizer state is dropped
    assert converted['meta']['dataset_meta'] == {'classes': ('cat', 'dog')}
    assert converted['meta']['epoch'] == 12 and 'CLASSES' not in converted['meta']


def test_detector_with_involution_neck_and_heads_converts_without_renaming(tmp_path, official_layouts):
    layouts = [official_layouts[name] for name in ('rednet50_det_backbone', 'det_fpn_involution_neck_5outs',
                                                   'det_rpn_head_involution', 'det_fcn_mask_head_involution')]
    src, dst = tmp_path / 'mask_rcnn.pth', tmp_path / 'mask_rcnn_mmdet3.pth'
    state = write_released(src, layouts, DETECTOR)
    convert_checkpoint(str(src), str(dst), config=osp.join(REPO, DETECTOR))
    assert_loads_strictly(DETECTOR, str(dst), state)


def test_segmentor_with_involution_neck_converts_without_renaming(tmp_path, official_layouts):
    layouts = [official_layouts['rednet50_seg_backbone'], official_layouts['seg_fpn_involution_neck_4outs']]
    src, dst = tmp_path / 'fpn.pth', tmp_path / 'fpn_mmseg1.pth'
    state = write_released(src, layouts, SEGMENTOR)
    convert_checkpoint(str(src), str(dst), config=osp.join(REPO, SEGMENTOR))
    assert_loads_strictly(SEGMENTOR, str(dst), state)


class _RunsACommand:

    def __reduce__(self):
        return os.system, ('echo pwned', )


def _rename_a_key(state):
    state['backbone.stem.1.conv1.weight'] = state.pop('backbone.stem.1.conv1.conv.weight')


def _reshape_a_tensor(state):
    state['head.fc.weight'] = torch.zeros(10, 2048)


@pytest.mark.parametrize('break_it,error,message', [
    (_rename_a_key, ConversionError,
     r'1 missing: backbone\.stem\.1\.conv1\.conv\.weight\n.*1 unexpected: backbone\.stem\.1\.conv1\.weight'),
    (_reshape_a_tensor, ConversionError, r'with the wrong shape: head\.fc\.weight is \(10, 2048\), expected '
     r'\(1000, 2048\)'),
    ('truncate', CheckpointError, r'is not a readable PyTorch checkpoint .*truncated or corrupt'),
    ('evil', CheckpointError, r'its pickle names posix\.system, which is not an allowed type'),
])
def test_broken_files_fail_clearly_and_write_nothing(tmp_path, official_layouts, break_it, error, message):
    src, dst = tmp_path / 'released.pth', tmp_path / 'out' / 'converted.pth'
    dst.parent.mkdir()
    state = write_released(src, [official_layouts['rednet26_in1k_classifier']])
    if break_it == 'truncate':
        data = src.read_bytes()
        src.write_bytes(data[:len(data) * 2 // 3])
    elif break_it == 'evil':
        torch.save({'meta': {'hook': _RunsACommand()}, 'state_dict': state}, str(src))
    else:
        break_it(state)
        torch.save({'state_dict': state}, str(src))
    with pytest.raises(error, match=re.compile(message, re.S)):
        convert_checkpoint(str(src), str(dst), config=osp.join(REPO, CLASSIFIER))
    assert os.listdir(dst.parent) == []


@pytest.mark.e2e
def test_dist_test_evaluates_a_converted_released_classifier(tmp_path, official_layouts):
    src, dst = tmp_path / 'rednet26_released.pth', tmp_path / 'rednet26_converted.pth'
    write_released(src, [official_layouts['rednet26_in1k_classifier']])
    out = run_command(['python', 'tools/model_converters/convert_checkpoint.py', str(src), str(dst), '--config', CLASSIFIER])
    assert 'rednet26_converted.pth' in out and dst.is_file()
    again = run_command(['python', 'tools/model_converters/convert_checkpoint.py', str(src), str(dst), '--config', CLASSIFIER,
                         '--force'])
    assert 'rednet26_converted.pth' in again
    data = str(tmp_path / 'imagenet')
    run_command(['python', 'tools/dataset_converters/make_demo_data.py', 'imagenet', data])
    options = [f'{split}_dataloader.{key}' for split in ('val', 'test')
               for key in (f'dataset.data_root={data}', 'batch_size=8', 'num_workers=1')]
    accuracies = []
    # the converted file, and the released file itself: its keys are already ours
    for checkpoint in (dst, src):
        out = run_command(['tools/dist_test.sh', CLASSIFIER, str(checkpoint), '1', '--work-dir',
                           str(tmp_path / checkpoint.stem), '--cfg-options', *options])
        top1, top5 = parse_test_accuracies(out)
        assert 0 <= top1 <= top5 <= 100
        assert 'missing keys' not in out and 'unexpected key' not in out
        accuracies.append((top1, top5))
    assert accuracies[0] == accuracies[1]  # the same weights, the same predictions
