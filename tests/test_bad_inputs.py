"""What a user can get wrong, and what they are told: one case per refused input of docs/errors.md (the
writing tools, checkpoint conversion, get_flops.py, dist_train.sh / dist_test.sh, RedNet's arguments), and
the guarantee that a writing tool leaves nothing behind when it fails or is interrupted."""
import importlib.util
import os
import os.path as osp
import pickle
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from involution_mm.backbones import RedNet
from involution_mm.convert import main as convert_main
from involution_mm.output_files import OutputPathError, check_output_path, written_atomically

RUN_ENV = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED='1',
               PATH=osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
REDNET26 = 'configs/rednet/rednet26_64xb32-warmup-coslr-130e_in1k.py'


def run_failing(args, env=None) -> str:
    """Run a command from the repo root; it must fail with one ``error:`` line and no traceback."""
    proc = subprocess.run(args, cwd=REPO, env=dict(RUN_ENV, **(env or {})), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    assert 'Traceback' not in proc.stdout and proc.stdout.count('error: ') == 1, proc.stdout
    return proc.stdout


def leftovers(folder) -> list:
    """Staging files or folders of written_atomically in ``folder``."""
    return [name for name in os.listdir(folder) if name.endswith('.part')]


# ------------------------------------------------------------------------------------------------------------
# Output paths (involution_mm/output_files.py), shared by every tool that writes.

def test_output_path_problems_are_one_line_each(tmp_path):
    (tmp_path / 'a_file').write_text('x')
    (tmp_path / 'a_folder').mkdir()
    cases = {
        (str(tmp_path / 'a_folder'), 'file'): 'it is a folder; give the path of a file',
        (str(tmp_path / 'a_file'), 'folder'): 'it is a file; give the path of a folder',
        (str(tmp_path / 'missing' / 'out.pth'), 'file'): f'its folder {tmp_path / "missing"} does not exist',
        (str(tmp_path / 'a_file' / 'out.pth'), 'file'): f'{tmp_path / "a_file"} is a file, not a folder',
        (str(tmp_path / 'a_file' / 'sub' / 'out'), 'folder'): f'{tmp_path / "a_file"} is a file, not a folder',
    }
    for (path, kind), message in cases.items():
        with pytest.raises(OutputPathError, match='^cannot write .*' + message) as error:
            check_output_path(path, kind)
        assert '\n' not in str(error.value)
    assert check_output_path(str(tmp_path / 'new.pth')) == str(tmp_path / 'new.pth')
    assert check_output_path(str(tmp_path / 'a_folder'), 'folder') == str(tmp_path / 'a_folder')


def test_a_read_only_parent_is_refused(tmp_path, monkeypatch):
    read_only = tmp_path / 'read_only'
    read_only.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes anyway: make the permission check see what a user would
        monkeypatch.setattr(os, 'access', lambda path, mode: osp.abspath(path) != str(read_only))
    with pytest.raises(OutputPathError, match=f'its folder {read_only} is not writable'):
        check_output_path(str(read_only / 'out.pth'))


def test_written_atomically_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / 'out.txt'
    target.write_text('old')
    with pytest.raises(RuntimeError):
        with written_atomically(str(target)) as temporary:
            with open(temporary, 'w') as f:
                f.write('half')
            raise RuntimeError('failed mid-write')
    assert target.read_text() == 'old' and leftovers(tmp_path) == []
    with written_atomically(str(target)) as temporary:
        assert osp.dirname(osp.dirname(temporary)) == str(tmp_path)  # beside it: os.replace is atomic
        with open(temporary, 'w') as f:
            f.write('new')
    assert target.read_text() == 'new' and leftovers(tmp_path) == []


def test_written_atomically_replaces_a_folder(tmp_path):
    folder = tmp_path / 'data'
    folder.mkdir()
    (folder / 'old.txt').write_text('old')
    with written_atomically(str(folder)) as temporary:
        os.mkdir(temporary)
        with open(osp.join(temporary, 'new.txt'), 'w') as f:
            f.write('new')
    assert os.listdir(folder) == ['new.txt'] and sorted(os.listdir(tmp_path)) == ['data']


def test_written_atomically_cleans_up_on_ctrl_c(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with written_atomically(str(tmp_path / 'out.pth')) as temporary:
            with open(temporary, 'wb') as f:
                f.write(b'partial')
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_written_atomically_turns_sigterm_into_an_exit_that_cleans_up(tmp_path):
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as raised:
        with written_atomically(str(tmp_path / 'out.pth')) as temporary:
            with open(temporary, 'wb') as f:
                f.write(b'partial')
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # the handler raises SystemExit(143) here at the latest
    assert raised.value.code == 128 + signal.SIGTERM
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is handler  # restored


def test_staging_folder_problems_are_output_path_errors(tmp_path):
    with pytest.raises(OutputPathError, match='does not exist; create it first'):
        with written_atomically(str(tmp_path / 'missing' / 'out.pth')):
            pass


# ------------------------------------------------------------------------------------------------------------
# tools/dataset_converters/make_demo_data.py

def make_demo_data(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, 'tools/dataset_converters/make_demo_data.py', *map(str, args)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)


def test_make_demo_data_leaves_a_folder_it_did_not_write_alone(tmp_path):
    mine = tmp_path / 'thesis'
    mine.mkdir()
    (mine / 'thesis.tex').write_text('years of work')
    proc = make_demo_data('imagenet', mine)
    assert proc.returncode == 2 and proc.stdout.strip().count('\n') == 0, proc.stdout
    assert 'is not empty and was not written by make_demo_data.py' in proc.stdout
    assert os.listdir(mine) == ['thesis.tex'] and (mine / 'thesis.tex').read_text() == 'years of work'
    assert leftovers(tmp_path) == []


def test_make_demo_data_replaces_only_its_own_folder(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()  # an empty folder may be written into
    assert make_demo_data('imagenet', data).returncode == 0
    first = (data / 'meta' / 'train.txt').read_text()
    (data / 'stale.txt').write_text('from an earlier run')
    assert make_demo_data('imagenet', data, '--seed', 1, '--train-per-class', 2).returncode == 0
    assert (data / 'meta' / 'train.txt').read_text().count('\n') == 8 != first.count('\n')
    assert not (data / 'stale.txt').exists() and sorted(os.listdir(tmp_path)) == ['data']


@pytest.mark.parametrize('count', ['0', '-3', 'ten'])
def test_make_demo_data_refuses_a_count_that_is_not_positive(tmp_path, count):
    proc = make_demo_data('imagenet', tmp_path / 'data', '--train-per-class', count)
    assert proc.returncode == 2 and f"--train-per-class: must be a positive integer, got '{count}'" in proc.stdout
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('make_bad, message', [
    (lambda tmp: tmp / 'a_file', 'it is a file; give the path of a folder'),
    (lambda tmp: tmp / 'a_file' / 'data', 'is a file, not a folder'),
    (lambda tmp: tmp / 'missing' / 'data', 'does not exist; create it first'),
])
def test_make_demo_data_output_path_problems(tmp_path, make_bad, message):
    (tmp_path / 'a_file').write_text('x')
    proc = make_demo_data('imagenet', make_bad(tmp_path))
    assert proc.returncode == 2 and proc.stdout.startswith('error: ') and message in proc.stdout
    assert 'Traceback' not in proc.stdout and proc.stdout.count('\n') == 1
    assert sorted(os.listdir(tmp_path)) == ['a_file']


# make_demo_data.py with its writer slowed down: it writes, prints "writing" and sleeps, so that the test
# can interrupt it in the middle of the write.
SLOW_MAKE_DEMO_DATA = '''
import sys, time
sys.path.insert(0, 'tools/dataset_converters')
import make_demo_data
from demo_data import imagenet
write = imagenet.write
def slow_write(root, **options):
    write(root, **options)
    print('writing', flush=True)
    time.sleep(60)
imagenet.write = slow_write
sys.exit(make_demo_data.main(sys.argv[1:]))
'''


def interrupt_mid_write(script: str, args, sig: int) -> subprocess.CompletedProcess:
    """Start ``script`` with ``args``, send ``sig`` once it is writing, and return how it ended."""
    proc = subprocess.Popen([sys.executable, '-c', script, *map(str, args)], cwd=REPO, env=RUN_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line == 'writing\n', line + proc.stderr.read()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, line + out, err)


@pytest.mark.parametrize('sig, returncode', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_make_demo_data_killed_mid_write_leaves_nothing(tmp_path, sig, returncode):
    ended = interrupt_mid_write(SLOW_MAKE_DEMO_DATA, ['imagenet', tmp_path / 'data'], sig)
    assert ended.returncode == returncode and 'Traceback' not in ended.stderr, ended.stderr
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------------------
# Checkpoint conversion (tools/model_converters/convert_checkpoint.py = involution_mm.convert.main)

@pytest.fixture(scope='module')
def resnet18_file(tmp_path_factory):
    """A checkpoint in the official SimAM ResNet-18 layout."""
    from test_convert_checkpoint import official_simam_resnet, save_official
    torch.manual_seed(0)
    return save_official(official_simam_resnet('resnet18'), tmp_path_factory.mktemp('released') / 'r18.pth')


def convert_error(capsys, *args) -> str:
    """Run the converter, which must fail; returns its one error line."""
    assert convert_main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
    return err


def not_a_checkpoint(folder, kind: str) -> str:
    """A file (or folder) of ``kind`` in ``folder`` that is no checkpoint; returns its path."""
    path = folder / kind
    if kind == 'folder.pth':
        path.mkdir()
    else:
        path.write_bytes({'notes.txt': b'not weights\n', 'raw.pkl': pickle.dumps({'w': [1.0]}),
                          'empty.pth': b''}[kind])
    return str(path)


@pytest.mark.parametrize('kind, message', [
    ('notes.txt', 'is not a PyTorch checkpoint: it is a text file'),
    ('folder.pth', 'is a folder; give the path of a checkpoint file'),
    ('raw.pkl', 'is not a PyTorch checkpoint: it is a plain pickle (pickle.dump)'),
    ('empty.pth', 'is not a PyTorch checkpoint: it is empty'),
])
def test_inputs_that_are_not_checkpoints(tmp_path, capsys, kind, message):
    out = tmp_path / 'out'
    out.mkdir()
    error = convert_error(capsys, not_a_checkpoint(tmp_path, kind), out / 'x.pth', '--model', 'simam-resnet18')
    assert message in error and 'weights_only' not in error
    assert os.listdir(out) == []


class Payload:
    """Unpickling it would call os.system."""

    def __reduce__(self):
        return os.system, ('echo payload ran',)


def test_a_refused_pickle_is_reported_as_refused_for_safety(tmp_path, capsys):
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'extra': Payload()}, str(tmp_path / 'evil.pth'))
    error = convert_error(capsys, tmp_path / 'evil.pth', tmp_path / 'x.pth', '--model', 'simam-resnet18')
    assert 'refused to load' in error and 'its pickle names posix.system' in error
    assert 'could run arbitrary code' in error and 'weights_only' not in error
    assert not (tmp_path / 'x.pth').exists()


def test_nonfinite_weights_are_refused_unless_allowed(tmp_path, capsys, resnet18_file):
    content = torch.load(resnet18_file, weights_only=True)
    content['state_dict']['module.fc.bias'][3] = float('nan')
    content['state_dict']['module.layer1.0.conv1.weight'][0, 0, 0, 0] = float('inf')
    damaged = tmp_path / 'damaged.pth'
    torch.save(content, str(damaged))
    error = convert_error(capsys, damaged, tmp_path / 'x.pth', '--model', 'simam-resnet18')
    assert '2 tensors hold NaN or inf: layer1.0.conv1.weight, fc.bias' in error
    assert '--allow-nonfinite' in error and not (tmp_path / 'x.pth').exists()
    assert convert_main([str(damaged), str(tmp_path / 'x.pth'), '--model', 'simam-resnet18',
                         '--allow-nonfinite']) == 0
    assert 'warning: ' in capsys.readouterr().err and (tmp_path / 'x.pth').is_file()


@pytest.mark.parametrize('make_output, message', [
    (lambda tmp: tmp / 'a_folder', 'it is a folder; give the path of a file'),
    (lambda tmp: tmp / 'missing' / 'x.pth', 'does not exist; create it first'),
    (lambda tmp: tmp / 'a_file' / 'x.pth', 'is a file, not a folder'),
])
def test_convert_output_path_problems(tmp_path, capsys, resnet18_file, make_output, message):
    (tmp_path / 'a_folder').mkdir()
    (tmp_path / 'a_file').write_text('x')
    assert message in convert_error(capsys, resnet18_file, make_output(tmp_path), '--model', 'simam-resnet18')
    assert sorted(os.listdir(tmp_path)) == ['a_file', 'a_folder'] and os.listdir(tmp_path / 'a_folder') == []


def test_convert_killed_mid_write_leaves_nothing(tmp_path, resnet18_file, monkeypatch):
    save = torch.save

    def save_then_get_killed(obj, file):
        save(obj, file)
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()

    monkeypatch.setattr(torch, 'save', save_then_get_killed)
    with pytest.raises(SystemExit) as raised:
        convert_main([resnet18_file, str(tmp_path / 'x.pth'), '--model', 'simam-resnet18'])
    assert raised.value.code == 143 and os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------------------
# tools/analysis_tools/get_flops.py

@pytest.fixture(scope='module')
def get_flops():
    """tools/analysis_tools/get_flops.py as a module."""
    spec = importlib.util.spec_from_file_location('get_flops', osp.join(REPO, 'tools', 'analysis_tools', 'get_flops.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('config, options, message', [
    ('missing.py', [], 'missing.py does not exist; give the path of a config file'),
    ('no_model.py', [], 'no_model.py defines no model'),
    ('no_scope.py', [], "no_scope.py has default_scope=None; expected one of ['mmdet', 'mmpretrain', 'mmseg']"),
    ('broken.py', [], "cannot read config"),
    (REDNET26, ['--shape', '0'], '--shape takes one or two positive sizes (height [width]), got 0'),
    (REDNET26, ['--shape', '-224', '224'], 'got -224 224'),
    (REDNET26, ['--shape', '1', '224', '224'], 'got 1 224 224'),
    (REDNET26, ['--cfg-options', 'model.backbone.depth=50.0'], 'RedNet depth must be an int'),
    (REDNET26, ['--cfg-options', 'model.backbone.type=RedNt'], 'RedNt is not in the mmpretrain::model registry'),
    (REDNET26, ['--cfg-options', 'model.backbone.out_indices=(7,)'], 'cannot build the model of'),
])
def test_get_flops_refuses_bad_configs_and_shapes(tmp_path, capsys, get_flops, config, options, message):
    (tmp_path / 'no_model.py').write_text("default_scope = 'mmpretrain'\n")
    (tmp_path / 'no_scope.py').write_text("model = dict(type='ImageClassifier')\n")
    (tmp_path / 'broken.py').write_text("model = dict(\n")
    config = osp.join(REPO, config) if config == REDNET26 else str(tmp_path / config)
    assert get_flops.main([config, *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and message in err, err


# ------------------------------------------------------------------------------------------------------------
# tools/dist_test.sh, tools/dist_train.sh

@pytest.mark.parametrize('args, message', [
    (['tools/dist_test.sh', REDNET26, 'missing.pth', '1'], 'the checkpoint missing.pth does not exist'),
    (['tools/dist_test.sh', REDNET26, 'tools', '1'], 'the checkpoint tools is a folder'),
    (['tools/dist_train.sh', REDNET26, '1', '--resume', 'missing.pth'], 'the checkpoint missing.pth does not'),
    (['tools/dist_train.sh', REDNET26, '1', '--cfg-options', 'load_from=missing.pth'], 'missing.pth does not'),
    (['tools/dist_test.sh', 'missing.py', 'missing.pth', '1'], 'the config missing.py does not exist'),
    (['tools/dist_train.sh', REDNET26, 'x'], "the number of processes (GPUs) must be a positive integer, got 'x'"),
])
def test_launchers_check_their_files_before_starting(args, message):
    assert message in run_failing(args)


def test_launchers_say_how_to_point_python_at_torch():
    python_without_torch = '/usr/bin/python3' if osp.exists('/usr/bin/python3') else 'no-such-python'
    if python_without_torch != 'no-such-python' and subprocess.run(
            [python_without_torch, '-c', 'import torch'], capture_output=True).returncode == 0:
        python_without_torch = 'no-such-python'
    for tool in (['tools/dist_train.sh', REDNET26, '1'], ['tools/dist_test.sh', REDNET26, 'x.pth', '1']):
        out = run_failing(tool, env=dict(PYTHON=python_without_torch))
        assert f'no Python with torch at PYTHON={python_without_torch}; point PYTHON at' in out


# ------------------------------------------------------------------------------------------------------------
# RedNet's arguments

@pytest.mark.parametrize('kwargs, error, message', [
    (dict(depth='50'), TypeError, r"RedNet depth must be an int, one of \[26, 38, 50, 101, 152\], got '50'"),
    (dict(depth=34), ValueError, r'invalid depth 34 for RedNet; choose one of \[26, 38, 50, 101, 152\]'),
    (dict(depth=26, frozen_stages=5), ValueError, 'RedNet frozen_stages must be from -1 to 4, got 5'),
    (dict(depth=26, frozen_stages=1.0), TypeError, r'RedNet frozen_stages must be an int, got 1.0 \(float\)'),
    (dict(depth=26, base_channels=0), ValueError, 'RedNet base_channels must be at least 1, got 0'),
    (dict(depth=26, strides=(1, 2, 2, 2.0)), TypeError, 'RedNet strides must be a sequence of ints'),
    (dict(depth=26, out_indices=3), TypeError, 'RedNet out_indices must be a sequence of ints, got 3'),
])
def test_rednet_refuses_wrong_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        RedNet(**kwargs)
