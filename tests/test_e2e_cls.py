"""End to end on tiny ImageNet-format data: `mim train mmpretrain` trains RedNet-26 from our config,
tools/dist_test.sh tests the checkpoint it saved (weights-only loading on) and prints top-1/top-5."""
import re

import pytest

from conftest import run_command


@pytest.mark.e2e
def test_demo_trains_then_tests_the_saved_checkpoint(tmp_path):
    work_dir = tmp_path / 'work'
    out = run_command(['tools/demo.sh'], env={'DEMO_DATA': str(tmp_path / 'data'),
                                             'DEMO_WORK_DIR': str(work_dir)})
    assert 'Epoch(train) [1][8/8]' in out  # 32 images at batch 4
    assert (work_dir / 'epoch_1.pth').is_file()
    test_line = re.search(r'Epoch\(test\).*accuracy/top1: ([\d.]+)\s+accuracy/top5: ([\d.]+)', out)
    assert test_line, out[-3000:]
    top1, top5 = map(float, test_line.groups())
    assert 0 <= top1 <= top5 <= 100  # 8 images of 4 classes, scored by a 1000-way head
