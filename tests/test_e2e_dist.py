"""End to end with several processes on the CPU (gloo), as tools/dist_train.sh and tools/dist_test.sh run
them where there is no GPU, on tiny generated data:

- classification: RedNet-26 trains as one job of two machines (two launchers on this one, NNODES=2,
  NODE_RANK 0 and 1, loopback address); the validation logged during training equals a test of the saved
  checkpoint, and tests of it with 2 and with 1 process give identical metrics and per-image predictions
  (``--out``) on a held-out set of 11 images, which 2 processes do not split evenly;
- detection: a 2-process and a 1-process test of the same checkpoint give the same boxes and scores;
- segmentation: a SyncBN config trains with 2 processes (SyncBN runs as BN, with one logged line), and the
  validation logged at the last iteration equals a 1-process test of the checkpoint saved at that iteration;
- a process that dies: the launcher exits non-zero and leaves nothing running;
- SyncBuffersEveryIterHook: in iteration-based training the checkpoint saved at a validation iteration holds
  the BN statistics validation used (mmengine's SyncBuffersHook averages them after that checkpoint).

The processes run one thread each (OMP_NUM_THREADS=1), also in the 1-process runs they are compared with, so
that the same images give the same numbers bit for bit.
"""
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch

from conftest import REPO, run_command

RED26 = 'configs/rednet/rednet26_64xb32-warmup-coslr-130e_in1k.py'
DET = 'configs/involution_det/faster-rcnn_rednet50-involution-fpn_1x_coco.py'
SEG = 'configs/involution_seg/fpn_rednet50-involution-neck_4xb2-80k_cityscapes-512x1024.py'
ONE_THREAD = {'OMP_NUM_THREADS': '1'}


def launcher_env(**extra: str) -> Dict[str, str]:
    """The environment of a launcher run as a user starts it, with this interpreter as PYTHON."""
    env = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED='1', **ONE_THREAD)
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    for name in ('NNODES', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'PORT', 'WORLD_SIZE', 'RANK'):
        env.pop(name, None)
    env.update(extra)
    return env


def cls_options(data: str, held_out: int = 11) -> List[str]:
    """RedNet-26 on the tiny ImageNet folder: a 4-way head, 32x32 crops, batch 4, the first ``held_out``
    validation images for validation and test."""
    options = ['model.head.num_classes=4', 'val_evaluator.topk=1', 'test_evaluator.topk=1',
               'train_dataloader.dataset.pipeline.1.scale=32', 'optim_wrapper.optimizer.lr=0.01',
               'default_hooks.logger.interval=1']
    for split in ('train', 'val', 'test'):
        options += [f'{split}_dataloader.dataset.data_root={data}', f'{split}_dataloader.batch_size=4',
                    f'{split}_dataloader.num_workers=1']
    for split in ('val', 'test'):
        options += [f'{split}_dataloader.dataset.pipeline.1.scale=32',
                    f'{split}_dataloader.dataset.pipeline.2.crop_size=32', f'{split}_dataloader.dataset.indices={held_out}']
    return options


def top1(log: str, mode: str) -> float:
    found = re.findall(rf'Epoch\({mode}\).*?accuracy/top1: ([\d.]+)', log)
    assert found, log[-3000:]
    return float(found[-1])


def load_results(path) -> list:
    """The per-image results that an upstream test.py dumped with --out (a file this test wrote)."""
    with open(path, 'rb') as f:
        return pickle.load(f)  # noqa: S301 (our own output)


def as_array(value) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


@pytest.mark.e2e
def test_rednet_two_machines_then_two_and_one_process_tests_agree(tmp_path):
    data, work = tmp_path / 'imagenet', tmp_path / 'work'
    run_command(['python', 'tools/dataset_converters/make_demo_data.py', 'imagenet', str(data)])
    options = cls_options(str(data))

    # two machines of one process each, here on one: two launchers, NODE_RANK 0 and 1, loopback
    port = str(free_port())
    train = ['tools/dist_train.sh', RED26, '1', '--work-dir', str(work), '--cfg-options', *options,
             'train_cfg.max_epochs=1']
    nodes = [subprocess.Popen(train, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=launcher_env(NNODES='2', NODE_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                                               PORT=port)) for rank in (0, 1)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert 'Distributed training: True' in logs[0] and 'GPU number: 2' in logs[0], logs[0][-3000:]  # world size
    assert 'Epoch(train) [1][4/4]' in logs[0]  # 32 images, 2 processes x batch 4
    logged = top1(logs[0], 'val')
    checkpoint = work / 'epoch_1.pth'
    assert checkpoint.is_file()

    results = {}
    for nproc in ('2', '1'):
        out = tmp_path / f'pred_{nproc}.pkl'
        log = run_command(['tools/dist_test.sh', RED26, str(checkpoint), nproc, '--work-dir', str(tmp_path / nproc),
                           '--out', str(out), '--cfg-options', *options], env=launcher_env())
        results[nproc] = (top1(log, 'test'), load_results(out))
    assert results['2'][0] == results['1'][0] == logged  # the logged validation is the checkpoint's
    two, one = results['2'][1], results['1'][1]
    assert len(two) == len(one) == 11
    for a, b in zip(two, one):
        assert a['img_path'] == b['img_path']
        assert np.array_equal(as_array(a['pred_label']), as_array(b['pred_label']))
        np.testing.assert_allclose(as_array(a['pred_score']), as_array(b['pred_score']), rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_detection_two_process_test_equals_one_process_test(tmp_path):
    """The distributed test path of mmdet (results gathered from both processes, in the dataset's order) on
    a checkpoint of the freshly initialised model; what is compared is the testing, not the learning."""
    from involution_mm.upstream import build_model_from_config
    from test_e2e_det import cpu_run_options
    data = tmp_path / 'coco'
    run_command(['python', 'tools/dataset_converters/make_demo_data.py', 'coco', str(data)])
    torch.manual_seed(0)
    model, _ = build_model_from_config(DET, {'model.backbone.init_cfg': None})
    model.init_weights()
    checkpoint = tmp_path / 'faster_rcnn.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)

    results = {}
    for nproc in ('2', '1'):
        out = tmp_path / f'det_{nproc}.pkl'
        log = run_command(['tools/dist_test.sh', DET, str(checkpoint), nproc, '--work-dir', str(tmp_path / nproc),
                           '--out', str(out), '--cfg-options', *cpu_run_options(str(data))], env=launcher_env())
        line = re.search(r'Epoch\(test\) \[\d+/\d+\]\s+(coco/bbox_mAP: .*)', log)
        assert line, log[-3000:]
        metrics = re.findall(r'(coco/\w+): ([-\d.]+)', line.group(1))
        assert len(metrics) == 6, line.group(1)  # mAP, mAP_50, mAP_75, mAP_s, mAP_m, mAP_l
        results[nproc] = (metrics, load_results(out))
    assert results['2'][0] == results['1'][0]
    two, one = results['2'][1], results['1'][1]
    assert len(two) == len(one) == 3 and [r['img_id'] for r in two] == [r['img_id'] for r in one]
    for a, b in zip(two, one):
        a, b = a['pred_instances'], b['pred_instances']
        assert len(a['scores']) == len(b['scores']) > 0
        for key in ('bboxes', 'scores', 'labels'):
            np.testing.assert_allclose(as_array(a[key]), as_array(b[key]), rtol=1e-5, atol=1e-4, err_msg=key)


def seg_metrics(log: str, mode: str) -> str:
    found = re.findall(rf'Iter\({mode}\) \[\d+/\d+\]\s+(aAcc: [\d.]+\s+mIoU: [\d.]+\s+mAcc: [\d.]+)', log)
    assert found, log[-3000:]
    return found[-1]


@pytest.mark.e2e
def test_segmentation_syncbn_config_trains_with_two_cpu_processes(tmp_path):
    from test_e2e_seg import shrink_options
    data, work = tmp_path / 'cityscapes', tmp_path / 'work'
    run_command(['python', 'tools/dataset_converters/make_demo_data.py', 'cityscapes', str(data)])
    # the config's SyncBN as it is: the CPU processes run it as BN
    options = [o for o in shrink_options(str(data)) if 'norm_cfg.type=BN' not in o]
    train = run_command(['tools/dist_train.sh', SEG, '2', '--work-dir', str(work), '--cfg-options', *options,
                         'train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4',
                         'default_hooks.logger.interval=1'], env=launcher_env())
    assert re.search(r'\d+ SyncBN layers run as BN', train), train[-3000:]
    assert len(re.findall(r'SyncBN layers run as BN', train)) == 1  # one line (rank 0 logs)
    assert re.search(r'Iter\(train\) \[4/4\].*decode\.loss_ce: [\d.]+', train), train[-3000:]
    logged = seg_metrics(train, 'val')
    test = run_command(['tools/dist_test.sh', SEG, str(work / 'iter_4.pth'), '1', '--work-dir', str(tmp_path / 'test'),
                        '--cfg-options', *options], env=launcher_env())
    assert seg_metrics(test, 'test') == logged  # the checkpoint holds the statistics validation used


def _sync_hook_worker(rank: int, port: int, hook: str, work_dir: str) -> None:
    """One of two gloo processes: 2 iterations of iteration-based training of a conv + BN model whose ranks
    see different data, a checkpoint and a validation at iteration 2; rank 0 saves the BN statistics that
    validation ran with."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE='2',
                      LOCAL_RANK=str(rank))
    torch.distributed.init_process_group('gloo')
    import involution_mm  # noqa: F401  (registers the hook and the CPU wrapper)
    from mmengine.evaluator import BaseMetric
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 4, 1), torch.nn.BatchNorm2d(4)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            out = self.bn(self.conv(inputs)).mean()
            return {'loss': out} if mode == 'loss' else [out]

    class Count(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.append(0)

        def compute_metrics(self, results):
            return dict(images=len(results))

    class Record(Hook):
        def after_val_epoch(self, runner, metrics=None):
            if rank == 0:
                torch.save(runner.model.module.bn.running_mean.clone(), os.path.join(work_dir, 'val_mean.pt'))

    # sample i is the constant i (odd ones x4): the DefaultSampler gives the ranks different values
    data = [dict(inputs=torch.full((1, 2, 2), float(i * (1 + 3 * (i % 2))))) for i in range(8)]
    loader = dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                  collate_fn=dict(type='default_collate'))
    Runner(model=Toy(), work_dir=work_dir, train_dataloader=loader, val_dataloader=loader, val_evaluator=[Count()],
           optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
           train_cfg=dict(by_epoch=False, max_iters=2, val_interval=2), val_cfg=dict(),
           default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2)),
           custom_hooks=[dict(type=hook), Record()], launcher='pytorch',
           env_cfg=dict(dist_cfg=dict(backend='gloo')),
           cfg=dict(model_wrapper_cfg=dict(type='CPUDistributedDataParallel', device_ids=None))).train()


@pytest.mark.e2e
@pytest.mark.parametrize('hook, same', [('SyncBuffersEveryIterHook', True),
                                        ('SyncBuffersHook', False)])  # mmengine 0.10.7's: averaged too late
def test_checkpoint_at_a_validation_iteration_holds_the_statistics_validation_used(tmp_path, hook, same):
    torch.multiprocessing.spawn(_sync_hook_worker, args=(free_port(), hook, str(tmp_path)), nprocs=2)
    from involution_mm.checkpoint import load_checkpoint_file
    saved = load_checkpoint_file(str(tmp_path / 'iter_2.pth'))['state_dict']['bn.running_mean']
    used = torch.load(tmp_path / 'val_mean.pt')
    assert torch.equal(saved, used) == same, (saved, used)


def process_table() -> Dict[int, int]:
    """``{pid: parent pid}`` of every process on this machine."""
    table = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    table[int(entry)] = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass  # it ended meanwhile
    return table


def descendants(pid: int) -> List[int]:
    table, found, todo = process_table(), [], [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, ppid in table.items() if ppid == parent]
        found += children
        todo += children
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not a zombie waiting to be reaped)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def rank_of(pid: int) -> Optional[str]:
    try:
        with open(f'/proc/{pid}/environ', 'rb') as f:
            env = dict(item.split(b'=', 1) for item in f.read().split(b'\0') if b'=' in item)
    except OSError:
        return None
    return env.get(b'RANK', b'').decode() or None


@pytest.mark.e2e
@pytest.mark.skipif(not os.path.isdir('/proc'), reason='reads the process table from /proc')
def test_a_killed_process_stops_the_launch(tmp_path):
    data = tmp_path / 'imagenet'
    run_command(['python', 'tools/dataset_converters/make_demo_data.py', 'imagenet', str(data)])
    launcher = subprocess.Popen(
        ['tools/dist_train.sh', RED26, '2', '--work-dir', str(tmp_path / 'work'), '--cfg-options',
         *cls_options(str(data)), 'train_cfg.max_epochs=100'],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=launcher_env())
    lines, training = [], threading.Event()

    def read() -> None:
        for line in launcher.stdout:
            lines.append(line)
            if 'Epoch(train)' in line:
                training.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert training.wait(300), ''.join(lines)[-3000:]
        tree = descendants(launcher.pid)  # torchrun's processes (ranks) and theirs (data-loader workers)
        ranks = [pid for pid, parent in process_table().items() if parent == launcher.pid]
        rank1 = [pid for pid in ranks if rank_of(pid) == '1']
        assert len(rank1) == 1 and 'involution_mm.dist_run' in cmdline(rank1[0]), tree
        os.kill(rank1[0], signal.SIGKILL)
        assert launcher.wait(timeout=120) != 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    reader.join(timeout=10)
    deadline = time.time() + 30  # data-loader workers notice their parent is gone within seconds
    while time.time() < deadline and any(map(running, tree)):
        time.sleep(0.5)
    assert not [pid for pid in tree if running(pid)], [cmdline(pid) for pid in tree if running(pid)]


def cmdline(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().replace(b'\0', b' ').decode()
    except OSError:
        return ''


def free_port() -> int:
    from involution_mm.launch import free_port as choose
    return choose()
