"""End to end on tiny ImageNet-format data: tools/demo.sh writes four classes of patterns, `mim train
mmpretrain` trains RedNet-26 from our config on them, and tools/dist_test.sh tests the checkpoint it saved
(weights-only loading on) on held-out images: the model has learned, far above chance (25%)."""
import re

import pytest

from conftest import run_command


@pytest.mark.e2e
def test_demo_learns_the_tiny_dataset(tmp_path):
    work_dir = tmp_path / 'work'
    out = run_command(['tools/demo.sh'], env={'DEMO_DATA': str(tmp_path / 'data'),
                                             'DEMO_WORK_DIR': str(work_dir)})
    losses = [float(v) for v in re.findall(r'Epoch\(train\)\s+\[\d+\]\[40/40\].*loss: ([\d.]+)', out)]
    assert len(losses) == 12 and losses[-1] < losses[0]  # 1280 images at batch 32, 12 epochs; it learns
    assert (work_dir / 'epoch_12.pth').is_file()
    held_out = re.findall(r'Epoch\(val\) \[\d+\]\[4/4\]\s+accuracy/top1: ([\d.]+)', out)
    assert len(held_out) == 12  # progress after every epoch, as upstream logs it
    test = re.search(r'Epoch\(test\) \[4/4\]\s+accuracy/top1: ([\d.]+)', out)
    assert test, out[-3000:]
    # 100 held-out images of 4 classes: chance is 25%; seeds 0 to 4 gave 93 to 100
    assert float(test.group(1)) >= 85, out[-3000:]
