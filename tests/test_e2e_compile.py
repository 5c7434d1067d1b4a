"""End to end: mmengine's ``compile`` runner option (torch.compile of the train step) with one of our configs,
through the upstream tools/train.py (tools/dist_train.sh), on tiny ImageNet-format data. The ``aot_eager``
backend runs the fake implementations and the registered autograd of the involution op without Inductor's
compile time."""
import pytest

from conftest import run_command

CONFIG = 'configs/rednet/rednet26_64xb32-warmup-coslr-130e_in1k.py'


@pytest.mark.e2e
def test_runner_compile_option_trains_rednet(tmp_path):
    data, work_dir = tmp_path / 'data', tmp_path / 'work'
    run_command(['python', 'tools/dataset_converters/make_demo_data.py', 'imagenet', str(data)])
    loaders = ('train_dataloader', 'val_dataloader')
    options = [f'{loader}.dataset.data_root={data}' for loader in loaders]
    options += [f'{loader}.{key}' for loader in loaders
                for key in ('batch_size=4', 'num_workers=0', 'persistent_workers=False', 'dataset.indices=8')]
    out = run_command(['tools/dist_train.sh', CONFIG, '1', '--work-dir', str(work_dir), '--cfg-options', *options,
                       'compile.backend=aot_eager', 'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1'])
    assert 'Model has been "compiled"' in out
    assert 'Epoch(train) [1][2/2]' in out and 'loss: nan' not in out
    assert 'Epoch(val) [1][2/2]' in out
    assert (work_dir / 'epoch_1.pth').is_file()
