"""Shared fixtures: the reference layouts, and running our tools and the upstream ones as a user would."""
import json
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
LAYOUTS_FILE = osp.join(osp.dirname(REPO), 'shared', 'reference', 'official_layouts.json')


@pytest.fixture(scope='session')
def official_layouts() -> Dict[str, Dict[str, List[int]]]:
    """Every state-dict key and shape of the original implementation's released models."""
    if not osp.isfile(LAYOUTS_FILE):
        pytest.fail(f'{LAYOUTS_FILE} is missing: it is the fidelity contract, see DESIGN.md')
    with open(LAYOUTS_FILE) as f:
        return json.load(f)


def state_dict_layout(module, prefix: str = '') -> Dict[str, List[int]]:
    """``{prefix + key: shape}`` of a module's state dict, in the form of official_layouts.json."""
    return {prefix + k: list(v.shape) for k, v in module.state_dict().items()}


def run_command(args: List[str], timeout: int = 1200, env: Dict[str, str] = None) -> str:
    """Run a command from the repo root with this interpreter first on PATH; fail with its output."""
    full_env = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED='1')
    full_env['PATH'] = osp.dirname(sys.executable) + os.pathsep + full_env.get('PATH', '')
    full_env.update(env or {})
    proc = subprocess.run(args, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(args)} exited with {proc.returncode}:\n{proc.stdout[-8000:]}')
    return proc.stdout
