"""The CuPy backend on a real GPU against the PyTorch backend on the same GPU. Skipped without CUDA or CuPy."""
import pytest
import torch
from op_cases import SHAPES, make_inputs, memory_layouts

from involution_mm.ops import cupy_backend, involution, select_backend
from involution_mm.ops.cuda_tiling import as_layout
from involution_mm.ops.cupy_backend import compiled_kernels, import_cupy
from involution_mm.ops.library import backward_input_op, backward_weight_op, involution_op

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or import_cupy()[0] is None,
                                reason='needs a CUDA GPU and CuPy (cupy-cuda12x or cupy-cuda13x)')
TOLERANCES = {torch.float64: 1e-7, torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def cuda_inputs(shape, dtype):
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation)
    return x.to('cuda', dtype), weight.to('cuda', dtype)


def forward_backward(x, weight, stride, padding, dilation, backend):
    x, weight = x.detach().requires_grad_(True), weight.detach().requires_grad_(True)
    out = involution(x, weight, stride, padding, dilation, backend=backend)
    grad = torch.linspace(-1, 1, out.numel(), device=out.device).view(out.shape).to(out.dtype)
    return (out, ) + torch.autograd.grad(out, (x, weight), grad)


def assert_same(got, want, dtype, scale_from):
    tol = TOLERANCES[dtype]
    for g, w, s, name in zip(got, want, scale_from, ('out', 'grad_x', 'grad_w')):
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.double(), w.double(), rtol=2 * tol,
                                   atol=2 * tol * s.double().abs().max().item(), msg=name)


@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('shape', SHAPES)
def test_cupy_matches_pytorch_backend(shape, dtype):
    stride, padding, dilation = shape[-3:]
    x, weight = cuda_inputs(shape, dtype)
    exact = forward_backward(x.double(), weight.double(), stride, padding, dilation, 'pytorch')
    assert_same(forward_backward(x, weight, stride, padding, dilation, 'cupy'),
                forward_backward(x, weight, stride, padding, dilation, 'pytorch'), dtype, exact)


@pytest.mark.parametrize('shape', [SHAPES[1], SHAPES[3], SHAPES[4], SHAPES[6]])
def test_gradcheck_float64(shape):
    batch, channels, size, groups, kernel, stride, padding, dilation = shape
    x, weight = (t.cuda().requires_grad_(True)
                 for t in make_inputs(1, channels, (5, 6), groups, kernel, stride, padding, dilation))
    assert torch.autograd.gradcheck(lambda a, b: involution(a, b, stride, padding, dilation, backend='cupy'),
                                    (x, weight))


@pytest.mark.parametrize('layout', ['channels_last', 'strided'])
@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('shape', [SHAPES[1], SHAPES[3], SHAPES[6]])
def test_every_variant_matches_pytorch_backend(shape, dtype, layout):
    """The channel-vector kernels (NHWC maps, weights as a channels_last span conv's view, the gradient NHWC)
    and the row kernels with run-time strides, against the PyTorch backend on the same inputs."""
    stride, padding, dilation = shape[-3:]
    x, weight = cuda_inputs(shape, dtype)
    exact = forward_backward(x.double(), weight.double(), stride, padding, dilation, 'pytorch')
    x_in, w_in = as_layout(x, layout), as_layout(weight, layout)
    x_in, w_in = x_in.detach().requires_grad_(True), w_in.detach().requires_grad_(True)
    out = involution(x_in, w_in, stride, padding, dilation, backend='cupy')
    grad = as_layout(torch.linspace(-1, 1, out.numel(), device='cuda').view(out.shape).to(dtype), layout)
    got = (out, ) + torch.autograd.grad(out, (x_in, w_in), grad)
    want = forward_backward(x, weight, stride, padding, dilation, 'pytorch')
    assert_same(got, want, dtype, exact)
    variants = {plan.spec.channels_last for key, plan in cupy_backend._PLANS.items()
                if key[1].in_size == x.shape[2:] and key[2] == dtype and key[3] == x_in.stride()}
    assert variants == {layout == 'channels_last'}


def test_auto_picks_cupy_for_cuda_tensors():
    x, _ = cuda_inputs(SHAPES[0], torch.float32)
    assert select_backend(x) == 'cupy'


@pytest.mark.parametrize('autocast_dtype', [torch.float16, torch.bfloat16])
def test_autocast(autocast_dtype):
    x, weight = cuda_inputs(SHAPES[1], torch.float32)
    with torch.autocast('cuda', dtype=autocast_dtype):
        out = involution(x, weight, 1, 3, backend='cupy')
    assert out.dtype == autocast_dtype
    want = involution(x.to(autocast_dtype), weight.to(autocast_dtype), 1, 3, backend='pytorch')
    torch.testing.assert_close(out, want, rtol=2 * TOLERANCES[autocast_dtype],
                               atol=2 * TOLERANCES[autocast_dtype] * want.abs().max().item())


def test_channels_last_and_non_contiguous():
    x, weight = cuda_inputs((2, 32, (9, 10), 2, 7, 2, 3, 1), torch.float32)
    want = forward_backward(x, weight, 2, 3, 1, 'pytorch')
    for x_in, w_in in memory_layouts(x, weight).values():
        assert_same(forward_backward(x_in, w_in, 2, 3, 1, 'cupy'), want, torch.float32, want)
    out = involution(x.to(memory_format=torch.channels_last), weight, 2, 3, backend='cupy')
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_runs_on_the_current_stream():
    """Inputs made on a side stream behind a long sleep: a kernel on any other stream would read them early."""
    x, weight = cuda_inputs(SHAPES[1], torch.float32)
    want = involution(x, weight, 1, 3, backend='pytorch')
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        x_late = x * 1
        out = involution(x_late, weight, 1, 3, backend='cupy')
    side.synchronize()
    torch.testing.assert_close(out, want)


def test_compiled_once_per_shape_class():
    """A geometry no other test uses (5x3 kernels, padding (2, 1)), so the counts do not depend on which tests
    ran before in the process."""
    def run(batch, height, width, dtype):
        x = torch.randn(batch, 32, height, width, device='cuda', dtype=dtype)
        weight = torch.randn(batch, 2, 5, 3, height, width, device='cuda', dtype=dtype)
        involution(x, weight, 1, (2, 1), backend='cupy')

    before = compiled_kernels.cache_info().misses
    run(2, 9, 7, torch.float16)
    assert compiled_kernels.cache_info().misses == before + 1
    for batch, height, width in ((1, 11, 12), (3, 6, 9)):  # other batch and spatial sizes keep the class
        run(batch, height, width, torch.float16)
    assert compiled_kernels.cache_info().misses == before + 1
    run(2, 9, 7, torch.float32)  # another dtype is another class
    assert compiled_kernels.cache_info().misses == before + 2


def test_opcheck_on_cuda():
    x, weight = cuda_inputs(SHAPES[3], torch.float32)
    grad = torch.randn(2, 32, 6, 7, device='cuda')
    config = ((2, 2), (3, 3), (1, 1), 'cupy')
    for op, args in ((involution_op, (x, weight) + config),
                     (backward_input_op, (grad, weight, (11, 13)) + config),
                     (backward_weight_op, (grad, x, 2, (7, 7)) + config)):
        args = tuple(a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
        assert set(torch.library.opcheck(op, args).values()) == {'SUCCESS'}, op


def test_cuda_graph_capture_and_replay():
    """Forward and both gradients captured in a CUDA graph (no host syncs, outputs from PyTorch's allocator),
    then replayed on new inputs copied into the captured ones."""
    x, weight = (t.requires_grad_(True) for t in cuda_inputs(SHAPES[1], torch.float16))
    grad = torch.randn(2, 32, 9, 7, device='cuda', dtype=torch.float16)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up: kernels compiled and launches planned before the capture
        for _ in range(2):
            torch.autograd.grad(involution(x, weight, 1, 3, backend='cupy'), (x, weight), grad)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = involution(x, weight, 1, 3, backend='cupy')
        grad_x, grad_w = torch.autograd.grad(out, (x, weight), grad)
    new_x, new_w = cuda_inputs(SHAPES[1], torch.float16)
    new_x, new_w = new_x * 0.5 + 1, new_w.flip(0)
    with torch.no_grad():
        x.copy_(new_x)
        weight.copy_(new_w)
    graph.replay()
    want = forward_backward(new_x, new_w, 1, 3, 1, 'pytorch')
    assert_same((out, grad_x, grad_w), want, torch.float16, want)


def test_compile_reduce_overhead():
    """torch.compile's CUDA-graph mode around the op (Inductor), against eager."""
    x, weight = cuda_inputs(SHAPES[1], torch.float16)
    compiled = torch.compile(lambda a, b: involution(a, b, 1, 3).relu(), mode='reduce-overhead', fullgraph=True)
    for _ in range(3):
        got = compiled(x, weight)
    torch.testing.assert_close(got, involution(x, weight, 1, 3, backend='pytorch').relu(), rtol=2e-3, atol=2e-3)


def test_rednet_stage_one_size_launches():
    """A RedNet-50 stage-1 batch: grids of hundreds of thousands of threads, 256 per block."""
    x = torch.randn(16, 64, 56, 56, device='cuda', dtype=torch.float16)
    weight = torch.randn(16, 4, 7, 7, 56, 56, device='cuda', dtype=torch.float16)
    got = forward_backward(x, weight, 1, 3, 1, 'cupy')
    want = forward_backward(x, weight, 1, 3, 1, 'pytorch')
    assert_same(got, want, torch.float16, want)
    assert cupy_backend.resident_threads(0) >= 2048
