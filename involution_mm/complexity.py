"""Parameters and FLOPs of models that contain involutions, with mmengine's FlopAnalyzer.

The upstream counters trace the model and count the operators they know (convs, linear layers, norms...).
The involution aggregation is a custom operator (``involution_mm::involution``), unknown to them, so we
register a handle for it:
one multiply-accumulate per kernel tap and output element, ``B * C * H_out * W_out * K_h * K_w``, the
convention the counters use for convolutions. The kernel-generation convs are ordinary convs and counted as
such.
"""
import math
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape

# The traced name of the aggregation, whichever backend runs it.
INVOLUTION_OPS = ('involution_mm::involution', )


def involution_flop_jit(inputs: list, outputs: list) -> int:
    """FlopAnalyzer handle: multiply-accumulates of the involution aggregation."""
    out_shape, weight_shape = get_shape(outputs[0]), get_shape(inputs[1])
    return math.prod(out_shape) * weight_shape[2] * weight_shape[3]


def flop_analyzer(model: nn.Module, inputs: Tuple[Any, ...]) -> FlopAnalyzer:
    """mmengine's FlopAnalyzer for ``model(*inputs)``, knowing the involution op."""
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**{op: involution_flop_jit for op in INVOLUTION_OPS})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def model_complexity(model: nn.Module, inputs: Tuple[Any, ...]) -> Dict[str, Any]:
    """``flops`` (multiply-accumulates), ``params`` and ``trainable_params`` of ``model(*inputs)``, FLOPs per
    operator, and the traced operators that were not counted (``uncounted``: name -> number of calls).

    ``trainable_params`` leaves out frozen parameters (``requires_grad=False``, e.g. ``frozen_stages``), as
    the parameter counts published for the detectors do."""
    analyzer = flop_analyzer(model, inputs)
    with torch.no_grad():
        flops = analyzer.total()
    return dict(flops=flops, params=parameter_count(model)[''],
                trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                by_operator=dict(analyzer.by_operator()), uncounted=dict(analyzer.unsupported_ops()))
