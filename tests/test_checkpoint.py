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
