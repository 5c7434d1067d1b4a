"""The self-check (involution_mm/ops/self_check.py) of the Triton fast paths, by fault injection, and the
defects of issue 21 that reproduce without a GPU.

Without CUDA the Triton kernels run in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1, conftest.py),
and ``'auto'`` considers the CPU a device with fast paths where a test says so (``auto_on_cpu``). Kernels are
replaced by functions that give wrong numbers or raise; the real kernels must pass. The CuPy backend's
self-check is tested in test_cuda_kernels.py, where its kernels are emulated by a host build.
"""
import copy
import importlib
import logging
import os
import re
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from conftest import REPO, needs_triton
from involution_mm.layers import Involution, SimAM
from involution_mm.ops import backends, cpu_backend, self_check
from involution_mm.ops.fused_involution import (FUSED, SELF_CHECK_CASES, fused_involution, precision,
                                                self_check_inputs, unfused_involution)
from involution_mm.ops.self_check import TOLERANCES, Verdict, compare, device_key, float32_convs_use_tf32
from involution_mm.ops.simam import SIMAM, simam, simam_formula

DEVICE = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


def kernels(name: str):
    """A Triton kernels' module (``'involution_fused'`` or ``'simam'``); importing it imports Triton."""
    return importlib.import_module(f'involution_mm.ops.triton.{name}')


@pytest.fixture
def fresh(monkeypatch):
    """Verdicts, variants and warnings of the Triton paths forgotten for the test, restored after it."""
    for path in (FUSED, SIMAM):
        for name in ('verdicts', 'variants', 'seconds'):
            monkeypatch.setattr(path, name, {})
        monkeypatch.setattr(path, 'warned', set())


@pytest.fixture
def auto_on_cpu(monkeypatch):
    """``'auto'`` takes the fast paths on CPU tensors too, as it does on a GPU (where the compiled CPU kernels,
    which 'auto' prefers on CPU tensors, do not apply: here they are left out)."""
    monkeypatch.setattr(self_check, 'AUTO_DEVICE_TYPES', ['cuda', 'cpu'])
    monkeypatch.setattr(cpu_backend, '_MODULE', None)
    monkeypatch.setattr(backends, '_RESOLVED', {})
    monkeypatch.setattr(backends, '_ANNOUNCED', {'meta', 'cpu'})


def passed(path, dtype=torch.float32, mode=None):
    """Record the device-level self-check of ``path`` as passed (to test what happens after it)."""
    mode = mode or (precision(dtype) if path is FUSED else self_check.precision_mode(dtype))
    path.verdicts[device_key(DEVICE), dtype, mode] = Verdict(True, 'self-check passed (test)')


def scaled(real, factor=1.25, when=lambda *args: True):
    """``real`` with its results multiplied by ``factor`` where ``when(*args)``."""
    def run(*args, **kwargs):
        result = real(*args, **kwargs)
        if not when(*args):
            return result
        return tuple(t * factor for t in result) if isinstance(result, tuple) else result.mul_(factor)
    return run


def small_case(channels=32, stride=1):
    """``(x, r, weight, bias), grad, geometry`` of a small fused layer call on DEVICE (16-channel groups)."""
    return self_check_inputs((2, channels, 16, (6, 5), 3, stride, 1, 'contiguous'), DEVICE, torch.float32)


def with_grads(function, inputs, grad, geometry):
    inputs = [t.detach().requires_grad_() for t in inputs]
    out = function(*inputs, *geometry)
    return (out, ) + torch.autograd.grad(out, inputs, grad)


def layer_step(layer, x):
    """Output and input gradient of an Involution or SimAM layer."""
    x = x.detach().requires_grad_()
    out = layer(x)
    return out, torch.autograd.grad(out.square().sum(), x)[0]


def layer_and_unfused_twin():
    """A seeded Involution layer with fused='auto', a copy that never fuses, and an input for both."""
    torch.manual_seed(0)
    layer = Involution(32, 3).to(DEVICE)
    unfused = copy.deepcopy(layer)
    unfused.fused = False
    return layer, unfused, torch.randn(2, 32, 6, 5, device=DEVICE)


def no_more_warnings(action):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        return action()


# The defects a review found (issue 21)


@needs_triton
@pytest.mark.parametrize('conv, rnn', [('ieee', 'tf32'), ('tf32', 'ieee')])
def test_new_tf32_switches_leave_float32_calls_working(conv, rnn):
    """torch 2.9+ recommends ``torch.backends.cudnn.conv.fp32_precision``; once it differs from the RNN switch,
    reading the old ``torch.backends.cudnn.allow_tf32`` raises, which broke every float32 fused call. The
    kernels follow the convolution switch, as the unfused layer's span conv does."""
    switches = torch.backends.cudnn.conv, torch.backends.cudnn.rnn
    before = [switch.fp32_precision for switch in switches]
    (x, r, weight, bias), grad, geometry = small_case()
    try:
        for switch, value in zip(switches, (conv, rnn)):
            switch.fp32_precision = value
        with pytest.raises(RuntimeError, match='different TF32 flags'):
            torch.backends.cudnn.allow_tf32  # what the kernels' launcher read before
        assert float32_convs_use_tf32() == (conv == 'tf32')
        assert precision(torch.float32) == ('tf32' if conv == 'tf32' else 'float32')
        got = with_grads(lambda *a: fused_involution(*a, backend='triton'), (x, r, weight, bias), grad, geometry)
        want = with_grads(unfused_involution, (x, r, weight, bias), grad, geometry)
    finally:
        for switch, value in zip(switches, before):
            switch.fp32_precision = value
    assert compare(dict(enumerate(got)), dict(enumerate(want)), precision(torch.float32)) is None


@needs_triton
def test_non_contiguous_bias():
    """The kernels read the bias with unit stride; a strided bias (every other value of a longer one) gave
    errors of about 14 against the reference."""
    (x, r, weight, _), grad, geometry = small_case()
    bias = torch.randn(2 * weight.shape[0], device=DEVICE)[::2]
    assert not bias.is_contiguous()
    got = with_grads(lambda *a: fused_involution(*a, backend='triton'), (x, r, weight, bias), grad, geometry)
    want = with_grads(lambda *a: fused_involution(*a, backend='reference'), (x, r, weight, bias), grad, geometry)
    for name, g, w in zip(('out', 'grad_x', 'grad_r', 'grad_weight', 'grad_bias'), got, want):
        torch.testing.assert_close(g, w, rtol=1e-2 if DEVICE.type == 'cuda' else 1e-4, atol=1e-2 if DEVICE.type ==
                                   'cuda' else 1e-4, msg=name)


@needs_triton
def test_kernel_gradient_offsets_are_64_bit():
    """``grad_kernels_kernel`` writes row ``g * K * K + t`` of the kernels' gradient, ``positions`` values
    long. ``t * positions`` in 32 bits wraps from ``(K * K - 1) * positions >= 2**31`` (B * Ho * Wo >= 44.7 M
    at K = 7) and stores far outside the tensor. Here rows of 2**28 + 64 values (a 4.8 GB tensor, of which only
    the pages written are touched on the CPU) at K = 3: tap 8 starts at 2**31 + 512."""
    import triton
    from involution_mm.ops.triton.involution_kernels import grad_kernels_kernel
    launcher = kernels('involution_fused')
    (x, r, weight, _), grad, geometry = self_check_inputs((1, 16, 16, (4, 3), 3, 1, 1, 'channels_last'), DEVICE,
                                                          torch.float16)
    config = launcher.default_config(1, 16, (4, 3))
    grid = (triton.cdiv(4, config.block_h) * triton.cdiv(3, config.block_w), 1)

    def kernel_gradient(row: int) -> torch.Tensor:
        """The kernels' gradient of the 12 positions, in rows ``row`` values apart."""
        rows = torch.empty((9, row), dtype=torch.float16, device=DEVICE)  # on the CPU: pages touched when written
        rows[:, :12] = float('nan')
        grad_kernels_kernel[grid](grad, x, rows, 4, 3, 4, 3, 1, row, *grad.stride(), *x.stride(),
                                  **launcher._constants(x, weight, *geometry, config))
        return rows[:, :12]

    row = 2**28 + 64
    assert 8 * row >= 2**31
    got = kernel_gradient(row)
    torch.testing.assert_close(got, kernel_gradient(12))
    assert not got.isnan().any()


def test_offsets_within_a_sample_beyond_32_bits_run_unfused():
    """The kernels index within a sample of x, r and the output in 32 bits: a larger sample is refused (the
    reference runs it), a large batch of small samples is not."""
    from involution_mm.ops.fused_involution import _kernels_take
    small_samples = torch.empty(2**12, 16, 2**8, 2**8, device='meta')  # 2**32 values, 2**20 a sample
    assert _kernels_take(small_samples, torch.empty(2**12, 4, 2**8, 2**8, device='meta')) == (True, '')
    huge = torch.empty(1, 16, 2**14, 2**13 + 1, device='meta')  # offsets up to 2**31 + 16 * 2**14 - 1
    takes, why = _kernels_take(huge, torch.empty(1, 4, 2**14, 2**13 + 1, device='meta'))
    assert not takes and why == f'offsets within a sample reach {16 * 2**14 * (2**13 + 1) - 1}, beyond 32-bit indices'
    wide_output = torch.empty(1, 16, 2**14, 2**13 + 1, device='meta')[:, :, ::2, ::2]  # a view: small, but the large strides
    assert not _kernels_take(wide_output, torch.empty(1, 4, 2**13, 2**12 + 1, device='meta'))[0]


# The self-check: the real kernels pass, wrong ones fail


@needs_triton
def test_real_fused_kernels_pass_their_self_check():
    verdict = FUSED.verdict(DEVICE, torch.float32, precision(torch.float32))
    assert verdict.runs and verdict.why.startswith('self-check passed'), verdict


@needs_triton
def test_real_simam_kernels_pass_their_self_check():
    verdict = SIMAM.verdict(DEVICE, torch.float32, 'float32')
    assert verdict.runs and verdict.why.startswith('self-check passed'), verdict


def test_self_check_cases_take_every_branch():
    """The fused cases: partial tiles, uneven and single groups, R padded and not, a partial channel block,
    strides 1 to 3, dilation, an output width of 1, both layouts and a view off the 16-byte alignment."""
    from involution_mm.ops.triton.involution_tiles import default_config
    seen = set()
    for case in SELF_CHECK_CASES:
        (x, r, weight, bias), grad, (k, stride, padding, dilation) = self_check_inputs(case, 'cpu', torch.float32)
        groups, group_channels = weight.shape[0] // k**2, x.shape[1] // (weight.shape[0] // k**2)
        config = default_config(groups, group_channels, tuple(r.shape[2:]))
        seen |= {('stride', stride), ('dilation', dilation), ('layout', x.stride(1) == 1),
                 ('uneven groups', groups % config.block_g != 0), ('one group', groups == 1),
                 ('R padded', weight.shape[1] not in (16, 32, 64)), ('R exact', weight.shape[1] == 16),
                 ('partial channels', group_channels & (group_channels - 1) != 0), ('width 1', r.shape[3] == 1),
                 ('partial tile', r.shape[2] % config.block_h != 0 or r.shape[3] % config.block_w != 0),
                 ('misaligned', x.data_ptr() % 16 != 0)}
    for wanted in [('stride', 1), ('stride', 2), ('stride', 3), ('dilation', 2), ('layout', True), ('layout', False),
                   ('uneven groups', True), ('one group', True), ('R padded', True), ('R exact', True),
                   ('partial channels', True), ('width 1', True), ('partial tile', True), ('misaligned', True)]:
        assert wanted in seen, wanted


FUSED_KERNELS = ['fused_forward', 'fused_grad_input', 'fused_grad_kernels']


@needs_triton
@pytest.mark.parametrize('name', FUSED_KERNELS)
def test_fused_kernel_with_wrong_numbers_fails_the_self_check(name, monkeypatch, fresh, auto_on_cpu):
    module = kernels('involution_fused')
    monkeypatch.setattr(module, name, scaled(getattr(module, name)))
    inputs, grad, geometry = small_case()
    with pytest.raises(RuntimeError) as info:
        fused_involution(*inputs, *geometry, backend='triton')
    message = str(info.value)
    assert '\n' not in message and 'normalized max error' in message
    assert message.startswith(f'fused involution (Triton) failed its self-check on {DEVICE} (tf32)')
    assert message.endswith("use backend='auto' or backend='reference' (Involution: fused='auto' or fused=False)")
    # the layer with fused='auto': one warning, then the unfused layer's numbers, nothing more said
    layer, unfused, x = layer_and_unfused_twin()
    with pytest.warns(UserWarning, match=rf'fused involution \(Triton\) failed its self-check on {DEVICE} '
                      r'\(tf32\): .*normalized max error .*; using PyTorch operations instead'):
        got = layer_step(layer, x)
    torch.testing.assert_close(got, layer_step(unfused, x))
    no_more_warnings(lambda: layer_step(layer, x))


@needs_triton
def test_fused_kernel_that_cannot_launch_fails_the_self_check(monkeypatch, fresh, auto_on_cpu):
    """A variant that does not compile or launch (here: out of shared memory, as large R on sm_75 would) fails
    the check: 'auto' never raises it into user code."""
    from triton.runtime.errors import OutOfResources

    def launch(*args, **kwargs):
        raise OutOfResources(98304, 65536, 'shared memory')

    monkeypatch.setattr(kernels('involution_fused'), 'fused_grad_input', launch)
    inputs, grad, geometry = small_case()
    with pytest.warns(UserWarning, match=r'failed its self-check .*OutOfResources: out of resource: shared memory'):
        got = with_grads(lambda *a: fused_involution(*a, backend='auto'), inputs, grad, geometry)
    torch.testing.assert_close(got, with_grads(unfused_involution, inputs, grad, geometry))
    with pytest.raises(RuntimeError, match=r'failed its self-check .*OutOfResources.*backend=\'reference\''):
        fused_involution(*inputs, *geometry, backend='triton')


@needs_triton
def test_a_new_variant_is_checked_on_its_first_call(monkeypatch, fresh, auto_on_cpu):
    """A variant (here: 32 channels) that gives wrong numbers although the self-check passed: its first call
    is checked on its first sample; 'auto' warns once and runs the reference for that variant from then on,
    other variants keep the kernels; 'triton' raises."""
    passed(FUSED)
    module = kernels('involution_fused')
    calls = []
    real = scaled(module.fused_forward, when=lambda x, *args: x.shape[1] == 32)
    monkeypatch.setattr(module, 'fused_forward', lambda *args: calls.append(args[0].shape[1]) or real(*args))
    inputs, _, geometry = small_case(32)
    want = unfused_involution(*inputs, *geometry)
    with pytest.warns(UserWarning, match=rf"failed the check of a new variant's first call on {DEVICE} \(tf32\): "
                      r'out: normalized max error .*; that variant runs PyTorch operations from now on'):
        torch.testing.assert_close(fused_involution(*inputs, *geometry), want)
    torch.testing.assert_close(no_more_warnings(lambda: fused_involution(*inputs, *geometry)), want)
    assert calls == [32]  # the failed variant is not launched again
    other, _, other_geometry = small_case(48)
    torch.testing.assert_close(fused_involution(*other, *other_geometry), unfused_involution(*other, *other_geometry))
    assert calls == [32, 48]
    with pytest.raises(RuntimeError, match=r"variant's first call on .*: out: .*; use backend='auto' or "):
        fused_involution(*inputs, *geometry, backend='triton')


SIMAM_KERNELS = ['simam_forward', 'simam_backward']


@needs_triton
@pytest.mark.parametrize('name', SIMAM_KERNELS)
def test_simam_kernel_with_wrong_numbers_fails_the_self_check(name, monkeypatch, fresh, auto_on_cpu):
    module = kernels('simam')
    monkeypatch.setattr(module, name, scaled(getattr(module, name)))
    x = torch.randn(2, 3, 5, 4, device=DEVICE) + 1
    with pytest.raises(RuntimeError) as info:
        simam(x, 0.1, backend='triton')
    message = str(info.value)
    assert '\n' not in message and message.startswith(f'SimAM (Triton) failed its self-check on {DEVICE} (float32)')
    assert message.endswith("use backend='auto' or backend='pytorch'")
    with pytest.warns(UserWarning, match=rf'SimAM \(Triton\) failed its self-check on {DEVICE} \(float32\): .*'
                      'normalized max error .*; using the PyTorch formula instead'):
        got = layer_step(SimAM(e_lambda=0.1), x)
    torch.testing.assert_close(got, layer_step(lambda t: simam_formula(t, 0.1), x))
    no_more_warnings(lambda: layer_step(SimAM(e_lambda=0.1), x))


@needs_triton
def test_simam_variant_is_checked_on_its_first_call(monkeypatch, fresh, auto_on_cpu):
    passed(SIMAM)
    module = kernels('simam')
    monkeypatch.setattr(module, 'simam_backward', scaled(module.simam_backward, when=lambda g, x, *a: x.shape[1] == 5))
    x = torch.randn(2, 5, 4, 4, device=DEVICE)
    with pytest.warns(UserWarning, match=r"SimAM \(Triton\) failed the check of a new variant's first call on .*: "
                      r'backward: normalized max error'):
        got = layer_step(SimAM(e_lambda=0.1), x)
    torch.testing.assert_close(got, layer_step(lambda t: simam_formula(t, 0.1), x))
    with pytest.raises(RuntimeError, match="variant's first call on .*: backward: .*; use backend='auto' or"):
        layer_step(SimAM(e_lambda=0.1, backend='triton'), x)


# CUDA-graph capture (mocked): nothing unchecked is compiled, launched or checked


@pytest.fixture
def capture(monkeypatch):
    """A CUDA-graph capture in progress, as the self-check sees it."""
    from involution_mm.ops import backends
    monkeypatch.setattr(self_check, 'capturing', lambda device: True)
    monkeypatch.setattr(backends, 'capturing', lambda device: True)


def forbid_launches(monkeypatch):
    def launch(*args, **kwargs):
        raise AssertionError('a Triton kernel was launched during the capture')

    for name in FUSED_KERNELS:
        monkeypatch.setattr(kernels('involution_fused'), name, launch)
    for name in SIMAM_KERNELS:
        monkeypatch.setattr(kernels('simam'), name, launch)


@needs_triton
def test_capture_before_any_check(monkeypatch, fresh, auto_on_cpu, capture):
    """'auto' runs the PyTorch paths inside the capture and says to run one step first; nothing is cached,
    so the check runs after the capture. Named fast paths raise a one-line error."""
    forbid_launches(monkeypatch)
    layer, unfused, x = layer_and_unfused_twin()
    with pytest.warns(UserWarning, match=r'not been checked on .* a CUDA graph is being captured, so the graph runs '
                      r'PyTorch operations; run one step \(forward and backward\) before capturing'):
        torch.testing.assert_close(layer_step(layer, x), layer_step(unfused, x))
    with pytest.warns(UserWarning, match=r'SimAM \(Triton\) has not been checked .* run one step'):
        torch.testing.assert_close(layer_step(SimAM(e_lambda=0.1), x), layer_step(lambda t: simam_formula(t, 0.1), x))
    assert FUSED.verdicts == {} and SIMAM.verdicts == {}
    inputs, _, geometry = small_case()
    for call in (lambda: fused_involution(*inputs, *geometry, backend='triton'), lambda: simam(x, backend='triton')):
        with pytest.raises(RuntimeError, match=r'cannot be during a CUDA-graph capture: run one step \(forward and '
                           r'backward\) before capturing, or use backend=') as info:
            call()
        assert '\n' not in str(info.value)


@needs_triton
def test_capture_of_an_unchecked_variant(monkeypatch, fresh, auto_on_cpu, capture):
    """Device checked, variant not: the capture runs the reference for it ('auto') or refuses ('triton'); a
    variant checked before the capture runs its kernels in the capture."""
    passed(FUSED)
    module = kernels('involution_fused')
    calls = []
    real = module.fused_forward
    monkeypatch.setattr(module, 'fused_forward', lambda *args: calls.append(1) or real(*args))
    inputs, _, geometry = small_case()
    want = unfused_involution(*inputs, *geometry)
    with pytest.warns(UserWarning, match='meets a new variant .* during a CUDA-graph capture, where it cannot be '
                      'compiled or checked: the graph runs PyTorch operations for it; run one step'):
        torch.testing.assert_close(fused_involution(*inputs, *geometry), want)
    with pytest.raises(RuntimeError, match='meets a new variant .* during a CUDA-graph capture.*run one step'):
        fused_involution(*inputs, *geometry, backend='triton')
    assert calls == []
    monkeypatch.setattr(self_check, 'capturing', lambda device: False)
    fused_involution(*inputs, *geometry)  # the step before the capture: compiled and checked
    monkeypatch.setattr(self_check, 'capturing', lambda device: True)
    torch.testing.assert_close(fused_involution(*inputs, *geometry, backend='triton'), want, rtol=1e-2, atol=1e-2)
    assert calls == [1, 1]


# INVOLUTION_MM_SELF_CHECK=0


@needs_triton
def test_the_check_can_be_turned_off(monkeypatch, fresh):
    """With INVOLUTION_MM_SELF_CHECK=0 nothing is checked (so a wrong kernel's numbers come through), and the
    outcome is logged once per device and mode."""
    monkeypatch.setenv('INVOLUTION_MM_SELF_CHECK', '0')
    logged = []
    monkeypatch.setattr(self_check, 'log', lambda message, level=logging.INFO: logged.append(message))
    module = kernels('involution_fused')
    monkeypatch.setattr(module, 'fused_forward', scaled(module.fused_forward, factor=2.0))
    inputs, _, geometry = small_case()
    for _ in range(2):
        got = fused_involution(*inputs, *geometry, backend='triton')
    torch.testing.assert_close(got, 2 * unfused_involution(*inputs, *geometry))
    assert logged == [f'fused involution (Triton) on {DEVICE} (tf32): runs, not checked (INVOLUTION_MM_SELF_CHECK=0)']


def test_compare():
    want = {'out': torch.tensor([1.0, -2.0, 4.0])}
    assert compare({'out': want['out'] + 1e-3}, want, 'float16') is None
    assert compare({'out': want['out'] + 1e-1}, want, 'float16') == 'out: normalized max error 0.025 (tolerance 0.01)'
    assert 'NaN or Inf' in compare({'out': torch.tensor([1.0, float('nan'), 4.0])}, want, 'bfloat16')
    assert 'shape (2,)' in compare({'out': torch.ones(2)}, want, 'float64')
    assert compare({'x': torch.tensor([float('inf'), 1.0])}, {'x': torch.tensor([float('inf'), 1.0])}, 'tf32') is None
    assert sorted(TOLERANCES) == ['bfloat16', 'float16', 'float32', 'float64', 'tf32']


# On a GPU: the capture without warm-up in a fresh process


CAPTURE_SCRIPT = textwrap.dedent('''
    import warnings
    import torch
    from involution_mm.layers import Involution, SimAM

    torch.manual_seed(0)
    model = torch.nn.Sequential(Involution(64, 7), SimAM(e_lambda=0.1)).cuda().eval()
    x = torch.randn(4, 64, 28, 28, device='cuda')
    # torch's own libraries initialised (cuDNN and cuBLAS handles), nothing of this package run
    model[0].conv2(model[0].conv1(x))  # plain convs, BN and ReLU
    torch.ones(8, 8, device='cuda') @ torch.ones(8, 8, device='cuda')
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with torch.no_grad(), torch.cuda.graph(graph):  # no warm-up: nothing checked or compiled yet
            out = model(x)
    graph.replay()
    with torch.no_grad():
        eager = model(x)  # the first eager step checks and compiles
        graph2 = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph2):
            out2 = model(x)
    graph2.replay()
    torch.cuda.synchronize()
    print('warnings:', ' | '.join(str(w.message) for w in caught))
    print('max difference', (out - eager).abs().max().item(), (out2 - eager).abs().max().item())
''')


@needs_cuda
def test_cuda_graph_capture_without_warm_up_in_a_fresh_process():
    proc = subprocess.run([sys.executable, '-c', CAPTURE_SCRIPT], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'run one step (forward and backward) before capturing' in proc.stdout, proc.stdout
    first, second = map(float, proc.stdout.split('max difference')[1].split())
    assert first < 1e-2 and second < 1e-2, proc.stdout


@needs_triton
def test_verdict_benchmark_runs(monkeypatch, capsys):
    """benchmarks/self_check_verdict.py (cuda_checks.sh verdict; its code otherwise runs only on a GPU), on
    one tiny shape of each path; on the CPU the CuPy op is not checked, so not timed."""
    monkeypatch.syspath_prepend(os.path.join(REPO, 'benchmarks'))
    import self_check_verdict as verdict
    monkeypatch.setattr(verdict, 'LAYERS', [('tiny', 16, 4, 2, 3)])
    monkeypatch.setattr(verdict, 'SIMAM_LAYERS', [(4, 3)])
    monkeypatch.setattr(verdict, 'OP_STAGES', [(16, 4)])
    assert verdict.main(['--device', DEVICE.type, '--batch', '1', '--dtype', 'float32', '--repeats', '1']) == 0
    out = capsys.readouterr().out
    assert '| fused involution | tf32 | yes | self-check passed' in out
    assert '| SimAM | float32 | yes | self-check passed' in out
    assert '| CuPy op | float32 | no | it runs on CUDA tensors only' in out or DEVICE.type == 'cuda'
    assert re.search(r'\| fused involution \| float32 \| \(1, 16, 4, 4\) tiny s2 K3 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|', out)
    assert re.search(r'\| SimAM \| float32 \| \(1, 4, 3, 3\)  \| [\d.]+ \| [\d.]+ \| [\d.]+ \|', out)
