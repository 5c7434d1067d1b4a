"""The involution op as a PyTorch operator: torch.library registration (opcheck), fake implementations with
the real strides, meta tensors, double backward, torch.export and torch.jit.trace, and fullgraph
torch.compile of the models that use it (aot_eager: the fake implementations and the registered autograd,
without Inductor's compile time)."""
import os.path as osp

import pytest
import torch
import torch._dynamo.testing
from op_cases import SHAPES, make_inputs, memory_layouts, pair, unfold_reference
from torch._subclasses.fake_tensor import FakeTensorMode

from involution_mm.ops import involution
from involution_mm.ops.library import backward_input_op, backward_weight_op, involution_op
from conftest import REPO


def op_arguments(x, weight, stride, padding, dilation):
    """(op, arguments) for the forward op and both backward ops on these inputs."""
    config = (pair(stride), pair(padding), pair(dilation), 'pytorch')
    grad = torch.randn_like(involution(x, weight, stride, padding, dilation))
    return [(involution_op, (x, weight) + config),
            (backward_input_op, (grad, weight, tuple(x.shape[2:])) + config),
            (backward_weight_op, (grad, x, weight.shape[1], tuple(weight.shape[2:4])) + config)]


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'strided view'])
def test_opcheck(layout):
    """Schema, autograd registration, fake tensors and AOT dispatch with dynamic shapes, for each op."""
    x, weight = make_inputs(2, 32, (7, 6), 2, 3, 2, 1, 1, dtype=torch.float32)
    if layout != 'contiguous':
        x, weight = memory_layouts(x, weight)[layout]
    for op, args in op_arguments(x, weight, 2, 1, 1):
        args = tuple(a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
        results = torch.library.opcheck(op, args)
        assert set(results.values()) == {'SUCCESS'}, (op, results)


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'strided view', 'transposed storage'])
def test_fake_outputs_have_the_real_sizes_and_strides(layout):
    x, weight = make_inputs(2, 32, (9, 10), 2, 7, 2, 3, 1, dtype=torch.float32)
    x, weight = memory_layouts(x, weight)[layout] if layout != 'contiguous' else (x, weight)
    for op, args in op_arguments(x, weight, 2, 3, 1):
        real = op(*args)
        with FakeTensorMode() as mode:
            fake = op(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
        assert (fake.shape, fake.stride(), fake.dtype) == (real.shape, real.stride(), real.dtype), op


def test_meta_tensors_give_shapes_like_torch_ops():
    x, weight = make_inputs(2, 32, (9, 10), 2, 7, 2, 3, 1, dtype=torch.float32)
    out = involution(x.to('meta', memory_format=torch.channels_last), weight.to('meta'), 2, 3)
    real = involution(x.to(memory_format=torch.channels_last), weight, 2, 3)
    assert out.device.type == 'meta' and (out.shape, out.stride()) == (real.shape, real.stride())


@pytest.mark.parametrize('shape', [SHAPES[1], SHAPES[3], SHAPES[4], SHAPES[6]])
def test_double_backward_against_the_unfold_formula(shape):
    """Gradients of gradients (a gradient penalty) through the op equal those through the unfold formula,
    and gradgradcheck passes in float64."""
    batch, channels, size, groups, kernel, stride, padding, dilation = shape
    x, weight = make_inputs(1, 2 * groups, (4, 5), groups, kernel, stride, padding, dilation)
    x.requires_grad_(True)
    weight.requires_grad_(True)

    def penalty(op):
        out = op(x, weight)
        grads = torch.autograd.grad((out * out.detach().cos()).sum(), (x, weight), create_graph=True)
        assert all(g.requires_grad for g in grads)
        return torch.autograd.grad(sum((g ** 2).sum() for g in grads), (x, weight))

    ours = penalty(lambda a, b: involution(a, b, stride, padding, dilation))
    unfold = penalty(lambda a, b: unfold_reference(a, b, pair(stride), pair(padding), pair(dilation)))
    torch.testing.assert_close(ours, unfold)
    assert torch.autograd.gradgradcheck(lambda a, b: involution(a, b, stride, padding, dilation), (x, weight),
                                        fast_mode=True)


class Aggregation(torch.nn.Module):
    def forward(self, x, weight):
        return involution(x, weight, 2, 3)


def test_torch_export_and_jit_trace_keep_the_op():
    x, weight = make_inputs(2, 32, (9, 10), 2, 7, 2, 3, 1, dtype=torch.float32)
    batch = torch.export.Dim('batch')
    exported = torch.export.export(Aggregation(), (x, weight), dynamic_shapes=({0: batch}, {0: batch}))
    assert 'involution_mm.involution.default' in str(exported.graph)
    traced = torch.jit.trace(Aggregation(), (x, weight))
    assert 'involution_mm::involution' in str(traced.inlined_graph)
    x2, weight2 = make_inputs(3, 32, (9, 10), 2, 7, 2, 3, 1, dtype=torch.float32, seed=1)
    want = unfold_reference(x2, weight2, (2, 2), (3, 3), (1, 1))
    torch.testing.assert_close(exported.module()(x2, weight2), want)
    torch.testing.assert_close(traced(x2, weight2), want)


def compile_and_compare(module, *inputs, atol=1e-5):
    """Compile ``module`` with fullgraph=True (a graph break raises), run forward and backward, and check the
    output and every gradient against eager mode; returns the number of graphs compiled (1: no breaks)."""
    counter = torch._dynamo.testing.CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(module, fullgraph=True, backend=counter)
    results = []
    for run in (compiled, module):
        module.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        out = run(*inputs)
        outputs = list(out) if isinstance(out, (tuple, list)) else [out]
        flat = [t for o in outputs for t in (o if isinstance(o, (tuple, list)) else [o])]
        sum((t.float() * (i + 1)).sum() for i, t in enumerate(flat)).backward()
        results.append((flat, {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}))
    (out_c, grads_c), (out_e, grads_e) = results
    torch.testing.assert_close(out_c, out_e, atol=atol, rtol=1e-4)
    assert grads_c.keys() == grads_e.keys() and grads_c
    for name in grads_c:
        torch.testing.assert_close(grads_c[name], grads_e[name], atol=atol, rtol=1e-4, msg=name)
    return counter.frame_count


@pytest.mark.parametrize('depth', [26, 50])
def test_rednet_compiles_without_graph_breaks(depth):
    from involution_mm.backbones import RedNet
    torch.manual_seed(0)
    model = RedNet(depth).train()
    assert compile_and_compare(model, torch.randn(2, 3, 32, 32)) == 1


@pytest.fixture
def mmdet_models():
    pytest.importorskip('mmdet')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import involution_mm  # noqa: F401  (registers into mmdet)
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    model = Config.fromfile(osp.join(REPO, 'configs', 'involution_det',
                                     'mask-rcnn_rednet50-involution-fpn-head_1x_coco.py')).model
    return MODELS, model


def test_involution_fpn_and_rpn_head_compile_without_graph_breaks(mmdet_models):
    registry, cfg = mmdet_models
    torch.manual_seed(0)
    neck, rpn_head = registry.build(cfg.neck), registry.build(cfg.rpn_head)

    class NeckAndHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.neck, self.rpn_head = neck, rpn_head

        def forward(self, features):
            return self.rpn_head(self.neck(features))

    features = tuple(torch.randn(2, c, 32 // s, 32 // s) for c, s in ((256, 4), (512, 8), (1024, 16), (2048, 32)))
    assert compile_and_compare(NeckAndHead().train(), features) == 1


def test_involution_mask_head_compiles_without_graph_breaks(mmdet_models):
    registry, cfg = mmdet_models
    torch.manual_seed(0)
    mask_head = registry.build(cfg.roi_head.mask_head).train()
    assert compile_and_compare(mask_head, torch.randn(3, 256, 14, 14)) == 1


def test_compiled_under_autocast_casts_as_eager():
    x, weight = make_inputs(1, 16, (6, 6), 1, 3, 1, 1, 1, dtype=torch.float32)
    compiled = torch.compile(lambda a, b: involution(a, b, 1, 1), fullgraph=True, backend='aot_eager')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got, want = compiled(x, weight), involution(x, weight, 1, 1)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want)
