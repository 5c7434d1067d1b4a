"""The autograd Function each backend runs through: the backend supplies a forward and a backward."""
from typing import Callable, Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from .geometry import Geometry, check_inputs

Forward = Callable[[torch.Tensor, torch.Tensor, Geometry], torch.Tensor]
# (grad_out, x, weight, geo, need_x_grad, need_weight_grad) -> (grad_x or None, grad_weight or None)
Backward = Callable[..., Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]


def involution_function(name: str, forward: Forward, backward: Backward) -> type:
    """An ``autograd.Function`` called ``name`` that runs a backend's ``forward`` and ``backward``.

    The backward computes only the gradients autograd asks for. The Function takes (h, w) int pairs rather
    than a Geometry, so that ``torch.jit.trace`` (and the FLOP counters built on it, which know it by
    ``name``) can record the call; ``run(x, weight, geo)`` applies it to checked inputs.
    """

    def forward_pass(ctx, x: torch.Tensor, weight: torch.Tensor, stride: tuple, padding: tuple,
                     dilation: tuple) -> torch.Tensor:
        ctx.geo = check_inputs(x, weight, stride, padding, dilation)
        ctx.save_for_backward(x, weight)
        return forward(x, weight, ctx.geo)

    @once_differentiable
    def backward_pass(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        return tuple(backward(grad_out, x, weight, ctx.geo, *ctx.needs_input_grad[:2])) + (None, None, None)

    def run(cls, x: torch.Tensor, weight: torch.Tensor, geo: Geometry) -> torch.Tensor:
        return cls.apply(x, weight, geo.stride, geo.padding, geo.dilation)

    return type(name, (torch.autograd.Function, ), {
        '__doc__': f'Autograd Function of the involution op running ``{forward.__module__}``.',
        'forward': staticmethod(forward_pass),
        'backward': staticmethod(backward_pass),
        'run': classmethod(run),
    })
