"""Checkpoints load with weights-only unpickling left on; unsafe or broken files are refused clearly."""
import os

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint

import involution_mm  # noqa: F401  (allow-lists mmengine types and installs the safe loader)
from involution_mm.backbones import RedNet
from involution_mm.checkpoint import CheckpointError, load_checkpoint_file


def _runner_style_checkpoint(model) -> dict:
    """What mmengine's Runner saves: weights plus a message hub full of HistoryBuffers and numpy values."""
    hub = MessageHub.get_instance('involution-mm-test')
    for step in range(3):
        hub.update_scalar('train/loss', np.float64(1.0 / (step + 1)))
        hub.update_scalar('train/lr', 0.1 * step)
    return {'meta': {'epoch': 1, 'iter': 3, 'dataset_meta': {'classes': ('a', 'b')}},
            'state_dict': model.state_dict(), 'message_hub': hub.state_dict(),
            'optimizer': torch.optim.SGD(model.parameters(), lr=0.1).state_dict()}


def test_runner_style_checkpoint_loads_through_mmengine(tmp_path):
    model = RedNet(26)
    path = str(tmp_path / 'epoch_1.pth')
    torch.save(_runner_style_checkpoint(model), path)
    loaded = _load_checkpoint(path, map_location='cpu')  # the path tools/test.py and load_from take
    assert isinstance(loaded['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert loaded['message_hub']['log_scalars']['train/loss'].mean() == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    fresh = RedNet(26)
    load_checkpoint(fresh, path, map_location='cpu', strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key


class _RunsACommand:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


class _WalksToGlobals:

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def test_a_pickle_naming_os_system_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'meta': _RunsACommand(marker)}, path)
    for load in (load_checkpoint_file, lambda p: _load_checkpoint(p, map_location='cpu')):
        with pytest.raises(CheckpointError, match=r'refused to load .*evil\.pth: its pickle names posix\.system'):
            load(path)
    assert not marker.exists()


def test_getattr_is_allowed_only_for_history_buffer_methods(tmp_path):
    path = str(tmp_path / 'sneaky.pth')
    torch.save({'meta': _WalksToGlobals()}, path)
    with pytest.raises(CheckpointError, match=r"its pickle calls getattr\(.*HistoryBuffer.*'__init__'\)"):
        load_checkpoint_file(path)


def test_truncated_and_missing_files(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': RedNet(26).state_dict()}, str(good))
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match='truncated.pth is not a readable PyTorch checkpoint.*truncated'):
        load_checkpoint_file(str(truncated))
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        load_checkpoint_file(str(tmp_path / 'nowhere.pth'))


def test_a_zip_that_is_not_a_checkpoint_is_called_so(tmp_path):
    import zipfile
    path = tmp_path / 'photos.pth'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('holiday.txt', 'not weights')
    with pytest.raises(CheckpointError, match='photos.pth is not a PyTorch checkpoint: it is a zip archive of 1 '
                       'files without the data.pkl that torch.save writes'):
        load_checkpoint_file(str(path))


# ----------------------------------------------------------------------------------------------------------
# Test runs, load_from and resume (mmengine's Runner.load_checkpoint) refuse a checkpoint that leaves model
# weights unloaded.

def _classifier(num_classes: int = 4):
    from mmpretrain.registry import MODELS
    return MODELS.build(dict(type='ImageClassifier', _scope_='mmpretrain', backbone=dict(type='RedNet', depth=26),
                             neck=dict(type='GlobalAveragePooling'),
                             head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=2048)))


@pytest.fixture(scope='module')
def classifier_checkpoints(tmp_path_factory):
    """A 4-class RedNet-26 classifier's checkpoint, one of a 10-class head, and one lacking a stage."""
    folder = tmp_path_factory.mktemp('checkpoints')
    state = _classifier(4).state_dict()
    torch.save({'state_dict': state}, folder / 'four.pth')
    torch.save({'state_dict': _classifier(10).state_dict()}, folder / 'ten.pth')
    torch.save({'state_dict': {k: v for k, v in state.items() if not k.startswith('backbone.layer4.')}},
               folder / 'no_layer4.pth')
    return folder


def _runner(tmp_path, **cfg):
    from mmengine.runner import Runner
    return Runner(model=_classifier(4), work_dir=str(tmp_path / 'work'), cfg=dict(cfg), default_scope='mmpretrain')


def test_a_test_run_refuses_another_models_checkpoint(tmp_path, classifier_checkpoints):
    runner = _runner(tmp_path)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"ten.pth leaves 2 of the model's 211 tensors unloaded: 2 of "
                       r'another shape \(head.fc.weight: \(10, 2048\) in the file, \(4, 2048\) in the model, '
                       r'head.fc.bias: \(10,\) in the file, \(4,\) in the model\); .*'
                       r'--cfg-options allow_partial_checkpoint=True$'):
        runner.load_checkpoint(str(classifier_checkpoints / 'ten.pth'))
    with pytest.raises(CheckpointError, match=r"no_layer4.pth leaves 26 of the model's 211 tensors unloaded: 26 "
                       r'missing \(backbone.layer4.0.conv1.weight, backbone.layer4.0.bn1.weight, '
                       r'backbone.layer4.0.bn1.bias, ...\); it is probably the checkpoint of another') as error:
        runner.load_checkpoint(str(classifier_checkpoints / 'no_layer4.pth'))
    assert '\n' not in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in runner.model.state_dict().items())  # nothing was loaded
    runner.load_checkpoint(str(classifier_checkpoints / 'four.pth'))  # a fitting one loads
    want = torch.load(classifier_checkpoints / 'four.pth')['state_dict']
    assert all(torch.equal(want[k], v) for k, v in runner.model.state_dict().items())


def test_fine_tuning_with_a_new_head_loads_the_rest_and_says_what_was_skipped(tmp_path, classifier_checkpoints,
                                                                               capsys):
    runner = _runner(tmp_path, allow_partial_checkpoint=True)
    head = runner.model.head.fc.weight.detach().clone()
    runner.load_checkpoint(str(classifier_checkpoints / 'ten.pth'))
    ten = torch.load(classifier_checkpoints / 'ten.pth')['state_dict']
    assert torch.equal(runner.model.backbone.stem[0].conv.weight, ten['backbone.stem.0.conv.weight'])
    assert torch.equal(runner.model.head.fc.weight, head)  # the new head keeps its initialisation
    from mmengine.logging import MMLogger
    log = open(MMLogger.get_current_instance().log_file).read()
    assert "ten.pth is loaded partially (allow_partial_checkpoint=True): it leaves 2 of the model's 211" in log
    # our loader, named so that mmengine's line (printed, not logged) reads right
    assert 'Loads checkpoint by local_weights_only backend from path' in capsys.readouterr().out
