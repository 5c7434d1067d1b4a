"""BENCHMARK ONLY, not part of the package: involution in the formulation of the original CuPy kernel
(github.com/d-li14/involution, ``cupy_involution``), written anew for benchmarks/op.py ``--kernels``, to
compare against in the same run (issue 13, item 3).

The formulation: three kernels on contiguous NCHW tensors, one thread per element of the tensor each writes
and 1024 threads per block: the forward sums the K*K taps of one output element, the input gradient gathers
the taps that read one input element, and the weight gradient sums one tap of one position over the channels
of its group. Every value comes from global memory as needed (no reuse in registers), float32 or float64.
Its source compiles for the host too (with ``REFERENCE_ON_HOST`` and a thread loop), where
tests/test_cuda_kernels.py checks it against the PyTorch backend.
"""
import functools

import torch

THREADS_PER_BLOCK = 1024
KERNEL_NAMES = ('reference_forward', 'reference_grad_input', 'reference_grad_weight')
# Constants prepended per geometry: SCALAR (float or double), KERNEL_H/W, STRIDE_H/W, PAD_H/W, DILATION_H/W.
SOURCE = r'''
#ifndef REFERENCE_ON_HOST
#define KERNEL extern "C" __global__ void
#define THREAD_ID ((long long)blockIdx.x * blockDim.x + threadIdx.x)
#endif
#define REFERENCE_PARAMS const SCALAR* a, const SCALAR* b, SCALAR* result, long long total, int channels, \
    int groups, int in_h, int in_w, int out_h, int out_w

// out[n, c, h, w] = sum over taps of weight[n, g, kh, kw, h, w] * x[n, c, h*S - P + kh*D, w*S - P + kw*D]
KERNEL reference_forward(REFERENCE_PARAMS) {
    const long long i = THREAD_ID;
    if (i >= total) return;
    const int w = i % out_w, h = (i / out_w) % out_h, c = (i / out_w / out_h) % channels;
    const long long n = i / out_w / out_h / channels;
    const int g = c / (channels / groups);
    SCALAR sum = 0;
    for (int kh = 0; kh < KERNEL_H; ++kh)
        for (int kw = 0; kw < KERNEL_W; ++kw) {
            const int row = h * STRIDE_H - PAD_H + kh * DILATION_H, col = w * STRIDE_W - PAD_W + kw * DILATION_W;
            if (row < 0 || row >= in_h || col < 0 || col >= in_w) continue;
            const long long tap = ((n * groups + g) * KERNEL_H + kh) * KERNEL_W + kw;
            sum += b[tap * out_h * out_w + h * out_w + w] * a[((n * channels + c) * in_h + row) * in_w + col];
        }
    result[i] = sum;
}

// grad_x[n, c, h, w] = sum over the taps (kh, kw) and output positions that read (h, w)
KERNEL reference_grad_input(REFERENCE_PARAMS) {
    const long long i = THREAD_ID;
    if (i >= total) return;
    const int w = i % in_w, h = (i / in_w) % in_h, c = (i / in_w / in_h) % channels;
    const long long n = i / in_w / in_h / channels;
    const int g = c / (channels / groups);
    SCALAR sum = 0;
    for (int kh = 0; kh < KERNEL_H; ++kh)
        for (int kw = 0; kw < KERNEL_W; ++kw) {
            const int row_s = h + PAD_H - kh * DILATION_H, col_s = w + PAD_W - kw * DILATION_W;
            if (row_s < 0 || col_s < 0 || row_s % STRIDE_H || col_s % STRIDE_W) continue;
            const int row = row_s / STRIDE_H, col = col_s / STRIDE_W;
            if (row >= out_h || col >= out_w) continue;
            const long long tap = ((n * groups + g) * KERNEL_H + kh) * KERNEL_W + kw;
            sum += b[tap * out_h * out_w + row * out_w + col] * a[((n * channels + c) * out_h + row) * out_w + col];
        }
    result[i] = sum;
}

// grad_weight[n, g, kh, kw, h, w] = sum over the channels c of group g of grad_out[n, c, h, w] * x at the tap
KERNEL reference_grad_weight(REFERENCE_PARAMS) {
    const long long i = THREAD_ID;
    if (i >= total) return;
    const int w = i % out_w, h = (i / out_w) % out_h;
    const int kw = (i / out_w / out_h) % KERNEL_W, kh = (i / out_w / out_h / KERNEL_W) % KERNEL_H;
    const int g = (i / out_w / out_h / KERNEL_W / KERNEL_H) % groups;
    const long long n = i / out_w / out_h / KERNEL_W / KERNEL_H / groups;
    const int row = h * STRIDE_H - PAD_H + kh * DILATION_H, col = w * STRIDE_W - PAD_W + kw * DILATION_W;
    SCALAR sum = 0;
    if (row >= 0 && row < in_h && col >= 0 && col < in_w) {
        const int group_channels = channels / groups;
        for (int c = g * group_channels; c < (g + 1) * group_channels; ++c)
            sum += a[((n * channels + c) * out_h + h) * out_w + w] * b[((n * channels + c) * in_h + row) * in_w + col];
    }
    result[i] = sum;
}
'''


def source(dtype: torch.dtype, kernel, stride, padding, dilation) -> str:
    """The kernels' source for one dtype (float32 or float64, as the original) and geometry."""
    scalar = {torch.float32: 'float', torch.float64: 'double'}[dtype]
    defines = dict(SCALAR=scalar, KERNEL_H=kernel[0], KERNEL_W=kernel[1], STRIDE_H=stride[0], STRIDE_W=stride[1],
                   PAD_H=padding[0], PAD_W=padding[1], DILATION_H=dilation[0], DILATION_W=dilation[1])
    return ''.join(f'#define {name} {value}\n' for name, value in defines.items()) + SOURCE


@functools.lru_cache(maxsize=None)
def _kernels(dtype, kernel, stride, padding, dilation, device_index):
    import cupy
    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=source(dtype, kernel, stride, padding, dilation))
        return {name: module.get_function(name) for name in KERNEL_NAMES}


def _launch(name, a, b, result, geometry):
    """One kernel on PyTorch's current stream, a thread per element of ``result``."""
    import cupy
    import numpy as np
    kernel, stride, padding, dilation, sizes = geometry
    device = result.device.index
    total = result.numel()
    function = _kernels(result.dtype, kernel, stride, padding, dilation, device)[name]
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream, device)
    args = (a.data_ptr(), b.data_ptr(), result.data_ptr(), total) + sizes
    with cupy.cuda.Device(device), stream:
        function((-(-total // THREADS_PER_BLOCK), ), (THREADS_PER_BLOCK, ),
                 tuple(np.int64(v) for v in args[:4]) + tuple(np.int32(v) for v in args[4:]))


class ReferenceInvolution(torch.autograd.Function):
    """Forward and backward through the three reference kernels (contiguous copies of the inputs, as the
    original takes)."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation):
        x, weight = x.contiguous(), weight.contiguous()
        batch, channels, in_h, in_w = x.shape
        groups, k_h, k_w, out_h, out_w = weight.shape[1:]
        ctx.geometry = ((k_h, k_w), stride, padding, dilation, (channels, groups, in_h, in_w, out_h, out_w))
        ctx.save_for_backward(x, weight)
        out = x.new_empty(batch, channels, out_h, out_w)
        _launch('reference_forward', x, weight, out, ctx.geometry)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x)
            _launch('reference_grad_input', grad_out, weight, grad_x, ctx.geometry)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.empty_like(weight)
            _launch('reference_grad_weight', grad_out, x, grad_weight, ctx.geometry)
        return grad_x, grad_weight, None, None, None


def reference_involution(x, weight, stride=(1, 1), padding=(3, 3), dilation=(1, 1)):
    """Involution by the original kernel's formulation (CUDA, float32 or float64)."""
    return ReferenceInvolution.apply(x, weight, tuple(stride), tuple(padding), tuple(dilation))
