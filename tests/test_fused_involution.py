"""The fused involution layer (involution_mm::fused_involution): the Triton kernels against the unfused layer
(span conv + involution op), their registration (opcheck, fake strides, autograd, double backward,
torch.compile without graph breaks), the Involution layer's fused path (state dicts, BN statistics, autocast,
RedNet) and its argument checks, and the kernels compiled for sm_90.

Without CUDA the Triton kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set by
conftest.py before anything imports Triton); with CUDA the same tests compile them for the GPU. Shapes are the
smallest that still reach every branch: partial tiles, several tiles and group chunks, odd sizes, strides 1 to
3, dilation 2, kernels 3 and 7, group widths 16, 8 and 12, both layouts.
"""
import copy
import importlib
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from conftest import REPO, needs_triton, randomise_norms
from involution_mm.backbones import RedNet
from involution_mm.layers import Involution
from involution_mm.ops.fused_involution import (fused_backward_input_op, fused_backward_kernels_op,
                                                fused_involution, fused_involution_op, unfused_involution)
from involution_mm.ops.geometry import output_memory_format

DEVICE = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
# float32 as users run it: on a GPU the span products in TF32 (cuDNN's default for the unfused conv, which
# the fused kernel follows), each side rounding differently; Triton's interpreter multiplies in float32.
TOLERANCES = {torch.float64: dict(rtol=1e-9, atol=1e-9),
              torch.float32: dict(rtol=1e-4, atol=1e-4) if DEVICE.type == 'cpu' else dict(rtol=1e-2, atol=1e-2),
              torch.float16: dict(rtol=4e-3, atol=4e-3), torch.bfloat16: dict(rtol=3e-2, atol=3e-2)}
HALF_DTYPES = [torch.float16, torch.bfloat16]


# (batch, channels, (H, W), kernel, stride, dilation, group_channels, layout of x)
CASES = [
    (2, 32, (9, 7), 7, 1, 1, 16, 'contiguous'),  # odd sizes, RedNet's kernel, two samples
    (1, 64, (10, 9), 7, 2, 1, 16, 'channels_last'),  # a stride-2 transition, four groups
    (1, 48, (9, 8), 3, 1, 2, 16, 'contiguous'),  # dilation 2, three groups (a partial group chunk)
    (1, 24, (7, 6), 3, 2, 1, 8, 'channels_last'),  # 8 channels a group, R = 6 (padded to 16 for the dot)
    (1, 24, (6, 7), 3, 3, 1, 12, 'strided'),  # stride 3, 12 channels a group (a partial channel block)
]


def make_inputs(batch, channels, size, kernel, stride, dilation, group_channels, layout, dtype=torch.float32,
                seed=0, device=DEVICE):
    """x, r, weight, bias of a layer call and an output gradient on ``device``; x in ``layout``, the gradient
    in another."""
    gen = torch.Generator().manual_seed(seed)
    padding = dilation * (kernel - 1) // 2
    out = [(n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 for n in size]
    groups, reduced = channels // group_channels, channels // 4
    x = torch.randn(batch, channels, *size, generator=gen)
    r = torch.rand(batch, reduced, *out, generator=gen)
    weight = torch.randn(groups * kernel**2, reduced, generator=gen) / reduced**0.5
    bias = torch.randn(groups * kernel**2, generator=gen) * 0.1
    grad = torch.randn(batch, channels, *out, generator=gen)
    x, r, weight, bias, grad = (t.to(device, dtype) for t in (x, r, weight, bias, grad))
    if layout == 'channels_last':
        x, grad = x.contiguous(memory_format=torch.channels_last), grad
        r = r.contiguous(memory_format=torch.channels_last)
    elif layout == 'strided':  # every other channel of a wider tensor
        wide = torch.zeros(batch, 2 * channels, *size, dtype=dtype, device=device)
        wide[:, ::2] = x
        x = wide[:, ::2]
    else:
        grad = grad.contiguous(memory_format=torch.channels_last)
    return (x, r, weight, bias), grad, (kernel, stride, padding, dilation)


def value_and_grads(function, inputs, grad, geometry):
    """``function(*inputs, *geometry)`` and its gradients for all four inputs."""
    inputs = [t.detach().requires_grad_() for t in inputs]
    out = function(*inputs, *geometry)
    return (out, ) + torch.autograd.grad(out, inputs, grad)


def fused(backend):
    return lambda *args: fused_involution(*args, backend=backend)


@needs_triton
@pytest.mark.parametrize('case', CASES, ids=lambda case: f'{case[1]}ch-{case[2]}-k{case[3]}s{case[4]}d{case[5]}')
def test_triton_matches_unfused_layer(case):
    inputs, grad, geometry = make_inputs(*case)
    got = value_and_grads(fused('triton'), inputs, grad, geometry)
    want = value_and_grads(unfused_involution, inputs, grad, geometry)
    for name, g, w in zip(('out', 'grad_x', 'grad_r', 'grad_weight', 'grad_bias'), got, want):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float32], msg=name)
    x, r = inputs[:2]
    for value, like in zip(got[:3], (x, x, r)):  # out and grad_x in the layout of x, grad_r in that of r
        assert value.stride() == torch.empty(value.shape, memory_format=output_memory_format(like)).stride()


def test_reference_matches_unfused_layer():
    """The ops' PyTorch path (CPU, and the fallback where Triton cannot run) is the same layer."""
    for case in CASES[1:3]:
        inputs, grad, geometry = make_inputs(*case, dtype=torch.float64)
        torch.testing.assert_close(value_and_grads(fused('reference'), inputs, grad, geometry),
                                   value_and_grads(unfused_involution, inputs, grad, geometry))


@needs_triton
@pytest.mark.skipif(DEVICE.type == 'cpu', reason='float32 products are exact in the interpreter')
@pytest.mark.parametrize('case', CASES, ids=lambda case: f'{case[1]}ch-{case[2]}-k{case[3]}s{case[4]}d{case[5]}')
def test_exact_float32_matches_unfused_layer(case):
    """With TF32 off (the kernels follow cuDNN's convolution switch) float32 is exact to float32 tolerances."""
    inputs, grad, geometry = make_inputs(*case)
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        got = value_and_grads(fused('triton'), inputs, grad, geometry)
        want = value_and_grads(unfused_involution, inputs, grad, geometry)
    for name, g, w in zip(('out', 'grad_x', 'grad_r', 'grad_weight', 'grad_bias'), got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4, msg=name)


# Every case in both half types on a GPU (the tensor-core path users get with AMP); one on the CPU.
HALF_CASES = [(case, dtype) for case in (CASES if DEVICE.type == 'cuda' else CASES[1:2]) for dtype in HALF_DTYPES]


@needs_triton
@pytest.mark.parametrize('case, dtype', HALF_CASES, ids=lambda v: str(v).replace('torch.', '') if isinstance(
    v, torch.dtype) else f'{v[1]}ch-{v[2]}-k{v[3]}s{v[4]}d{v[5]}-{v[7]}')
def test_half_precision_against_float32(case, dtype):
    """Half inputs give the float32 result on the same (rounded) values to the dtype's precision."""
    inputs, grad, geometry = make_inputs(*case, dtype=dtype)
    got = value_and_grads(fused('triton'), inputs, grad, geometry)
    want = value_and_grads(unfused_involution, [t.float() for t in inputs], grad.float(), geometry)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.float() / w.abs().max(), w / w.abs().max(), **TOLERANCES[dtype])


@needs_triton
@pytest.mark.parametrize('config', [(2, 4, 1), (4, 2, 2)], ids=['1-group-chunks', '2-group-chunks'])
@pytest.mark.parametrize('stage', [True, False], ids=['staged', 'strided-kernels'])
def test_tiles_and_layouts(config, stage):
    """Tiles smaller than the map, one or two groups a program (partial chunks), and the kernels run directly
    on NCHW tensors (``stage=False``) give the same gradients as the default launch."""
    from involution_mm.ops.triton import involution_fused as launcher
    from involution_mm.ops.triton.involution_tiles import TileConfig
    tiles = TileConfig(*config)
    (x, r, weight, bias), grad, geometry = make_inputs(1, 48, (9, 7), 3, 2, 1, 16, 'contiguous')
    torch.testing.assert_close(launcher.fused_forward(x, r, weight, bias, *geometry, config=tiles, stage=stage),
                               launcher.fused_forward(x, r, weight, bias, *geometry))
    torch.testing.assert_close(
        launcher.fused_grad_input(grad, x, r, weight, bias, *geometry, config=tiles, stage=stage),
        launcher.fused_grad_input(grad, x, r, weight, bias, *geometry))
    torch.testing.assert_close(launcher.fused_grad_kernels(grad, x, r, weight, *geometry, config=tiles, stage=stage),
                               launcher.fused_grad_kernels(grad, x, r, weight, *geometry))


@needs_triton
def test_gradcheck_float64():
    inputs, _, geometry = make_inputs(1, 32, (5, 4), 3, 2, 1, 16, 'contiguous', dtype=torch.float64)
    inputs = [t.detach().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *a: fused_involution(*a, *geometry, backend='triton'), inputs,
                                    fast_mode=True)


@pytest.mark.parametrize('backend', ['reference', pytest.param('triton', marks=needs_triton)])
def test_opcheck(backend):
    """Schema, fake implementations (sizes and strides), autograd registration and AOT dispatch of the
    three ops."""
    (x, r, weight, bias), grad, geometry = make_inputs(1, 32, (5, 4), 3, 2, 1, 16, 'channels_last',
                                                       dtype=torch.float64)
    args = geometry + (backend, )
    x, r, weight, bias = (t.requires_grad_() for t in (x, r, weight, bias))
    torch.library.opcheck(fused_involution_op, (x, r, weight, bias) + args)
    for op, op_args in ((fused_backward_input_op, (grad, x, r, weight, bias)),
                        (fused_backward_kernels_op, (grad, x, r, weight))):
        torch.library.opcheck(op, tuple(t.detach() for t in op_args) + args,
                              test_utils=('test_schema', 'test_faketensor', 'test_aot_dispatch_dynamic'))


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last])
def test_fake_and_meta_outputs_have_the_real_strides(layout):
    from torch._subclasses.fake_tensor import FakeTensorMode
    (x, r, weight, bias), grad, geometry = make_inputs(2, 32, (6, 5), 3, 1, 1, 16, 'contiguous')
    x, r, grad = (t.contiguous(memory_format=layout) for t in (x, r, grad))
    calls = [(fused_involution_op, (x, r, weight, bias)), (fused_backward_input_op, (grad, x, r, weight, bias)),
             (fused_backward_kernels_op, (grad, x, r, weight))]
    for op, args in calls:
        real = op(*args, *geometry, 'reference')
        with FakeTensorMode() as mode:
            fake = op(*(mode.from_tensor(t) for t in args), *geometry, 'reference')
        meta = op(*(t.to('meta') for t in args), *geometry, 'auto')
        for outputs in (fake, meta):
            for got, want in zip(outputs if isinstance(outputs, tuple) else (outputs, ),
                                 real if isinstance(real, tuple) else (real, )):
                assert (got.shape, got.stride(), got.dtype) == (want.shape, want.stride(), want.dtype)


def test_double_backward_goes_through_the_unfused_layer():
    """create_graph=True gives second-order gradients (a gradient penalty trains the kernel branch)."""
    inputs, grad, geometry = make_inputs(*CASES[2], dtype=torch.float64)

    def penalty(function):
        leaves = [t.detach().requires_grad_() for t in inputs]
        grad_x, = torch.autograd.grad(function(*leaves, *geometry), leaves[0], grad, create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), leaves[1:])

    torch.testing.assert_close(penalty(fused('reference')), penalty(unfused_involution))


def test_bad_arguments():
    (x, r, weight, bias), _, geometry = make_inputs(1, 32, (6, 5), 3, 1, 1, 16, 'contiguous')
    cases = [
        (dict(backend='cuda'), ValueError, "unknown fused_involution backend 'cuda'"),
        (dict(backend=1), TypeError, 'backend must be one of'),
        (dict(kernel_size=3.0), TypeError, 'kernel_size must be an int, got float 3.0'),
        (dict(stride=0), ValueError, 'needs stride >= 1, got 0'),
        (dict(weight=weight[:, :4]), ValueError, r'r must be \(1, 4, 6, 5\)'),
        (dict(weight=weight[:10]), ValueError, r'weight must be \(G \* 9, R\)'),
        (dict(bias=bias[:3]), ValueError, r'bias must be \(18,\)'),
        (dict(r=r.double()), ValueError, 'one dtype and device'),
        (dict(x=x.long()), ValueError, 'floating-point tensors, got x of torch.int64'),
    ]
    for change, error, message in cases:
        call = dict(x=x, r=r, weight=weight, bias=bias, kernel_size=3, stride=1, padding=1, dilation=1)
        call.update(change)
        with pytest.raises(error, match=message):
            fused_involution(**call)


def test_triton_backend_on_cpu_without_the_interpreter_says_what_to_do(monkeypatch):
    module = importlib.import_module('involution_mm.ops.fused_involution')  # the module, not the function
    monkeypatch.setattr(module._TRITON, 'statuses', {})
    monkeypatch.setattr(module.FUSED, 'verdicts', {})
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    (x, r, weight, bias), _, geometry = make_inputs(1, 32, (6, 5), 3, 1, 1, 16, 'contiguous')
    with pytest.raises(RuntimeError, match=r"cannot run on cpu: .*TRITON_INTERPRET=1.*backend='auto'"):
        fused_involution(x.cpu(), r.cpu(), weight.cpu(), bias.cpu(), *geometry, backend='triton')


# The Involution layer


def fused_copy(layer: nn.Module, fused=True) -> nn.Module:
    """A copy of ``layer`` whose Involution layers take the fused path (``fused``)."""
    layer = copy.deepcopy(layer)
    for module in layer.modules():
        if isinstance(module, Involution):
            module.fused = fused
    return layer


@needs_triton
@pytest.mark.parametrize('stride', [1, 2])
def test_layer_fused_path_matches_unfused_in_training(stride):
    """Same output, parameter gradients and BN statistics (conv1 with its BN stays a module of its own)."""
    torch.manual_seed(0)
    unfused = Involution(32, 3, stride=stride, fused=False).to(DEVICE).train()
    fused_layer = fused_copy(unfused)
    x = torch.randn(2, 32, 7, 6, device=DEVICE).contiguous(memory_format=torch.channels_last)
    outs = []
    for layer in (unfused, fused_layer):
        x_in = x.detach().requires_grad_()
        out = layer(x_in)
        out.square().sum().backward()
        outs.append([out, x_in.grad] + [p.grad for p in layer.parameters()] + list(layer.buffers()))
    torch.testing.assert_close(outs[1], outs[0], **TOLERANCES[torch.float32])
    assert outs[1][0].is_contiguous(memory_format=torch.channels_last)
    assert set(fused_layer.state_dict()) == {'conv1.conv.weight', 'conv1.bn.weight', 'conv1.bn.bias',
                                             'conv1.bn.running_mean', 'conv1.bn.running_var',
                                             'conv1.bn.num_batches_tracked', 'conv2.conv.weight', 'conv2.conv.bias'}


@needs_triton
def test_layer_under_autocast_matches_unfused():
    """Under autocast the fused path casts like the unfused one (span conv and op in the autocast dtype)."""
    torch.manual_seed(0)
    layer = Involution(32, 7, fused=False).to(DEVICE).eval()
    x = torch.randn(1, 32, 6, 5, device=DEVICE)
    dtype = torch.float16 if DEVICE.type == 'cuda' else torch.bfloat16
    with torch.autocast(DEVICE.type, dtype=dtype):
        want, got = layer(x), fused_copy(layer)(x)
    assert got.dtype == want.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), **TOLERANCES[dtype])


@needs_triton
def test_layer_compiles_without_graph_breaks():
    torch.manual_seed(0)
    layer = Involution(32, 3, stride=2).to(DEVICE)
    x = torch.randn(2, 32, 7, 6, device=DEVICE, requires_grad=True)
    eager = layer(x)
    eager_grads = torch.autograd.grad(eager.sum(), [x] + list(layer.parameters()))
    compiled = torch.compile(fused_copy(layer), fullgraph=True, backend='aot_eager')
    out = compiled(x)
    torch.testing.assert_close(out, eager, **TOLERANCES[torch.float32])
    torch.testing.assert_close(torch.autograd.grad(out.sum(), [x] + list(compiled.parameters())), eager_grads,
                               **TOLERANCES[torch.float32])


def test_layer_chooses_its_path(monkeypatch):
    """On CPU tensors 'auto' and True run the compiled CPU kernels fused (where they are built and the op's
    backend allows them), else 'auto' runs unfused and True the Triton kernels; False never fuses; a custom
    span conv runs unfused, and True refuses it."""
    from involution_mm.layers import involution as layer_module
    calls = []
    monkeypatch.setattr(layer_module, 'fused_involution', lambda *args, **kwargs: calls.append(kwargs))
    x = torch.randn(1, 32, 5, 5)
    Involution(32, 3, fused=False)(x)
    Involution(32, 3, backend='pytorch')(x)
    assert calls == []
    cpu_kernels = layer_module.cpu_runs(x)
    Involution(32, 3)(x)
    Involution(32, 3, fused=True)(x)
    assert calls == ([dict(backend='cpu')] * 2 if cpu_kernels else [dict(backend='triton')])
    calls.clear()
    monkeypatch.setattr(layer_module, 'cpu_runs', lambda x: False)
    Involution(32, 3)(x)
    Involution(32, 3, fused=True)(x)
    assert calls == [dict(backend='triton')]
    custom = Involution(32, 3, conv_cfg=dict(type='Conv2dAdaptivePadding'))
    assert not custom.fusable()
    with pytest.raises(ValueError, match=r"fused=True\) needs a plain Conv2d.*use fused='auto'"):
        Involution(32, 3, conv_cfg=dict(type='Conv2dAdaptivePadding'), fused=True)


@pytest.mark.parametrize('kwargs,error,message', [
    (dict(kernel_size=7.0), TypeError, 'kernel_size must be an int, got float 7.0; pass kernel_size=7'),
    (dict(reduction_ratio=0), ValueError, 'needs reduction_ratio >= 1, got 0'),
    (dict(channels=True), TypeError, 'channels must be an int, got bool True'),
    (dict(channels=-16), ValueError, 'needs channels >= 1, got -16'),
    (dict(channels='32'), TypeError, "channels must be an int, got str '32'"),
    (dict(stride=0), ValueError, 'needs stride >= 1, got 0'),
    (dict(dilation=1.5), TypeError, 'dilation must be an int, got float 1.5'),
    (dict(group_channels=0), ValueError, 'needs group_channels >= 1, got 0'),
    (dict(backend=None), TypeError, r"involution backend must be a string \('auto' or one of"),
    (dict(backend='triton'), ValueError, "unknown involution backend 'triton'; choose 'auto' or one of"),
    (dict(fused='yes'), ValueError, "fused must be 'auto', True or False, got 'yes'"),
    (dict(fused=1), TypeError, "fused must be 'auto', True or False, got int 1"),
])
def test_layer_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        Involution(**{'channels': 32, **kwargs})


@needs_triton
def test_rednet_with_fused_layers_loads_official_weights_and_matches_unfused(official_layouts):
    """RedNet-26 (3x3 stem involution, every stage) built with fused layers loads an official-layout state dict
    strictly and gives the unfused outputs."""
    layout = {k[len('backbone.'):]: v for k, v in official_layouts['rednet26_in1k_classifier'].items()
              if k.startswith('backbone.')}
    torch.manual_seed(1)
    source = RedNet(26).state_dict()  # values of PyTorch's initialisation, keyed and shaped as the release
    state = {key: source[key].reshape(shape) for key, shape in layout.items()}
    unfused = RedNet(26, out_indices=(0, 1, 2, 3))
    unfused.load_state_dict(state, strict=True)
    unfused = randomise_norms(unfused).to(DEVICE)
    fused_model = fused_copy(unfused)
    fused_model.load_state_dict(unfused.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32).to(DEVICE)
    with torch.no_grad():
        for got, want in zip(fused_model(x), unfused(x)):
            torch.testing.assert_close(got / want.abs().max(), want / want.abs().max(), rtol=1e-4, atol=1e-4)


def test_kernels_compile_for_sm90_without_spills():
    """The kernels compile for an H100 (Triton ships ptxas): no local memory, at most 255 registers."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    proc = subprocess.run([sys.executable, 'benchmarks/triton_report.py', '--dtype', 'float16', '--stages', '1', '4',
                           '--layout', 'channels_last'], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith('| stage')]
    assert len(rows) == 3, proc.stdout
    for row in rows:
        for cell in row.split('|')[2:5]:
            registers, local = map(int, re.match(r' (\d+) regs, (\d+) B local', cell).groups())
            assert registers <= 255 and local == 0, row


@needs_triton
def test_layer_benchmark_runs(monkeypatch, capsys):
    """benchmarks/op.py --layer (its code otherwise runs only on a GPU), on one tiny layer, with a sweep of
    two tile configurations."""
    monkeypatch.syspath_prepend(os.path.join(REPO, 'benchmarks'))
    import layer as benchmark_layer
    from involution_mm.ops.triton import involution_tiles
    monkeypatch.setattr(benchmark_layer, 'LAYERS', [('tiny', 16, 4, 2, 3)])
    monkeypatch.setattr(involution_tiles, 'candidate_configs',
                        lambda *shape: [involution_tiles.default_config(*shape), involution_tiles.TileConfig(2, 2, 1)])
    assert benchmark_layer.main(['--device', DEVICE.type, '--batch', '1', '--dtype', 'float32', '--repeats', '1',
                                 '--inner', '1', '--sweep']) == 0
    out = capsys.readouterr().out
    assert '| tiny | (1, 16, 4, 4) s2 K3 |' in out
    assert '# target forward fused/unfused <= 0.5' in out and '# target forward+backward' in out
    for kernel in ('forward', 'grad_input', 'grad_kernels'):
        assert f'# {kernel}: *' in out and f'# {kernel} (no staging): *' in out


def test_best_modes_reads_model_tables(tmp_path):
    """benchmarks/best_modes.py picks each model's fastest (mode, layout) and compares memory mode by mode."""
    log = tmp_path / 'models.log'
    log.write_text('\n'.join([
        '| mode | layout | batch | precision | model | inference img/s | training img/s | training peak GiB |',
        '| eager | contiguous | 256 | float16 | ResNet-50 | 9452 | 2763 | 11.20 |',
        '| eager | contiguous | 256 | float16 | RedNet-50 | 7099 | 1688 | 8.00 |',
        '| eager | contiguous | 256 | float16 | **RedNet-50 / ResNet-50** | 0.75x | 0.61x | 0.71x |',
        '| compiled | channels_last | 256 | float16 | ResNet-50 | 22801 | 5747 | 10.00 |',
        '| reduce-overhead | channels_last | 256 | float16 | RedNet-50 | 23000 | 5000 | 9.00 |',
    ]))
    proc = subprocess.run([sys.executable, 'benchmarks/best_modes.py', str(log)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert ('inference: RedNet-50 best reduce-overhead channels_last 23000 img/s, ResNet-50 best compiled '
            'channels_last 22801 img/s: 1.01x (target >= 1: met)') in proc.stdout
    assert 'training: RedNet-50 best reduce-overhead channels_last 5000 img/s' in proc.stdout
    assert ('peak memory, eager contiguous: RedNet-50 8.00 GiB, ResNet-50 11.20 GiB: 0.71x (target <= 0.8: '
            'met)') in proc.stdout
