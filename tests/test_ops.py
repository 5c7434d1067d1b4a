"""The involution op against the unfold formula, its gradients, dtypes, layouts, memory and errors."""
import pytest
import torch
from op_cases import SHAPES, make_inputs, memory_layouts, pair, unfold_reference

from involution_mm.ops import available_backends, involution, select_backend
from involution_mm.profiling import peak_memory_bytes


@pytest.mark.parametrize('shape', SHAPES)
def test_forward_and_gradients_match_unfold(shape):
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    out = involution(x, weight, stride, padding, dilation)
    expected = unfold_reference(x, weight, pair(stride), pair(padding), pair(dilation))
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, (x, weight), grad),
                               torch.autograd.grad(expected, (x, weight), grad))


@pytest.mark.parametrize('shape', [SHAPES[1], SHAPES[3], SHAPES[4], SHAPES[6]])
def test_gradcheck_float64(shape):
    batch, channels, size, groups, kernel, stride, padding, dilation = shape
    x, weight = make_inputs(1, channels // 2 if channels % (2 * groups) == 0 else channels, (5, 6), groups,
                            kernel, stride, padding, dilation)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: involution(a, b, stride, padding, dilation), (x, weight))


def test_only_requested_gradients_are_computed():
    x, weight = make_inputs(1, 8, (6, 6), 2, 3, 1, 1, 1)
    weight.requires_grad_(True)
    out = involution(x, weight, 1, 1)
    (grad_w, ) = torch.autograd.grad(out.sum(), weight)
    expected = unfold_reference(x, weight, (1, 1), (1, 1), (1, 1))
    torch.testing.assert_close(grad_w, torch.autograd.grad(expected.sum(), weight)[0])
    assert x.grad is None


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize('shape', [SHAPES[1], SHAPES[3], SHAPES[4]])
def test_low_precision_against_float32(dtype, tol, shape):
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation, dtype=torch.float32)
    x, weight = x.to(dtype).requires_grad_(True), weight.to(dtype).requires_grad_(True)
    # The float32 result on the same (rounded) values: only the accumulation and the output rounding differ.
    x32, w32 = x.detach().float().requires_grad_(True), weight.detach().float().requires_grad_(True)
    out, out32 = involution(x, weight, stride, padding, dilation), involution(x32, w32, stride, padding, dilation)
    assert out.dtype == dtype
    scale = out32.abs().max().item()
    torch.testing.assert_close(out.float(), out32, rtol=tol, atol=tol * scale)
    grad = torch.randn_like(out32)
    for got, want in zip(torch.autograd.grad(out, (x, weight), grad.to(dtype)),
                         torch.autograd.grad(out32, (x32, w32), grad)):
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol * want.abs().max().item())


def test_channels_last_and_non_contiguous_inputs():
    x, weight = make_inputs(2, 32, (9, 10), 2, 7, 2, 3, 1)
    expected = unfold_reference(x, weight, (2, 2), (3, 3), (1, 1))
    layouts = memory_layouts(x, weight)
    for name, (x_in, w_in) in layouts.items():
        x_in = x_in.detach().requires_grad_(True)
        w_in = w_in.detach().requires_grad_(True)
        out = involution(x_in, w_in, 2, 3)
        torch.testing.assert_close(out, expected, msg=name)
        out.sum().backward()
        ref_x, ref_w = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        unfold_reference(ref_x, ref_w, (2, 2), (3, 3), (1, 1)).sum().backward()
        torch.testing.assert_close(x_in.grad, ref_x.grad, msg=name)
        torch.testing.assert_close(w_in.grad, ref_w.grad, msg=name)
    assert involution(*layouts['channels_last'], 2, 3).is_contiguous(memory_format=torch.channels_last)


def test_autocast_casts_both_inputs():
    x, weight = make_inputs(1, 16, (6, 6), 1, 3, 1, 1, 1, dtype=torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = involution(x, weight.to(torch.bfloat16), 1, 1)
    assert out.dtype == torch.bfloat16
    expected = involution(x.bfloat16().float(), weight.bfloat16().float(), 1, 1)
    torch.testing.assert_close(out.float(), expected, rtol=1.6e-2, atol=1.6e-2 * expected.abs().max().item())


def test_never_materialises_the_unfolded_tensor():
    x, weight = make_inputs(2, 64, (24, 24), 4, 7, 1, 3, 1, dtype=torch.float32)
    x.requires_grad_(True)
    weight.requires_grad_(True)

    def forward_backward(op):
        out = op()
        out.backward(torch.ones_like(out))

    unfolded_bytes = x.numel() * 49 * 4
    ours = peak_memory_bytes(lambda: forward_backward(lambda: involution(x, weight, 1, 3)), x.device)
    # output, one reused product buffer, the ones() gradient and the two gradients: about 3 x + w
    assert ours <= 4 * x.numel() * 4 + weight.numel() * 4 < unfolded_bytes
    x.grad = weight.grad = None
    naive = peak_memory_bytes(
        lambda: forward_backward(lambda: unfold_reference(x, weight, (1, 1), (3, 3), (1, 1))), x.device)
    assert naive >= unfolded_bytes  # the measurement does see a K*K-times larger tensor when there is one


@pytest.mark.parametrize('make_bad,message', [
    (lambda x, w: (x[:, :15], w), 'must be divisible by groups'),
    (lambda x, w: (x, w[..., :5, :]), 'weight must have shape (2, 4, 3, 3, 6, 6)'),
    (lambda x, w: (x[0], w), '3-d tensor of shape (16, 6, 6)'),
    (lambda x, w: (x, w[0]), '5-d tensor of shape (4, 3, 3, 6, 6)'),
    (lambda x, w: (x, w.double()), 'must share dtype and device'),
    (lambda x, w: (x, w.to('meta')), 'must share dtype and device'),
    (lambda x, w: (x.long(), w.long()), 'floating-point'),
    (lambda x, w: (x[:, :, :1, :1], w), 'too small for kernel'),
])
def test_bad_inputs_raise_value_error(make_bad, message):
    x, weight = make_inputs(2, 16, (6, 6), 4, 3, 1, 1, 1, dtype=torch.float32)
    bad_x, bad_w = make_bad(x, weight)
    padding = 0 if message == 'too small for kernel' else 1
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
        involution(bad_x, bad_w, 1, padding)


@pytest.mark.parametrize('kwargs,message', [
    (dict(stride=0), 'stride and dilation must be >= 1'),
    (dict(padding=(1, 2, 3)), 'padding must be an int or a pair'),
    (dict(dilation=1.5), 'dilation must be an int or a pair'),
    (dict(backend='triton-please'), "unknown involution backend 'triton-please'"),
])
def test_bad_arguments(kwargs, message):
    x, weight = make_inputs(1, 16, (6, 6), 4, 3, 1, 1, 1, dtype=torch.float32)
    with pytest.raises(ValueError, match=message):
        involution(x, weight, **{'padding': 1, **kwargs})


@pytest.mark.parametrize('backend', [3, None, ['pytorch']])
def test_a_backend_that_is_not_a_string_is_refused(backend):
    x, weight = make_inputs(1, 16, (6, 6), 4, 3, 1, 1, 1, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"involution backend must be a string \('auto' or one of \['cpu', 'cupy', "):
        involution(x, weight, padding=1, backend=backend)


def test_backend_selection():
    x, weight = make_inputs(1, 8, (6, 6), 2, 3, 1, 1, 1)
    assert 'pytorch' in available_backends()
    assert select_backend(x) in ('cpu', 'pytorch')  # the compiled CPU kernels where built (test_cpu_kernels.py)
    torch.testing.assert_close(involution(x, weight, 1, 1, backend='pytorch'), involution(x, weight, 1, 1))


@pytest.mark.parametrize('shape', SHAPES)
def test_standard_op_formulation_matches_unfold(shape):
    """What ONNX export records instead of the custom op (ops/composite.py)."""
    from involution_mm.ops.composite import involution_composite
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation)
    torch.testing.assert_close(involution_composite(x, weight, pair(stride), pair(padding), pair(dilation)),
                               unfold_reference(x, weight, pair(stride), pair(padding), pair(dilation)))
