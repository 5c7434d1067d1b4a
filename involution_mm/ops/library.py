"""The involution operators, registered with ``torch.library`` under the namespace ``involution_mm``.

    involution_mm::involution(x, weight, stride, padding, dilation, backend) -> out
    involution_mm::involution_backward_input(grad_out, weight, input_size, stride, padding, dilation,
                                             backend) -> grad_x
    involution_mm::involution_backward_weight(grad_out, x, groups, kernel_size, stride, padding, dilation,
                                              backend) -> grad_weight

Each runs the named backend's kernel (``backends.py``; ``'auto'`` is resolved per device and dtype), has a
fake implementation with the sizes and strides of the real outputs (for ``torch.compile``, ``torch.export``
and meta tensors), and an autograd formula. The op is linear in each of its inputs and the three ops are each
other's adjoints, so every gradient is again one of the three ops, to any order (double backward included):

    d out    = F(dx, w) + F(x, dw)                 F  = involution
    d grad_x = F(da, w)... see _backward_input     Bi = backward_input, Bw = backward_weight

The ops expect checked inputs: ``involution_mm.ops.involution`` validates them once and calls these.
"""
from typing import Sequence

import torch

from .backends import kernels_for
from .geometry import Geometry, output_memory_format

_LIBRARY = torch.library.Library('involution_mm', 'FRAGMENT')  # the namespace is shared with the fused ops
_FORWARD_SCHEMA = '(Tensor x, Tensor weight, int[2] stride, int[2] padding, int[2] dilation, str backend) -> Tensor'
_INPUT_SCHEMA = ('(Tensor grad_out, Tensor weight, SymInt[2] input_size, int[2] stride, int[2] padding, '
                 'int[2] dilation, str backend) -> Tensor')
_WEIGHT_SCHEMA = ('(Tensor grad_out, Tensor x, SymInt groups, SymInt[2] kernel_size, int[2] stride, '
                  'int[2] padding, int[2] dilation, str backend) -> Tensor')


def _geometry(batch, channels, groups, in_size, out_size, kernel, stride, padding, dilation) -> Geometry:
    return Geometry(batch, channels, groups, tuple(in_size), tuple(out_size), tuple(kernel), tuple(stride),
                    tuple(padding), tuple(dilation))


def _involution(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                  dilation: Sequence[int], backend: str) -> torch.Tensor:
    """``out[b, c, h, w] = sum_ij weight[b, c // (C / G), i, j, h, w] * x[b, c, tap(h, i), tap(w, j)]``."""
    geo = _geometry(x.shape[0], x.shape[1], weight.shape[1], x.shape[2:], weight.shape[4:], weight.shape[2:4],
                    stride, padding, dilation)
    return kernels_for(x, backend).forward(x, weight, geo)


def _backward_input(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Sequence[int],
                      stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                      backend: str) -> torch.Tensor:
    """The gradient of ``involution`` for ``x`` (of spatial size ``input_size``), in ``grad_out``'s layout."""
    geo = _geometry(grad_out.shape[0], grad_out.shape[1], weight.shape[1], input_size, grad_out.shape[2:],
                    weight.shape[2:4], stride, padding, dilation)
    return kernels_for(grad_out, backend).grad_input(grad_out, weight, geo)


def _backward_weight(grad_out: torch.Tensor, x: torch.Tensor, groups: int, kernel_size: Sequence[int],
                       stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                       backend: str) -> torch.Tensor:
    """The gradient of ``involution`` for its kernels (contiguous)."""
    geo = _geometry(x.shape[0], x.shape[1], groups, x.shape[2:], grad_out.shape[2:], kernel_size, stride,
                    padding, dilation)
    return kernels_for(x, backend).grad_weight(grad_out, x, geo)


def _define(name: str, schema: str, implementation) -> torch._ops.OpOverload:
    """Define ``involution_mm::name`` with its CPU and CUDA implementation; returns the op."""
    _LIBRARY.define(name + schema)
    for device in ('CPU', 'CUDA'):
        _LIBRARY.impl(name, implementation, device)
    return getattr(torch.ops.involution_mm, name).default


involution_op = _define('involution', _FORWARD_SCHEMA, _involution)
backward_input_op = _define('involution_backward_input', _INPUT_SCHEMA, _backward_input)
backward_weight_op = _define('involution_backward_weight', _WEIGHT_SCHEMA, _backward_weight)


# Fake implementations: the real outputs' sizes and strides, without computing anything.

def _empty(size, like: torch.Tensor, memory_format=torch.contiguous_format) -> torch.Tensor:
    return torch.empty(size, dtype=like.dtype, device=like.device, memory_format=memory_format)


@torch.library.register_fake(involution_op, lib=_LIBRARY)
def _involution_fake(x, weight, stride, padding, dilation, backend):
    return _empty((x.shape[0], x.shape[1], weight.shape[4], weight.shape[5]), x, output_memory_format(x))


@torch.library.register_fake(backward_input_op, lib=_LIBRARY)
def _backward_input_fake(grad_out, weight, input_size, stride, padding, dilation, backend):
    return _empty((grad_out.shape[0], grad_out.shape[1], input_size[0], input_size[1]), grad_out,
                  output_memory_format(grad_out))


@torch.library.register_fake(backward_weight_op, lib=_LIBRARY)
def _backward_weight_fake(grad_out, x, groups, kernel_size, stride, padding, dilation, backend):
    return _empty((x.shape[0], groups, kernel_size[0], kernel_size[1], grad_out.shape[2], grad_out.shape[3]), x)


# Autograd. With F = involution(x, w), Bi = backward_input(g, w) and Bw = backward_weight(g, x):
#   <F(x, w), g> = <x, Bi(g, w)> = <w, Bw(g, x)>,
# so the gradients of each op are the other two, and gradients of gradients are again these ops.

def _setup_forward(ctx, inputs, output):
    x, weight, *ctx.config = inputs  # config: stride, padding, dilation, backend
    ctx.save_for_backward(x, weight)


def _forward_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    grad_x = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_x = backward_input_op(grad, weight, x.shape[2:], *ctx.config)
    if ctx.needs_input_grad[1]:
        grad_weight = backward_weight_op(grad, x, weight.shape[1], weight.shape[2:4], *ctx.config)
    return grad_x, grad_weight, None, None, None, None


def _setup_backward_input(ctx, inputs, output):
    grad_out, weight, _, *ctx.config = inputs
    ctx.save_for_backward(grad_out, weight)


def _backward_input_backward(ctx, grad_grad_x):
    grad_out, weight = ctx.saved_tensors
    grad_grad_out = grad_weight = None
    if ctx.needs_input_grad[0]:  # Bi is linear in g: <Bi(g, w), a> = <g, F(a, w)>
        grad_grad_out = involution_op(grad_grad_x, weight, *ctx.config)
    if ctx.needs_input_grad[1]:  # and in w: <Bi(g, w), a> = <w, Bw(g, a)>
        grad_weight = backward_weight_op(grad_out, grad_grad_x, weight.shape[1], weight.shape[2:4], *ctx.config)
    return grad_grad_out, grad_weight, None, None, None, None, None


def _setup_backward_weight(ctx, inputs, output):
    grad_out, x, _, _, *ctx.config = inputs
    ctx.save_for_backward(grad_out, x)


def _backward_weight_backward(ctx, grad_grad_weight):
    grad_out, x = ctx.saved_tensors
    grad_grad_out = grad_x = None
    if ctx.needs_input_grad[0]:  # <Bw(g, x), c> = <g, F(x, c)>
        grad_grad_out = involution_op(x, grad_grad_weight, *ctx.config)
    if ctx.needs_input_grad[1]:  # <Bw(g, x), c> = <x, Bi(g, c)>
        grad_x = backward_input_op(grad_out, grad_grad_weight, x.shape[2:], *ctx.config)
    return grad_grad_out, grad_x, None, None, None, None, None, None


for _op, _backward, _setup in ((involution_op, _forward_backward, _setup_forward),
                               (backward_input_op, _backward_input_backward, _setup_backward_input),
                               (backward_weight_op, _backward_weight_backward, _setup_backward_weight)):
    torch.library.register_autograd(_op, _backward, setup_context=_setup, lib=_LIBRARY)
