"""End to end on tiny ImageNet-format data: `mim train mmpretrain` trains RedNet-26 from our config,
tools/dist_test.sh tests the checkpoint it saved (weights-only loading on) and prints top-1/top-5."""
import pytest

from conftest import parse_test_accuracies, run_command


@pytest.mark.e2e
def test_demo_trains_then_tests_the_saved_checkpoint(tmp_path):
    work_dir = tmp_path / 'work'
    out = run_command(['tools/demo.sh'], env={'DEMO_DATA': str(tmp_path / 'data'),
                                             'DEMO_WORK_DIR': str(work_dir)})
    assert 'Epoch(train) [1][8/8]' in out  # 32 images at batch 4
    assert (work_dir / 'epoch_1.pth').is_file()
    top1, top5 = parse_test_accuracies(out)
    assert 0 <= top1 <= top5 <= 100  # 8 images of 4 classes, scored by a 1000-way head
