"""The CuPy backend on a real GPU against the PyTorch backend on the same GPU. Skipped without CUDA or CuPy."""
import pytest
import torch
from op_cases import SHAPES, make_inputs, memory_layouts

from involution_mm.ops import cupy_backend, involution, select_backend
from involution_mm.ops.cupy_backend import compiled_kernels, import_cupy

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
    x, weight = cuda_inputs(SHAPES[1], torch.float16)
    involution(x, weight, 1, 3, backend='cupy')
    compiled = compiled_kernels.cache_info().misses
    for batch in (1, 3):  # other batch sizes and spatial sizes keep the class
        x2 = torch.randn(batch, 32, 11, 12, device='cuda', dtype=torch.float16)
        w2 = torch.randn(batch, 2, 7, 7, 11, 12, device='cuda', dtype=torch.float16)
        involution(x2, w2, 1, 3, backend='cupy')
    assert compiled_kernels.cache_info().misses == compiled
    involution(x.float(), weight.float(), 1, 3, backend='cupy')  # another dtype is another class
    assert compiled_kernels.cache_info().misses == compiled + 1


def test_rednet_stage_one_size_launches():
    """A RedNet-50 stage-1 batch: grids of hundreds of thousands of threads, 256 per block."""
    x = torch.randn(16, 64, 56, 56, device='cuda', dtype=torch.float16)
    weight = torch.randn(16, 4, 7, 7, 56, 56, device='cuda', dtype=torch.float16)
    got = forward_backward(x, weight, 1, 3, 1, 'cupy')
    want = forward_backward(x, weight, 1, 3, 1, 'pytorch')
    assert_same(got, want, torch.float16, want)
    assert cupy_backend.resident_threads(0) >= 2048
