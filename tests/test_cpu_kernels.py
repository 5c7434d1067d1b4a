"""The compiled CPU backend ('cpu', ops/csrc/cpu/) against the PyTorch reference backend: the three kernels
over the op cases (geometries, strides, dilations, groups, memory layouts) for every instruction set this
CPU runs, every dtype, gradcheck and gradgradcheck through the registered ops, 'auto' choosing it, a
fullgraph torch.compile, the fallback (with its one log line) when the extension is not built, and in CI that
the README's set-up built it. Then the fused layer's 'cpu' backend against its PyTorch reference over the fused
cases of test_fused_involution.py."""
import copy
import logging
import os

import pytest
import torch
import torch._dynamo.testing
import test_fused_involution as fused_cases
from op_cases import SHAPES, make_inputs, memory_layouts

from involution_mm.layers import Involution
from involution_mm.ops import backends, cpu_backend, involution, select_backend
from involution_mm.ops.fused_involution import fused_involution
from involution_mm.ops.geometry import check_inputs, output_memory_format
from involution_mm.ops.pytorch_backend import involution_forward, involution_grad_input, involution_grad_weight

MODULE = cpu_backend.kernels_module()
needs_kernels = pytest.mark.skipif(
    MODULE is None, reason=f'the CPU kernels are not built ({cpu_backend.LOAD_ERROR}); build them with '
    f'{cpu_backend.BUILD_COMMAND}')
ISAS = MODULE.isas() if MODULE is not None else []


@pytest.mark.skipif(os.environ.get('CI') != 'true', reason='a developer checkout may run without the CPU kernels; '
                    'CI (CI=true) builds them with make demo')
def test_ci_builds_the_cpu_kernels():
    """In CI, the README's set-up (make demo) has compiled the kernels: their tests here are not skipped."""
    assert MODULE is not None, cpu_backend.LOAD_ERROR
    assert select_backend(torch.zeros(1, 4, 3, 3)) == 'cpu'


@pytest.fixture(params=['avx512', 'avx2', 'generic'])
def isa(request):
    """Run the kernels compiled for one instruction set (skipped where this CPU lacks it)."""
    if MODULE is None:
        pytest.skip(needs_kernels.kwargs['reason'])
    if request.param not in ISAS:
        pytest.skip(f'this CPU cannot run the {request.param} kernels (it runs {ISAS})')
    chosen = MODULE.isa()
    MODULE.set_isa(request.param)
    yield request.param
    MODULE.set_isa(chosen)


def three_kernels(x, weight, geo, grad, kernels):
    forward, grad_input, grad_weight = kernels
    return forward(x, weight, geo), grad_input(grad, weight, geo), grad_weight(grad, x, geo)


CPU = (cpu_backend.cpu_forward, cpu_backend.cpu_grad_input, cpu_backend.cpu_grad_weight)
REFERENCE = (involution_forward, involution_grad_input, involution_grad_weight)


# The forward and the input gradient take rows in pairs wherever s_h = d_h = 1; these add column strides and
# dilations (phases) to the pairs, and 12 channels a group (a partial block of the pairs' channels).
PAIR_SHAPES = [(2, 16, (9, 11), 2, 3, (1, 2), 1, (1, 2)), (1, 24, (6, 13), 2, (5, 3), (1, 3), (2, 1), 1)]


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'strided view', 'transposed storage'])
@pytest.mark.parametrize('shape', SHAPES + PAIR_SHAPES)
def test_kernels_match_the_reference(isa, shape, layout):
    """Forward, input gradient and weight gradient equal the PyTorch backend's, in the same layouts."""
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation)
    if layout != 'contiguous':
        x, weight = memory_layouts(x, weight)[layout]
    geo = check_inputs(x, weight, stride, padding, dilation)
    grad = torch.randn_like(involution_forward(x, weight, geo))
    for got, want in zip(three_kernels(x, weight, geo, grad, CPU), three_kernels(x, weight, geo, grad, REFERENCE)):
        torch.testing.assert_close(got, want)
        assert (got.dtype, got.stride()) == (want.dtype, want.stride())


# Rows of several vectors in pairs: odd heights leave a single row, widths that are not whole vectors a partial
# vector, borders rows that feed only one of the pair; the third: 12 channels a group, a partial channel
# block; the last: rows so wide that a task's kernel values are copied a pair of rows at a time (forward_task's
# packed_rows).
WIDE_SHAPES = [(2, 32, (9, 37), 2, 7, 1, 3, 1), (1, 16, (6, 40), 1, 3, 1, 1, 1),
               (1, 24, (5, 36), 2, 3, 1, 1, 1), (2, 8, (5, 700), 4, 7, 1, 3, 1)]


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'strided view'])
@pytest.mark.parametrize('shape', WIDE_SHAPES)
def test_wide_rows_match_the_reference(isa, shape, layout, dtype):
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation, dtype=dtype)
    if layout != 'contiguous':
        x, weight = memory_layouts(x, weight)[layout]
    geo = check_inputs(x, weight, stride, padding, dilation)
    got, want = cpu_backend.cpu_forward(x, weight, geo), involution_forward(x, weight, geo)
    torch.testing.assert_close(got, want)
    assert got.stride() == want.stride()


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('shape', [SHAPES[1], SHAPES[3], SHAPES[4]])
def test_dtypes_against_float64(isa, dtype, tol, layout, shape):
    """float32 natively, half types in float32: each within its precision of the float64 result on the same
    (rounded) values, in the input's dtype."""
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation, dtype=torch.float32)
    if layout == 'channels_last':
        x = x.to(memory_format=torch.channels_last)
    x, weight = x.to(dtype), weight.to(dtype)
    geo = check_inputs(x, weight, stride, padding, dilation)
    grad = torch.randn_like(involution_forward(x.double(), weight.double(), geo)).to(dtype)
    wide = [t.double() for t in (x, weight, grad)]
    for got, want in zip(three_kernels(x, weight, geo, grad, CPU), three_kernels(*wide[:2], geo, wide[2], REFERENCE)):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max().item())


@needs_kernels
def test_results_do_not_depend_on_the_thread_count_or_batch():
    """Each output is summed by one task in a fixed order, however the work is split: over threads, and in
    row blocks whose sizes depend on the batch (the forward's row pairs start where a block starts)."""
    x, weight = make_inputs(2, 64, (14, 13), 4, 7, 1, 3, 1, dtype=torch.float32)
    geo = check_inputs(x, weight, 1, 3, 1)
    grad = torch.randn(2, 64, 14, 13)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = three_kernels(x, weight, geo, grad, CPU)
        torch.set_num_threads(max(2, threads))
        several = three_kernels(x, weight, geo, grad, CPU)
        one_sample = three_kernels(x[1:], weight[1:], check_inputs(x[1:], weight[1:], 1, 3, 1), grad[1:], CPU)
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(single, several, one_sample):
        assert torch.equal(a, b)
        assert torch.equal(a[1:], c)


@needs_kernels
def test_empty_batch():
    x, weight = make_inputs(0, 16, (6, 6), 1, 3, 1, 1, 1, dtype=torch.float32)
    out = involution(x, weight, 1, 1, backend='cpu')
    assert out.shape == (0, 16, 6, 6)


@needs_kernels
@pytest.mark.parametrize('shape', [SHAPES[1], SHAPES[3], SHAPES[4], SHAPES[6]])
def test_gradcheck_and_gradgradcheck_through_the_registered_op(shape):
    batch, channels, size, groups, kernel, stride, padding, dilation = shape
    x, weight = make_inputs(1, 2 * groups, (5, 6), groups, kernel, stride, padding, dilation)
    x.requires_grad_(True)
    weight.requires_grad_(True)

    def op(a, b):
        return involution(a, b, stride, padding, dilation, backend='cpu')

    assert torch.autograd.gradcheck(op, (x, weight), fast_mode=True)
    assert torch.autograd.gradgradcheck(op, (x, weight), fast_mode=True)


@needs_kernels
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_auto_chooses_the_cpu_kernels_for_cpu_tensors(dtype):
    x, weight = make_inputs(1, 8, (6, 6), 2, 3, 1, 1, 1, dtype=dtype)
    assert select_backend(x) == 'cpu'
    assert torch.equal(involution(x, weight, 1, 1), involution(x, weight, 1, 1, backend='cpu'))
    assert select_backend(x.to('meta')) == 'pytorch'  # shape inference keeps the reference


class Aggregation(torch.nn.Module):
    def forward(self, x, weight):
        return involution(x, weight, 2, 3)


@needs_kernels
def test_compiles_without_graph_breaks():
    """A fullgraph compile (one graph: a graph break would raise) runs the op, forward and backward."""
    x, weight = make_inputs(2, 32, (9, 10), 2, 7, 2, 3, 1, dtype=torch.float32)
    x = x.to(memory_format=torch.channels_last).requires_grad_(True)
    weight.requires_grad_(True)
    counter = torch._dynamo.testing.CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(Aggregation(), fullgraph=True, backend=counter)
    results = []
    for run in (compiled, Aggregation()):
        out = run(x, weight)
        results.append((out,) + torch.autograd.grad(out.square().sum(), (x, weight)))
    assert counter.frame_count == 1
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


def test_without_the_extension_cpu_tensors_use_the_reference_and_say_so_once(monkeypatch):
    """The extension missing (simulated): 'auto' takes the PyTorch backend, one warning names the build
    command, and asking for 'cpu' by name is refused with the same reason."""
    logged = []
    monkeypatch.setattr(cpu_backend, '_MODULE', None)
    monkeypatch.setattr(cpu_backend, 'LOAD_ERROR', "ImportError: cannot import name '_involution_cpu'")
    monkeypatch.setattr(backends, '_RESOLVED', {})
    monkeypatch.setattr(backends, '_ANNOUNCED', {'meta'})
    monkeypatch.setattr(backends, '_log', lambda message, level: logged.append((message, level)))
    x, weight = make_inputs(1, 8, (6, 6), 2, 3, 1, 1, 1, dtype=torch.float32)
    for _ in range(2):
        assert select_backend(x) == 'pytorch'
        torch.testing.assert_close(involution(x, weight, 1, 1),
                                   involution_forward(x, weight, check_inputs(x, weight, 1, 1, 1)))
    assert len(logged) == 1
    message, level = logged[0]
    assert level == logging.WARNING and '\n' not in message
    assert message.startswith("involution: cpu tensors use the 'pytorch' backend: 'cpu' cannot run (the compiled "
                              "CPU kernels are not built or do not load (ImportError: cannot import name")
    assert 'pip install --no-deps --no-build-isolation -e .' in message and 'cupy' not in message
    with pytest.raises(RuntimeError, match="backend 'cpu' cannot run on this input: the compiled CPU kernels"):
        involution(x, weight, 1, 1, backend='cpu')


@needs_kernels
def test_instruction_sets():
    assert MODULE.isa() == ISAS[0] and ISAS[-1] == 'generic'
    with pytest.raises(ValueError, match="no CPU involution kernels for 'avx9000' on this machine"):
        MODULE.set_isa('avx9000')


@needs_kernels
def test_other_devices_are_refused():
    usable, reason = cpu_backend.cpu_usable(torch.empty(1, device='meta'))
    assert not usable and reason == 'it runs on CPU tensors only, and this one is on meta'


# The fused layer's 'cpu' backend (fused_involution): a forward kernel of its own, and gradients from the op's
# kernels with regenerated kernels, against the fused layer's PyTorch reference.


# the fused cases, and two with rows of several vectors (see WIDE_SHAPES)
FUSED_CASES = fused_cases.CASES + [(1, 32, (9, 37), 7, 1, 1, 16, 'contiguous'),
                                   (2, 32, (8, 33), 3, 1, 1, 16, 'channels_last')]


def fused_value_and_grads(backend, case, dtype):
    inputs, grad, geometry = fused_cases.make_inputs(*case, dtype=dtype, device=torch.device('cpu'))
    values = fused_cases.value_and_grads(lambda *a: fused_involution(*a, backend=backend), inputs, grad, geometry)
    return values, inputs


@pytest.mark.parametrize('case', FUSED_CASES, ids=lambda case: f'{case[1]}ch-{case[2]}-k{case[3]}s{case[4]}'
                         f'd{case[5]}-{case[-1]}')
def test_fused_layer_matches_the_reference(isa, case):
    """Output and the gradients for x, r, weight and bias in float64, in the reference's layouts: x's for the
    output and grad_x, r's for grad_r."""
    got, (x, r, _, _) = fused_value_and_grads('cpu', case, torch.float64)
    want, _ = fused_value_and_grads('reference', case, torch.float64)
    for name, g, w in zip(('out', 'grad_x', 'grad_r', 'grad_weight', 'grad_bias'), got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=name)
    for value, like in zip(got[:3], (x, x, r)):
        assert value.stride() == torch.empty(value.shape, memory_format=output_memory_format(like)).stride()


@needs_kernels
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
def test_fused_layer_dtypes_against_float64(dtype, tol):
    case = fused_cases.CASES[1]
    got, inputs = fused_value_and_grads('cpu', case, dtype)
    want, _ = fused_value_and_grads('reference', case, torch.float64)
    for name, g, w in zip(('out', 'grad_x', 'grad_r', 'grad_weight', 'grad_bias'), got, want):
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.double(), w, rtol=tol, atol=tol * w.abs().max().item(), msg=name)


@needs_kernels
def test_fused_layer_gradcheck():
    inputs, _, geometry = fused_cases.make_inputs(1, 32, (5, 6), 3, 2, 1, 16, 'channels_last', dtype=torch.float64,
                                                  device=torch.device('cpu'))
    inputs = [t.detach().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *a: fused_involution(*a, *geometry, backend='cpu'), inputs,
                                    fast_mode=True)


@needs_kernels
def test_fused_forward_does_not_depend_on_the_thread_count_or_batch():
    """Each output is summed by one task in a fixed order: any thread count, any batch split."""
    (x, r, weight, bias), _, geometry = fused_cases.make_inputs(3, 64, (14, 13), 7, 1, 1, 16, 'contiguous',
                                                                device=torch.device('cpu'))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = fused_involution(x, r, weight, bias, *geometry, backend='cpu')
        torch.set_num_threads(max(2, threads))
        several = fused_involution(x, r, weight, bias, *geometry, backend='cpu')
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, several)
    assert torch.equal(single[1:2], fused_involution(x[1:2], r[1:2], weight, bias, *geometry, backend='cpu'))
    empty = fused_involution(x[:0], r[:0], weight, bias, *geometry, backend='cpu')
    assert empty.shape == (0, ) + single.shape[1:]


@needs_kernels
def test_layer_runs_fused_on_cpu_and_compiles_without_graph_breaks():
    """The Involution layer's default path on CPU tensors: the same output and gradients as the unfused
    layer, eager and in one fullgraph compile."""
    torch.manual_seed(0)
    unfused = Involution(32, 3, stride=2, fused=False).eval()
    layer = copy.deepcopy(unfused)
    layer.fused = 'auto'
    assert layer._fused_backend(torch.empty(1, 32, 4, 4)) == 'cpu'
    x = torch.randn(2, 32, 9, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    counter = torch._dynamo.testing.CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(layer, fullgraph=True, backend=counter)
    want = None
    for run in (unfused, layer, compiled):
        out = run(x)
        got = (out, ) + torch.autograd.grad(out.square().sum(), [x] + list(run.parameters()))
        if want is None:
            want = got
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    assert counter.frame_count == 1


def test_fused_without_the_extension(monkeypatch):
    """The extension missing (simulated): 'auto' runs the reference, 'cpu' by name is refused in one line."""
    monkeypatch.setattr(cpu_backend, '_MODULE', None)
    monkeypatch.setattr(cpu_backend, 'LOAD_ERROR', "ImportError: cannot import name '_involution_cpu'")
    inputs, _, geometry = fused_cases.make_inputs(*fused_cases.CASES[0], device=torch.device('cpu'))
    torch.testing.assert_close(fused_involution(*inputs, *geometry),
                               fused_involution(*inputs, *geometry, backend='reference'))
    with pytest.raises(RuntimeError, match=r"^fused_involution backend 'cpu' cannot run on this input: the "
                       r"compiled CPU kernels are not built .*; use backend='auto' or backend='reference'$"):
        fused_involution(*inputs, *geometry, backend='cpu')
