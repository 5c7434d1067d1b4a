"""tools/dist_train.sh, tools/dist_test.sh (involution_mm/launch.py), tools/slurm_train.sh, tools/slurm_test.sh:
the commands they build (machines, ports, devices), what they refuse before the framework starts, the
settings of CPU processes (involution_mm/dist_run.py, involution_mm/engine.py) and the multi-process runtime
of the shipped configs. The runs themselves are in test_e2e_dist.py."""
import glob
import logging
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.distributed as torch_dist
import torch.nn as nn
from mmengine.config import Config

from conftest import REPO
from involution_mm import launch
from involution_mm.launch import LaunchError, Topology, choose_device, command, read_topology
from involution_mm.user_errors import run_tool

RED26 = osp.join(REPO, 'configs/rednet/rednet26_64xb32-warmup-coslr-130e_in1k.py')
SCRIPT = '/fw/tools/train.py'


def tool_env(**extra: str) -> dict:
    env = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED='1')
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    for name in ('NNODES', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'PORT', 'DEVICE'):
        env.pop(name, None)
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------------------------
# Machines, ports and devices

def test_topology_defaults_to_one_machine_and_a_port_chosen_later():
    assert read_topology('2', {}) == Topology(2, 1, 0, '127.0.0.1', None, 'auto')


@pytest.mark.parametrize('environ, port', [({'PORT': '29600'}, 29600), ({'MASTER_PORT': '29601'}, 29601),
                                           ({'PORT': '29602', 'MASTER_PORT': '29602'}, 29602)])
def test_port_and_master_port_are_both_honoured(environ, port):
    assert read_topology('2', environ).master_port == port


@pytest.mark.parametrize('environ, message', [
    ({'PORT': '1', 'MASTER_PORT': '2'}, 'PORT=1 and MASTER_PORT=2 differ; set one of them'),
    ({'PORT': 'http'}, "PORT (or MASTER_PORT) must be a port number from 1 to 65535, got 'http'"),
    ({'MASTER_PORT': '70000'}, 'got \'70000\''),
    ({'NNODES': '0'}, "NNODES (the number of machines) must be a positive integer, got '0'"),
    ({'NNODES': '2', 'NODE_RANK': '2', 'PORT': '1', 'MASTER_ADDR': 'a'}, 'NODE_RANK (this machine'),
    ({'NNODES': '2', 'PORT': '29500'}, 'NNODES=2 needs MASTER_ADDR'),
    ({'NNODES': '2', 'MASTER_ADDR': '10.0.0.1'}, 'NNODES=2 needs PORT (or MASTER_PORT)'),
    ({'DEVICE': 'gpu'}, "DEVICE must be one of auto, cpu, cuda, got 'gpu'"),
])
def test_topology_refusals(environ, message):
    with pytest.raises(LaunchError) as err:
        read_topology('1', environ)
    assert message in str(err.value)


def test_several_machines_always_go_through_torchrun():
    """NNODES=2 with one process per machine is one job of two processes, not two single-process runs."""
    topology = read_topology('1', {'NNODES': '2', 'NODE_RANK': '1', 'MASTER_ADDR': '10.0.0.1', 'PORT': '29500'})
    argv, _ = command(topology, 'cuda', SCRIPT, 'cfg.py', ['--amp'], {}, python='py')
    assert argv == ['py', '-m', 'torch.distributed.run', '--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.1',
                    '--master_port=29500', '--nproc_per_node=1', '-m', 'involution_mm.dist_run', SCRIPT, 'cfg.py',
                    '--amp', '--launcher', 'pytorch']


def test_one_process_runs_the_script_in_the_launching_process():
    argv, env = command(Topology(1), 'cpu', SCRIPT, 'cfg.py', ['--work-dir', 'w'], {'A': '1'}, python='py')
    assert argv == ['py', '-m', 'involution_mm.dist_run', SCRIPT, 'cfg.py', '--work-dir', 'w', '--launcher', 'none']
    assert env == {'A': '1', 'INVOLUTION_MM_LAUNCHER': '1'}  # our processes set themselves up


def test_cpu_processes_share_the_cores_and_device_cpu_hides_the_gpus():
    argv, env = command(Topology(2, device='cpu', master_port=1), 'cpu', SCRIPT, 'cfg.py', [], {}, python='py')
    cores = len(os.sched_getaffinity(0))
    assert env['OMP_NUM_THREADS'] == str(max(1, cores // 2)) and env['CUDA_VISIBLE_DEVICES'] == '-1'
    _, env = command(Topology(2, master_port=1), 'cpu', SCRIPT, 'cfg.py', [], {'OMP_NUM_THREADS': '3'})
    assert env['OMP_NUM_THREADS'] == '3' and 'CUDA_VISIBLE_DEVICES' not in env  # no GPU to hide


@pytest.mark.parametrize('device, gpus, nproc, expected', [
    ('auto', 0, 4, 'cpu'), ('auto', 4, 4, 'cuda'), ('cpu', 8, 2, 'cpu'), ('cuda', 2, 2, 'cuda')])
def test_device_choice(device, gpus, nproc, expected):
    assert choose_device(Topology(nproc, device=device), gpus) == expected


@pytest.mark.parametrize('device, gpus', [('auto', 1), ('cuda', 0)])
def test_too_few_gpus_are_refused(device, gpus):
    with pytest.raises(LaunchError, match=f'2 processes need 2 GPUs, this machine has {gpus}; run fewer, or set '
                                          'DEVICE=cpu'):
        choose_device(Topology(2, device=device), gpus)


def test_a_free_port_is_chosen_and_printed(capsys):
    argv, _ = launch.plan(['train', '2', RED26], {'DEVICE': 'cpu'})
    port = next(a for a in argv if a.startswith('--master_port=')).split('=')[1]
    assert int(port) > 0 and f'the free port {port}' in capsys.readouterr().err
    assert argv[argv.index('-m', 3) + 1:argv.index('-m', 3) + 2] == ['involution_mm.dist_run']
    assert argv[-2:] == ['--launcher', 'pytorch'] and argv[-4].endswith(osp.join('tools', 'train.py'))


# ------------------------------------------------------------------------------------------------------------
# Refused before the framework's set-up: one line, exit status 2

def failing_plan(capsys, argv, environ=None) -> str:
    """Run the launcher's checks as its command line does; they must refuse with one line."""
    def main(args):
        launch.plan(args, environ or {})
    assert run_tool(main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
    return err


def test_a_config_without_custom_imports_is_told_to_add_it(tmp_path, capsys):
    config = tmp_path / 'mine.py'
    config.write_text("default_scope = 'mmpretrain'\n"
                      "model = dict(type='ImageClassifier', backbone=dict(type='RedNet', depth=26))\n")
    err = failing_plan(capsys, ['train', '1', str(config)])
    assert f'{config} uses RedNet of involution_mm without importing it; add the line custom_imports = ' \
           "dict(imports=['involution_mm'], allow_failed_imports=False) to it" in err


def test_a_work_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / 'notes.txt').write_text('x')
    err = failing_plan(capsys, ['train', '1', RED26, '--work-dir', str(tmp_path / 'notes.txt')])
    assert f'--work-dir {tmp_path}/notes.txt is a file; give a folder' in err
    err = failing_plan(capsys, ['train', '1', RED26, f'--work-dir={tmp_path}/notes.txt/run'])
    assert f'cannot be created: {tmp_path}/notes.txt is a file, not a folder' in err


def test_amp_on_the_cpu_is_refused(capsys):
    err = failing_plan(capsys, ['train', '1', RED26, '--amp'], {'DEVICE': 'cpu'})
    assert '--amp (mixed precision) needs a GPU and this run is on the CPU' in err
    err = failing_plan(capsys, ['train', '1', RED26, '--cfg-options', 'optim_wrapper.type=AmpOptimWrapper'],
                       {'DEVICE': 'cpu'})
    assert 'trains with AmpOptimWrapper (mixed precision), which needs a GPU' in err


def test_load_from_in_the_config_file_is_checked(tmp_path, capsys):
    config = tmp_path / 'finetune.py'
    config.write_text(f"_base_ = '{RED26}'\nload_from = 'checkpoints/missing.pth'\n")
    err = failing_plan(capsys, ['train', '1', str(config)])
    assert f'the checkpoint checkpoints/missing.pth does not exist (load_from of {config})' in err


def test_a_truncated_checkpoint_is_refused_before_testing(tmp_path, capsys):
    path = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:2000])
    err = failing_plan(capsys, ['test', '1', RED26, str(path)])
    assert f'{path} is not a readable PyTorch checkpoint' in err and 'truncated or corrupt' in err


@pytest.mark.parametrize('args, message', [
    (['--work-dir'], 'argument --work-dir: expected one argument'),
    (['--cfg-options', 'a=1', 'model.depth'], "--cfg-options takes KEY=VALUE items, got 'model.depth'"),
])
def test_malformed_tool_options_are_one_line(capsys, args, message):
    assert message in failing_plan(capsys, ['train', '1', RED26, *args])


def test_a_config_that_does_not_parse_gives_one_line_from_the_launcher(tmp_path):
    """Through the shell scripts, as a user runs them (before: a 28-line traceback from upstream.py)."""
    config = tmp_path / 'broken.py'
    config.write_text('model = dict(\n')
    proc = subprocess.run(['tools/dist_train.sh', str(config), '2'], cwd=REPO, env=tool_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == '', proc.stderr
    assert proc.stderr.startswith(f'error: cannot read config {config}: ') and proc.stderr.count('\n') == 1, \
        proc.stderr


def test_a_config_that_does_not_parse_is_one_line_for_tests_too(tmp_path, capsys):
    config = tmp_path / 'broken.py'
    config.write_text('model = dict(\n')
    checkpoint = tmp_path / 'model.pth'
    torch.save({'state_dict': {}}, checkpoint)
    assert 'cannot read config' in failing_plan(capsys, ['test', '2', str(config), str(checkpoint)])


# ------------------------------------------------------------------------------------------------------------
# SLURM: the srun command (a stand-in srun records it)

@pytest.fixture
def fake_srun(tmp_path):
    """A ``srun`` first on PATH that writes its arguments, one a line, and MASTER_PORT to a file."""
    bin_dir, record = tmp_path / 'bin', tmp_path / 'srun.txt'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(f'#!/bin/sh\necho "MASTER_PORT=$MASTER_PORT" > {record}\n'
                                  f'for a in "$@"; do echo "$a" >> {record}; done\n')
    (bin_dir / 'srun').chmod(0o755)
    return {'PATH': f'{bin_dir}{os.pathsep}{tool_env()["PATH"]}'}, record


def test_slurm_train_command(tmp_path, fake_srun):
    env, record = fake_srun
    proc = subprocess.run(['tools/slurm_train.sh', 'gpu', 'red26', RED26, str(tmp_path / 'work'), '--amp'],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=tool_env(**env, GPUS='16', GPUS_PER_NODE='8', CPUS_PER_TASK='4', PORT='29700',
                                       SRUN_ARGS='--time=1:00:00 --qos=high'))
    assert proc.returncode == 0, proc.stderr
    lines = record.read_text().splitlines()
    script = lines[lines.index('-u') + 1]
    assert script.endswith(osp.join('mmpretrain', '.mim', 'tools', 'train.py'))
    assert lines == ['MASTER_PORT=29700', '-p', 'gpu', '--job-name=red26', '--gres=gpu:8', '--ntasks=16',
                     '--ntasks-per-node=8', '--cpus-per-task=4', '--kill-on-bad-exit=1', '--time=1:00:00',
                     '--qos=high', sys.executable, '-u', script, RED26, f'--work-dir={tmp_path}/work',
                     '--launcher=slurm', '--amp']


def test_slurm_test_command_and_defaults(tmp_path, fake_srun):
    """The defaults, with a stand-in PYTHON whose check prints the script (the real check is run above)."""
    env, record = fake_srun
    python = tmp_path / 'bin' / 'python'
    python.write_text('#!/bin/sh\necho /fw/tools/test.py\n')
    python.chmod(0o755)
    proc = subprocess.run(['tools/slurm_test.sh', 'gpu', 'test', RED26, 'model.pth', '--out', 'r.pkl'], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env=tool_env(**env, PYTHON=str(python)))
    assert proc.returncode == 0, proc.stderr
    assert record.read_text().splitlines() == [
        'MASTER_PORT=', '-p', 'gpu', '--job-name=test', '--gres=gpu:8', '--ntasks=8', '--ntasks-per-node=8',
        '--cpus-per-task=5', '--kill-on-bad-exit=1', str(python), '-u', '/fw/tools/test.py', RED26, 'model.pth',
        '--launcher=slurm', '--out', 'r.pkl']


@pytest.mark.parametrize('env, message', [
    ({'GPUS': 'x'}, "GPUS must be a positive integer, got 'x'"),
    ({'GPUS': '4', 'GPUS_PER_NODE': '8'}, 'GPUS_PER_NODE=8 is more than GPUS=4'),
])
def test_slurm_refusals(env, message, fake_srun):
    proc = subprocess.run(['tools/slurm_train.sh', 'gpu', 'job', RED26, 'work'], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=tool_env(**fake_srun[0], **env))
    assert proc.returncode == 2 and proc.stderr.startswith(f'error: {message}') and proc.stderr.count('\n') == 1


# ------------------------------------------------------------------------------------------------------------
# CPU processes: the settings mmengine's Runner gets, and the model wrapper

def test_cpu_options_keep_mmengine_defaults_and_the_config_wrapper():
    from involution_mm.dist_run import cpu_options
    options = cpu_options(Config(dict(find_unused_parameters=True)))
    assert options == ['env_cfg.dist_cfg.backend=gloo', 'model_wrapper_cfg.type=CPUDistributedDataParallel',
                       'model_wrapper_cfg.device_ids=None', 'model_wrapper_cfg.broadcast_buffers=False',
                       'model_wrapper_cfg.find_unused_parameters=True']
    assert cpu_options(Config(dict(model_wrapper_cfg=dict(find_unused_parameters=True)))) == options[:3]


@pytest.fixture
def one_process_group(tmp_path):
    torch_dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0, world_size=1)
    yield
    torch_dist.destroy_process_group()


def test_cpu_wrapper_runs_syncbn_as_bn_with_one_logged_line(one_process_group):
    from mmengine.logging import MMLogger
    from mmengine.registry import MODEL_WRAPPERS
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.Sequential(nn.SyncBatchNorm(4)))
    messages = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_instance('test_cpu_wrapper')
    logger.addHandler(handler)
    try:
        wrapped = MODEL_WRAPPERS.build(dict(type='CPUDistributedDataParallel', module=model, device_ids=None))
    finally:
        logger.removeHandler(handler)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in wrapped.modules())
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in wrapped.modules()) == 2
    assert messages == ['2 SyncBN layers run as BN: SyncBN needs GPUs, so each CPU process normalises over its '
                        'own batch']
    assert wrapped(torch.rand(2, 3, 5, 5)).shape == (2, 4, 3, 3)
    with pytest.raises(ValueError, match='takes no device_ids'):
        MODEL_WRAPPERS.build(dict(type='CPUDistributedDataParallel', module=nn.Linear(1, 1), device_ids=[0]))


# ------------------------------------------------------------------------------------------------------------
# The shipped configs

def test_every_shipped_config_syncs_buffers_and_states_its_timeout():
    """Loaded: each config that inherits no config of ours of the same folder (the others inherit it, and
    none of them sets these keys again)."""
    import re
    configs = [c for c in sorted(glob.glob(osp.join(REPO, 'configs', '*', '*.py'))) if '_base_' not in c]
    assert len(configs) > 30
    roots = []
    for config in configs:
        with open(config) as f:
            text = f.read()
        if re.search(r"^_base_ = '\./", text, re.MULTILINE):
            assert not re.search(r'^(custom_hooks|env_cfg) =', text, re.MULTILINE), config
        else:
            roots.append(config)
    assert len(roots) == 10
    for config in roots:
        cfg = Config.fromfile(config, import_custom_modules=False)
        assert [h['type'] for h in cfg.custom_hooks] == ['SyncBuffersEveryIterHook'], config
        assert cfg.env_cfg.dist_cfg.timeout == 1800, config


# ------------------------------------------------------------------------------------------------------------
# mim train/test --launcher pytorch (or torchrun on the upstream script) without a GPU: one line of ours

@pytest.mark.parametrize('argv, world_size, refused', [
    (['train.py', 'c.py', '--launcher', 'pytorch'], '2', True),
    (['-m', 'train.py', 'c.py', '--launcher', 'pytorch'], 'ours', False),  # dist_run, started by our launcher
    (['train.py', 'c.py', '--launcher=pytorch'], '2', True),
    (['train.py', 'c.py', '--launcher', 'pytorch'], '1', False),  # one process: mmengine runs it on the CPU
    (['train.py', 'c.py', '--launcher', 'none'], '2', False),
    (['my_script.py'], '2', False),  # someone's own torchrun script that imports us
])
def test_cpu_launch_without_our_set_up_is_refused(argv, world_size, refused, monkeypatch, capsys):
    from involution_mm.dist_run import refuse_cpu_launch_elsewhere
    monkeypatch.delenv('INVOLUTION_MM_LAUNCHER', raising=False)
    if world_size == 'ours':
        world_size = '2'
        monkeypatch.setenv('INVOLUTION_MM_LAUNCHER', '1')
    monkeypatch.setenv('WORLD_SIZE', world_size)
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    if not refused:
        refuse_cpu_launch_elsewhere(argv)
        return
    with pytest.raises(SystemExit) as stop:
        refuse_cpu_launch_elsewhere(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: ') and 'tools/dist_train.sh CONFIG N' in err


@pytest.mark.e2e
def test_torchrun_on_the_upstream_script_without_a_gpu_says_what_to_use(tmp_path):
    """What `mim train ... --gpus 2 --launcher pytorch` runs: torchrun on mmpretrain's train.py. Without a GPU
    it stops at the config's custom_imports with our line, not inside mmengine at torch.cuda.set_device."""
    from involution_mm.upstream import tool_script
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='-1', PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=0',
                           tool_script('mmpretrain', 'train'), 'configs/rednet/rednet26_64xb32-warmup-coslr-130e_in1k.py',
                           '--launcher', 'pytorch', '--work-dir', str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert out.count('error: several processes on a machine without a GPU') == 1, out[-3000:]  # rank 0 says it
    assert 'set_device' not in out
