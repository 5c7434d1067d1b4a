"""Involution inputs and the unfold reference shared by the op tests of every backend."""
import torch
import torch.nn.functional as F


def unfold_reference(x, weight, stride, padding, dilation):
    """The naive formula: unfold every K x K neighbourhood, weight it, sum it."""
    batch, channels = x.shape[:2]
    groups, k_h, k_w, out_h, out_w = weight.shape[1:]
    cols = F.unfold(x, (k_h, k_w), dilation=dilation, padding=padding, stride=stride)
    cols = cols.view(batch, groups, channels // groups, k_h, k_w, out_h, out_w)
    return (cols * weight.unsqueeze(2)).sum((3, 4)).view(batch, channels, out_h, out_w)


def pair(v):
    return (v, v) if isinstance(v, int) else v


def make_inputs(batch, channels, size, groups, kernel, stride, padding, dilation, dtype=torch.float64,
                seed=0):
    gen = torch.Generator().manual_seed(seed)
    (h, w), (k_h, k_w) = pair(size), pair(kernel)
    (s_h, s_w), (p_h, p_w), (d_h, d_w) = pair(stride), pair(padding), pair(dilation)
    out_h = (h + 2 * p_h - d_h * (k_h - 1) - 1) // s_h + 1
    out_w = (w + 2 * p_w - d_w * (k_w - 1) - 1) // s_w + 1
    x = torch.randn(batch, channels, h, w, generator=gen, dtype=dtype)
    weight = torch.randn(batch, groups, k_h, k_w, out_h, out_w, generator=gen, dtype=dtype)
    return x, weight


# (batch, channels, (H, W), groups, kernel, stride, padding, dilation)
SHAPES = [
    (2, 16, (8, 8), 1, 3, 1, 1, 1),
    (2, 32, (9, 7), 2, 7, 1, 3, 1),  # odd sizes, the RedNet kernel
    (1, 64, (14, 14), 4, 7, 2, 3, 1),  # stride 2, as in a RedNet stage transition
    (2, 32, (11, 13), 2, 7, 2, 3, 1),  # stride 2 on odd sizes
    (1, 24, (10, 9), 3, 3, 1, 2, 2),  # dilation 2
    (1, 8, (12, 10), 2, 5, 3, 0, 1),  # stride 3, no padding
    (2, 12, (7, 9), 4, (3, 5), (1, 2), (1, 2), (2, 1)),  # pairs
    (1, 6, (5, 6), 3, 3, 1, 4, 1),  # padding wider than the kernel reach
    (3, 4, (1, 1), 1, 3, 1, 1, 1),  # a 1x1 map
]


def memory_layouts(x, weight):
    """The same values as ``(x, weight)`` in other memory layouts: name -> (x, weight)."""
    batch, channels, height, width = x.shape
    wide = torch.randn(batch, 2 * channels, height, width, dtype=x.dtype, device=x.device)
    wide[:, ::2] = x
    return {
        'channels_last': (x.to(memory_format=torch.channels_last), weight),
        'strided view': (wide[:, ::2], weight),
        'transposed storage': (x.transpose(2, 3).contiguous().transpose(2, 3),
                               weight.permute(0, 1, 4, 5, 2, 3).contiguous().permute(0, 1, 4, 5, 2, 3)),
    }
