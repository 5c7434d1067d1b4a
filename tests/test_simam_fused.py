"""The SimAM operator (involution_mm::simam): the fused Triton kernels against the PyTorch formula, the
operator's registration (opcheck, fake strides, autograd), torch.compile without graph breaks, the choice of
path, and the SimAM layer's argument checks.

Without CUDA the Triton kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set by
conftest.py before anything imports Triton); with CUDA the same tests compile them for the GPU.
"""
import importlib
import os

import pytest
import torch
import torch.nn as nn

from conftest import needs_triton
from involution_mm.layers import SimAM
from involution_mm.ops.geometry import output_memory_format
from involution_mm.ops.simam import simam, simam_backward_op, simam_formula, simam_op

simam_module = importlib.import_module('involution_mm.ops.simam')  # the module (ops exports the function)
DEVICE = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
BACKENDS = ['pytorch', pytest.param('triton', marks=needs_triton)]
TOLERANCES = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=2e-3, atol=1e-3),
              torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}
LAYOUTS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}


def other(memory_format: torch.memory_format) -> torch.memory_format:
    return torch.contiguous_format if memory_format == torch.channels_last else torch.channels_last


def make_inputs(shape, dtype, memory_format, seed=0):
    """A random input, its first plane constant, and an output gradient in the other layout."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator) * 3 + 1
    x[0, 0] = 2.5
    grad = torch.randn(shape, generator=generator)
    return (x.to(DEVICE, dtype).contiguous(memory_format=memory_format),
            grad.to(DEVICE, dtype).contiguous(memory_format=other(memory_format)))


def check_against_formula(x: torch.Tensor, grad: torch.Tensor, backend: str, e_lambda: float = 0.1) -> None:
    """The op's output and input gradient equal the formula's and its autograd's, with the op's layout."""
    x = x.detach().requires_grad_()
    y = simam(x, e_lambda, backend)
    grad_x, = torch.autograd.grad(y, x, grad)
    reference = x.detach().requires_grad_()
    expected = simam_formula(reference, e_lambda)
    expected_grad, = torch.autograd.grad(expected, reference, grad)
    layout = torch.empty(x.shape, memory_format=output_memory_format(x)).stride()
    assert y.dtype == grad_x.dtype == x.dtype and y.stride() == grad_x.stride() == layout
    torch.testing.assert_close(y, expected, **TOLERANCES[x.dtype])
    torch.testing.assert_close(grad_x, expected_grad, **TOLERANCES[x.dtype])


@pytest.fixture(params=['resident', 'looped'])
def plan(request, monkeypatch):
    """Tile plans: whole planes per tile, or (with tiny tiles) the chunked multi-pass plan."""
    if request.param == 'looped':
        kernels = importlib.import_module('involution_mm.ops.triton.simam')
        monkeypatch.setattr(kernels, 'MAX_TILE', 16)
        monkeypatch.setattr(kernels, 'LOOP_TILE', 16)
    return request.param


@needs_triton
@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_fused_kernels_match_the_formula(layout, dtype, plan):
    from involution_mm.ops.triton.simam import launch_plan
    assert launch_plan(3, 5 * 7, layout == 'channels_last').resident == (plan == 'resident')
    # 5x7 planes (one constant) over 3 channels, partial channel blocks; 1x1 maps (n = 0)
    for shape in [(2, 3, 5, 7), (2, 4, 1, 1)]:
        check_against_formula(*make_inputs(shape, dtype, LAYOUTS[layout]), backend='triton')


@needs_triton
def test_fused_kernels_on_other_strides():
    x, grad = make_inputs((2, 6, 4, 3), torch.float32, torch.contiguous_format)
    check_against_formula(x[:, ::2], grad[:, ::2], 'triton')  # not dense: computed in a contiguous copy
    check_against_formula(x.transpose(2, 3).contiguous().transpose(2, 3), grad, 'triton')


@needs_triton
def test_launch_plans():
    from involution_mm.ops.triton.simam import launch_plan
    # contiguous: whole planes, small ones grouped; channels_last: whole planes of at least 8 channels
    assert launch_plan(64, 56 * 56, channels_last=False)[:3] == (1, 4096, True)
    assert launch_plan(512, 7 * 7, channels_last=False)[:3] == (64, 64, True)
    assert launch_plan(64, 56 * 56, channels_last=True)[:3] == (16, 256, False)
    assert launch_plan(128, 28 * 28, channels_last=True)[:3] == (8, 1024, True)
    assert launch_plan(512, 7 * 7, channels_last=True)[:3] == (64, 64, True)
    assert launch_plan(8, 200 * 300, channels_last=False)[:3] == (1, 4096, False)


@pytest.mark.parametrize('backend', BACKENDS)
def test_opcheck(backend):
    for layout in LAYOUTS.values():
        x, grad = make_inputs((2, 3, 5, 7), torch.float32, layout)
        torch.library.opcheck(simam_op, (x, 0.1, backend))
        torch.library.opcheck(simam_backward_op, (grad, x, 0.1, backend))


def layouts_of(x: torch.Tensor):
    """The values of ``x`` in memory layouts the fake implementations must predict."""
    wide = torch.cat([x, x], dim=1)
    unit = x[:, :, :1, :1]
    return [x, x.contiguous(memory_format=torch.channels_last), wide[:, ::2], x.transpose(2, 3).contiguous()
            .transpose(2, 3), unit, unit.contiguous(memory_format=torch.channels_last), x.permute(1, 0, 2, 3)]


@pytest.mark.parametrize('backend', BACKENDS)
def test_fake_outputs_have_the_real_sizes_and_strides(backend):
    from torch._subclasses.fake_tensor import FakeTensorMode
    x, _ = make_inputs((2, 3, 5, 7), torch.float32, torch.contiguous_format)
    for t in layouts_of(x):
        grad = torch.randn_like(t)
        real = [simam_op(t, 0.1, backend), simam_backward_op(grad, t, 0.1, backend)]
        with FakeTensorMode() as mode:
            fake = [simam_op(mode.from_tensor(t), 0.1, backend),
                    simam_backward_op(mode.from_tensor(grad), mode.from_tensor(t), 0.1, backend)]
        for r, f in zip(real, fake):
            assert (f.shape, f.stride(), f.dtype) == (r.shape, r.stride(), r.dtype), t.stride()
    meta = torch.empty(2, 3, 5, 7, device='meta').contiguous(memory_format=torch.channels_last)
    assert simam(meta).stride() == meta.stride()


class SimAMBlock(nn.Module):
    """conv -> SimAM -> BN -> ReLU, as in a SimAM ResNet."""

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.simam = SimAM(e_lambda=0.1, backend=backend)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.simam(self.conv(x))))


def train_step(block: nn.Module, x: torch.Tensor):
    """The block's output and the gradients of its input and conv weight, for a square loss."""
    block.zero_grad()
    x = x.detach().requires_grad_()
    out = block(x)
    out.square().sum().backward()
    return out, x.grad, block.conv.weight.grad


@pytest.mark.parametrize('backend', ['auto', pytest.param('triton', marks=needs_triton)])
def test_a_simam_block_compiles_as_one_graph(backend):
    from torch._dynamo.backends.common import aot_autograd
    from torch._dynamo.testing import CompileCounterWithBackend
    from functorch.compile import make_boxed_func
    torch.manual_seed(0)
    eager = SimAMBlock(backend).to(DEVICE)
    compiled = SimAMBlock(backend).to(DEVICE)
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 8, 8, device=DEVICE).contiguous(memory_format=torch.channels_last)

    explanation = torch._dynamo.explain(compiled)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    graphs = []

    def keep(graph, example_inputs):
        graphs.append(str(graph.code))
        return make_boxed_func(graph.forward)

    counter = CompileCounterWithBackend(aot_autograd(fw_compiler=keep, bw_compiler=keep))
    torch._dynamo.reset()
    for expected, actual in zip(train_step(eager, x), train_step(torch.compile(compiled, backend=counter,
                                                                                fullgraph=True), x)):
        torch.testing.assert_close(actual, expected)
    assert counter.frame_count == 1
    forward, backward = graphs
    assert 'involution_mm.simam.default' in forward and 'involution_mm.simam_backward.default' in backward
    # the standard aot_eager backend, as users pick it, gives the same gradients
    torch._dynamo.reset()
    for expected, actual in zip(train_step(eager, x), train_step(torch.compile(compiled, backend='aot_eager',
                                                                                fullgraph=True), x)):
        torch.testing.assert_close(actual, expected)


def test_autograd_saves_only_the_input():
    saved = []
    x = torch.randn(2, 3, 4, 4, dtype=torch.float16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        simam(x, 0.1)
    assert len(saved) == 1 and saved[0] is x


def test_gradients_and_second_order_gradients_in_float64():
    x = (torch.randn(2, 3, 4, 5, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: simam(t, 0.1), (x, ))
    assert torch.autograd.gradgradcheck(lambda t: simam(t, 0.1), (x, ))


def test_dtype_under_autocast_is_the_input_dtype():
    x = torch.randn(2, 3, 5, 5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert simam(x, 0.1).dtype == torch.float32  # as the formula: autocast does not touch SimAM
        assert simam(x.bfloat16(), 0.1).dtype == torch.bfloat16


def test_auto_runs_the_formula_on_cpu(monkeypatch):
    def fail():
        raise AssertionError('the Triton kernels were imported')

    monkeypatch.setattr(type(simam_module._TRITON), 'module', property(lambda kernels: fail()))
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(simam(x, 0.1), simam_formula(x, 0.1))
    torch.testing.assert_close(SimAM(e_lambda=0.1)(x), simam_formula(x, 0.1))


def test_forcing_triton_where_it_cannot_run_says_why(monkeypatch):
    x = torch.randn(1, 2, 3, 3)
    with pytest.raises(RuntimeError, match="backend='pytorch'"):
        simam(x.double(), 0.1, backend='triton')
    huge = torch.empty(1, 2**12, 2**10, 2**9, device='meta')  # 2**31 values in one sample
    assert 'fewer than 2**31 values per sample' in simam_module._unsupported(huge)
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.setattr(simam_module._TRITON, 'statuses', {})
    monkeypatch.setattr(simam_module.SIMAM, 'verdicts', {})
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
        simam(x, 0.1, backend='triton')


@pytest.mark.parametrize('call, error, message', [
    (lambda: simam(torch.randn(2, 3, 4), 0.1), ValueError, r'\(B, C, H, W\), got \(2, 3, 4\)'),
    (lambda: simam(torch.ones(1, 1, 2, 2, dtype=torch.int64), 0.1), ValueError, 'floating-point'),
    (lambda: simam(torch.randn(1, 1, 2, 2), '0.1'), TypeError, 'positive number'),
    (lambda: simam(torch.randn(1, 1, 2, 2), 0.1, backend='cuda'), ValueError, 'unknown SimAM backend'),
])
def test_op_argument_errors(call, error, message):
    with pytest.raises(error, match=message) as info:
        call()
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(e_lambda='0.1'), TypeError, "e_lambda must be a positive number such as 0.1, got str '0.1'"),
    (dict(e_lambda=None), TypeError, 'e_lambda must be a positive number'),
    (dict(e_lambda=True), TypeError, 'e_lambda must be a positive number'),
    (dict(e_lambda=float('nan')), ValueError, 'e_lambda > 0 and finite'),
    (dict(e_lambda=float('inf')), ValueError, 'e_lambda > 0 and finite'),
    (dict(in_channels='64'), TypeError, "in_channels must be an int or None, got str '64'"),
    (dict(in_channels=64.0), TypeError, 'in_channels must be an int or None'),
    (dict(in_channels=0), ValueError, 'in_channels must be at least 1'),
    (dict(backend='cuda'), ValueError, "unknown SimAM backend 'cuda': choose one of"),
    (dict(backend=None), TypeError, 'backend must be one of'),
])
def test_layer_constructor_errors(kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        SimAM(**kwargs)
    assert '\n' not in str(info.value)


def test_layer_backend_and_state():
    layer = SimAM(in_channels=8, e_lambda=0.1, backend='pytorch')
    assert repr(layer) == "SimAM(in_channels=8, e_lambda=0.1, backend='pytorch')"
    assert layer.state_dict() == {} and 'backend' not in repr(SimAM())


# On a GPU: 'auto' takes the fused kernels, at the shapes of SimAM-ResNet-50 and on large planes.

@needs_cuda
def test_auto_takes_the_fused_kernels_on_cuda(monkeypatch):
    assert simam_module.triton_status(DEVICE) == (True, 'Triton can start on this device')
    assert simam_module.SIMAM.verdict(DEVICE, torch.float32, 'float32').runs

    def fail(*args):
        raise AssertionError('the formula ran')

    x = torch.randn(2, 8, 6, 6, device=DEVICE, requires_grad=True)
    simam(x, 0.1).sum().backward()  # the first call of each variant is checked against the formula
    monkeypatch.setattr(simam_module, 'simam_formula', fail)
    monkeypatch.setattr(simam_module, 'simam_formula_backward', fail)
    simam(x, 0.1).sum().backward()


@needs_cuda
@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape', [(4, 64, 56, 56), (4, 128, 28, 28), (4, 256, 14, 14), (4, 512, 7, 7),
                                   (2, 8, 100, 120)])
def test_fused_kernels_at_network_shapes(layout, dtype, shape):
    check_against_formula(*make_inputs(shape, dtype, LAYOUTS[layout]), backend='auto')


@needs_cuda
def test_a_simam_block_compiles_with_inductor():
    torch.manual_seed(0)
    eager = SimAMBlock('auto').to(DEVICE)
    x = torch.randn(2, 3, 16, 16, device=DEVICE).contiguous(memory_format=torch.channels_last)
    expected = train_step(eager, x)
    for e, a in zip(expected, train_step(torch.compile(eager, fullgraph=True), x)):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)
