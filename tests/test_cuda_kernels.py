"""The CUDA kernels without a GPU: their source compiled by nvcc, and the very same source compiled for the CPU
by g++ and run thread by thread in place of a launch, through the CuPy backend's own Python code and autograd
Function, against the PyTorch backend.

The kernels use no shared memory, atomics or synchronisation, so running every thread's body in turn is an
exact emulation of a launch. The GPU tests (test_ops_cuda.py) run the same comparisons on a device.
"""
import contextlib
import ctypes
import functools

import importlib.util
import os.path as osp
import shutil
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import REPO
from op_cases import SHAPES, make_inputs, memory_layouts, pair

from involution_mm.ops import backends, cupy_backend, involution
from involution_mm.ops import cuda_tiling
from involution_mm.ops.cuda_source import BLOCK_SIZE, KERNEL_NAMES, KernelSpec, choose_spec
from involution_mm.ops.cuda_tiling import (DEFAULT_TILINGS, LAYOUTS, STAGE_CLASSES, Tiling, as_layout, stage_class,
                                          table_source, tiling_for)
from involution_mm.ops.cupy_backend import cupy_usable
from involution_mm.ops.geometry import check_inputs

BENCHMARKS = osp.join(REPO, 'benchmarks')

# What the CUDA-only parts of involution_kernels.cu become on the host: a global thread index, plain loads,
# CUDA's vector types, and IEEE half conversions through GCC's _Float16.
HOST_PRELUDE = r'''
#define INVOLUTION_EMULATE_ON_HOST
#include <cstring>
#define KERNEL extern "C" void
#define DEVICE static inline
static long long emulated_thread;
#define THREAD_ID emulated_thread
#define LOAD(ptr) (*(ptr))
struct alignas(8) uint2 { unsigned int x, y; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
DEVICE float half_bits_to_float(unsigned short h) { _Float16 v; std::memcpy(&v, &h, 2); return (float)v; }
DEVICE unsigned short float_to_half_bits(float f) {
    _Float16 v = (_Float16)f; unsigned short h; std::memcpy(&h, &v, 2); return h;
}
DEVICE unsigned int float_as_bits(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
DEVICE float bits_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
'''
# One exported function per kernel that runs every thread of a launch in turn.
ARGS = ('a, b, result, threads, channels, group_channels, in_h, in_w, out_h, out_w, a_s0, a_s1, a_s2, a_s3, a_s4, a_s5, '
        'b_s0, b_s1, b_s2, b_s3, b_s4, b_s5, r_s0, r_s1, r_s2, r_s3, r_s4, r_s5')
HOST_LAUNCHERS = ''.join(
    f'extern "C" void emulate_{name}(INVOLUTION_PARAMS) {{\n'
    f'    for (emulated_thread = 0; emulated_thread < threads; ++emulated_thread) {name}({ARGS});\n}}\n'
    for name in KERNEL_NAMES)
ARG_TYPES = [ctypes.c_void_p] * 3 + [ctypes.c_longlong] + [ctypes.c_int] * 6 + [ctypes.c_longlong] * 18

BENCHMARKS = osp.join(REPO, 'benchmarks')


@pytest.fixture(scope='session')
def host_kernels(tmp_path_factory):
    """spec -> the three kernels compiled for the CPU (each spec compiled once per session)."""
    if shutil.which('g++') is None:
        pytest.fail('g++ is needed to run the CUDA kernels on the CPU')
    build_dir = tmp_path_factory.mktemp('host_kernels')

    @functools.lru_cache(maxsize=None)
    def load(spec: KernelSpec):
        stem = osp.join(str(build_dir), f'kernels_{abs(hash(spec))}')
        with open(stem + '.cpp', 'w') as f:
            f.write(HOST_PRELUDE + spec.source() + HOST_LAUNCHERS)
        subprocess.run(['g++', '-O1', '-std=c++17', '-shared', '-fPIC', '-fno-strict-aliasing', '-Wall', '-Werror',
                        '-Wno-unknown-pragmas',
                        stem + '.cpp', '-o', stem + '.so'], check=True)
        library = ctypes.CDLL(stem + '.so')
        for name in KERNEL_NAMES:
            getattr(library, f'emulate_{name}').argtypes = ARG_TYPES
        return library

    return load


def emulated_launch(host_kernels, launched):
    """A stand-in for ``cupy_backend._run_kernel`` that runs a planned launch on the host build, and records
    (kernel name, spec) of each launch in ``launched``."""

    def run(plan, pointers, device):
        spec, name = plan.kernel
        assert (spec, name) == (plan.spec, plan.name)
        threads = int(plan.scalars[0])
        assert 0 < threads <= plan.grid[0] * BLOCK_SIZE < threads + BLOCK_SIZE
        if spec.channels_last:  # the vectors' alignment, which the kernels rely on
            assert all(int(p) % spec.vector_bytes(spec.dtype.itemsize) == 0 for p in pointers)
        launched.append((name, spec))
        getattr(host_kernels(spec), f'emulate_{name}')(*[int(v) for v in pointers + plan.scalars])

    return run


@pytest.fixture(autouse=True)
def fresh_cupy_checks(monkeypatch):
    """The CuPy backend's self-check verdicts, variants and warnings forgotten for each test."""
    for name in ('verdicts', 'variants', 'seconds'):
        monkeypatch.setattr(cupy_backend.CUPY, name, {})
    monkeypatch.setattr(cupy_backend.CUPY, 'warned', set())


@pytest.fixture(params=[0, 10**9], ids=['table-tiling', 'smallest-tiling'])
def emulated_gpu(request, monkeypatch, host_kernels):
    """Make the CuPy backend run on CPU tensors, its launches on the host build of the kernels; ``params`` is
    the device's resident threads: 0 keeps the tiling table's choice, 10**9 shrinks every tile to the least
    work per thread. Everything else (the public function, the registered ops and their autograd, launch
    planning) is the real code. Returns the list of (kernel name, spec) launched."""
    cupy = backends._BACKENDS['cupy']
    launched = []
    monkeypatch.setitem(backends._BACKENDS, 'cupy', cupy._replace(is_usable=lambda x: (True, 'emulated')))
    # 'auto' would take the compiled CPU kernels for these CPU tensors first
    monkeypatch.setattr(backends, '_AUTO_ORDER', [name for name in backends._AUTO_ORDER if name != 'cpu'])
    monkeypatch.setattr(backends, '_RESOLVED', {})
    monkeypatch.setattr(cupy_backend, '_PLANS', {})
    monkeypatch.setattr(cupy_backend, 'compiled_kernels',
                        lambda spec, device_index: {name: (spec, name) for name in KERNEL_NAMES})
    monkeypatch.setattr(cupy_backend, '_run_kernel', emulated_launch(host_kernels, launched))
    monkeypatch.setattr(cupy_backend, 'resident_threads', lambda device_index: request.param)
    monkeypatch.setattr(cupy_backend, 'device_name', lambda device_index: 'emulated')
    return launched


def run_cupy(x, weight, stride, padding, dilation):
    return involution(x, weight, stride, padding, dilation, backend='cupy')


def gradient_like(out, layout='contiguous'):
    """A fixed output gradient, in the memory layout the next layer would hand back."""
    grad = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape).to(out.dtype)
    return as_layout(grad, layout)


def run_kernels(x, weight, stride, padding, dilation, layout='contiguous'):
    """The CuPy backend on CPU tensors (its kernels emulated); returns out, grad_x, grad_w."""
    x = as_layout(x, layout).detach().requires_grad_(True)
    weight = as_layout(weight, layout).detach().requires_grad_(True)
    out = run_cupy(x, weight, stride, padding, dilation)
    return (out, ) + torch.autograd.grad(out, (x, weight), gradient_like(out, layout))


def run_pytorch(x, weight, stride, padding, dilation):
    x, weight = x.detach().requires_grad_(True), weight.detach().requires_grad_(True)
    out = involution(x, weight, stride, padding, dilation, backend='pytorch')
    return (out, ) + torch.autograd.grad(out, (x, weight), gradient_like(out))


# The variant each layout launches, for every kernel: (channels_last, contiguous_rows) of its spec.
VARIANTS = {'contiguous': (False, True), 'channels_last': (True, False), 'strided': (False, False)}


@pytest.mark.parametrize('layout', list(VARIANTS))
@pytest.mark.parametrize('shape', SHAPES)
def test_kernels_match_pytorch_backend_float64(shape, layout, emulated_gpu):
    """Every variant, each on the layout that launches it for all three kernels: row kernels with unit column
    strides, channel-vector kernels, and row kernels reading column strides at run time."""
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation)
    for got, want, name in zip(run_kernels(x, weight, stride, padding, dilation, layout),
                               run_pytorch(x, weight, stride, padding, dilation), ('out', 'grad_x', 'grad_w')):
        torch.testing.assert_close(got, want, msg=name)
    assert {name for name, _ in emulated_gpu} == set(KERNEL_NAMES)
    launches = layout if x.shape[-2:] != (1, 1) else 'contiguous'  # on a 1x1 map every layout is contiguous
    assert {(spec.channels_last, spec.contiguous_rows) for _, spec in emulated_gpu} == {VARIANTS[launches]}


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float16, 1e-3), (torch.bfloat16, 8e-3)])
@pytest.mark.parametrize('shape', [SHAPES[1], SHAPES[3], SHAPES[6]])
def test_kernels_in_every_precision(shape, dtype, tol, layout, emulated_gpu):
    """Same sums in float32 as the PyTorch backend, so the two differ by about one rounding of the result."""
    *sizes, stride, padding, dilation = shape
    x, weight = (t.to(dtype) for t in make_inputs(*sizes, stride, padding, dilation))
    exact = run_pytorch(x.double(), weight.double(), stride, padding, dilation)
    for got, want, ref, name in zip(run_kernels(x, weight, stride, padding, dilation, layout),
                                    run_pytorch(x, weight, stride, padding, dilation), exact,
                                    ('out', 'grad_x', 'grad_w')):
        assert got.dtype == dtype, name
        torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol * ref.abs().max().item(), msg=name)
        torch.testing.assert_close(got.double(), want.double(), rtol=2 * tol,
                                   atol=2 * tol * ref.abs().max().item(), msg=name)
    assert {spec.channels_last for _, spec in emulated_gpu} == {layout == 'channels_last'}


@pytest.mark.parametrize('shape', [SHAPES[1], SHAPES[3], SHAPES[4], SHAPES[6]])
def test_gradcheck_float64(shape, emulated_gpu):
    batch, channels, size, groups, kernel, stride, padding, dilation = shape
    x, weight = make_inputs(1, channels, (5, 6), groups, kernel, stride, padding, dilation)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: run_cupy(a, b, stride, padding, dilation), (x, weight))


def test_double_backward(emulated_gpu):
    """Gradients of gradients run the CuPy kernels too (each op's gradients are the other ops)."""
    x, weight = make_inputs(1, 4, (4, 5), 2, 3, 2, 1, 1)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda a, b: run_cupy(a, b, 2, 1, 1), (x, weight), fast_mode=True)


def test_any_memory_layout(emulated_gpu):
    """channels_last, strided views and a stride-0 (expanded) output gradient are read in place."""
    x, weight = make_inputs(2, 32, (9, 10), 2, 7, 2, 3, 1)
    want = run_pytorch(x, weight, 2, 3, 1)
    layouts = memory_layouts(x, weight)
    for name, (x_in, w_in) in layouts.items():
        got = run_kernels(x_in, w_in, 2, 3, 1)
        for g, w, part in zip(got, want, ('out', 'grad_x', 'grad_w')):
            torch.testing.assert_close(g, w, msg=f'{name}: {part}')
    out = run_cupy(layouts['channels_last'][0], weight, 2, 3, 1)
    assert out.is_contiguous(memory_format=torch.channels_last)
    # out.sum() hands backward an expanded gradient whose strides are all 0
    x_in, w_in = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    run_cupy(x_in, w_in, 2, 3, 1).sum().backward()
    x_ref, w_ref = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    involution(x_ref, w_ref, 2, 3, backend='pytorch').sum().backward()
    torch.testing.assert_close((x_in.grad, w_in.grad), (x_ref.grad, w_ref.grad))


def test_columns_beyond_32_bit_offsets_are_copied(emulated_gpu, monkeypatch):
    """The kernels index along a row with 32-bit offsets; an input whose column stride would overflow them
    reaches the kernels as a contiguous copy, and the others in place."""
    monkeypatch.setenv('INVOLUTION_MM_SELF_CHECK', '0')  # the launches below only record (no numbers to check)
    x, weight = make_inputs(1, 4, (5, 6), 1, 3, 1, 1, 1)
    geo = check_inputs(x, weight, 1, 1, 1)
    assert cupy_backend._column_offsets_fit(x, geo)
    huge = torch.empty_strided((1, 4, 5, 6), (1, 1, 1, 2**28), device='meta')
    assert not cupy_backend._column_offsets_fit(huge, geo)
    x_view = x.transpose(2, 3).contiguous().transpose(2, 3)  # columns 5 elements apart
    seen = []
    monkeypatch.setattr(cupy_backend, '_run_kernel', lambda plan, pointers, device: seen.append(
        (pointers[0] == x_view.data_ptr(), plan.copy_a, pointers[1] == weight.data_ptr())))
    cupy_backend.cupy_forward(x_view, weight, geo)
    monkeypatch.setattr(cupy_backend, '_PLANS', {})
    monkeypatch.setattr(cupy_backend, '_column_offsets_fit', lambda t, geo: t.dim() == 6)  # as if x were huge
    cupy_backend.cupy_forward(x_view, weight, geo)
    assert seen == [(True, False, True), (False, True, True)]


def test_only_requested_gradients_are_computed(emulated_gpu, monkeypatch):
    launched = []
    host_launch = cupy_backend._launch
    monkeypatch.setattr(cupy_backend, '_launch', lambda name, *args: (launched.append(name),
                                                                    host_launch(name, *args)))
    x, weight = make_inputs(1, 8, (6, 6), 2, 3, 1, 1, 1)
    weight.requires_grad_(True)
    out = run_cupy(x, weight, 1, 1, 1)
    out.sum().backward()
    assert launched == ['involution_forward', 'involution_grad_weight']


def test_empty_batch_launches_nothing(emulated_gpu):
    x, weight = make_inputs(0, 8, (6, 6), 2, 3, 1, 1, 1)
    out, grad_x, grad_w = run_kernels(x, weight, 1, 1, 1)
    assert out.shape == (0, 8, 6, 6) and grad_x.shape == x.shape and grad_w.shape == weight.shape


def test_views_off_the_vector_alignment_take_the_row_kernels(emulated_gpu):
    """A channels_last view whose first element is not aligned to the channel vectors (its strides are): its
    launches fall back to the row kernels, per call, and the results stay right."""
    x, weight = make_inputs(2, 32, (9, 10), 2, 7, 1, 3, 1)
    storage = torch.zeros(x.numel() + 1, dtype=x.dtype)
    shifted = storage[1:].view(2, 9, 10, 32).permute(0, 3, 1, 2)  # NHWC, one element off
    shifted.copy_(x)
    assert shifted.stride(1) == 1 and shifted.data_ptr() % 16
    for got, want, name in zip(run_kernels(shifted, weight, 1, 3, 1, 'channels_last'),
                               run_pytorch(x, weight, 1, 3, 1), ('out', 'grad_x', 'grad_w')):
        torch.testing.assert_close(got, want, msg=name)
    for name, spec in emulated_gpu:  # one-channel vectors need only the element alignment the view has
        aligned = name == 'involution_grad_input' or spec.channels_per_thread == 1  # it reads no shifted map
        assert spec.channels_last == aligned, name


def rednet_geometry(batch, channels, size, dtype=torch.float16):
    x = torch.empty(batch, channels, size, size, dtype=dtype, device='meta')
    weight = torch.empty(batch, channels // 16, 7, 7, size, size, dtype=dtype, device='meta')
    return check_inputs(x, weight, 1, 3, 1)


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('shape', SHAPES)
def test_tiling_choice(shape, layout):
    """The table's tiling fitted to each geometry: channels dividing the group's, columns a multiple of the
    stride, at most 64 weight-gradient accumulators; a launch too small to fill the GPU takes the least work
    per thread."""
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation, dtype=torch.float32)
    geo = check_inputs(x, weight, stride, padding, dilation)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        table = tiling_for(dtype, layout, geo.out_size[1])
        most, fewest = choose_spec(dtype, geo, 0, layout), choose_spec(dtype, geo, 10**9, layout)
        for spec in (most, fewest):
            assert spec.channels_last == (layout == 'channels_last')
            assert geo.group_channels % spec.channels_per_thread == 0
            assert spec.pixels_per_thread % geo.stride[1] == 0  # the input-gradient kernel relies on it
            assert spec.wgrad_pixels_per_thread == 1 or spec.wgrad_pixels_per_thread * geo.kernel[1] <= 64
        assert (fewest.channels_per_thread, fewest.pixels_per_thread, fewest.wgrad_pixels_per_thread) == (
            1, geo.stride[1], 1)
        assert most.channels_per_thread == max(c for c in (1, 2, 4, 8, 16) if c <= table.channels
                                               and geo.group_channels % c == 0)
        assert most.pixels_per_thread == geo.stride[1] * -(-table.pixels // geo.stride[1])


def test_rednet_stages_take_the_table_tiling():
    """At the RedNet-50 stage shapes from batch 64 an H100 (132 x 2048 resident threads) is filled by the
    table's tilings as they are, and each launch starts at least half as many threads as it keeps resident."""
    resident = 132 * 2048
    for channels, size in ((64, 56), (128, 28), (256, 14), (512, 7)):
        for dtype in (torch.float16, torch.float32):
            geo = rednet_geometry(64, channels, size, dtype)
            for layout in LAYOUTS:
                spec = choose_spec(dtype, geo, resident, layout)
                tiling = (spec.channels_per_thread, spec.pixels_per_thread, spec.wgrad_pixels_per_thread)
                assert tiling == tiling_for(dtype, layout, size), (size, dtype, layout)
                assert min(spec.threads(name, geo) for name in KERNEL_NAMES) >= resident // 2, (size, dtype, layout)


def test_tiling_tables():
    """The default table covers every (dtype, layout, stage class); a measured table, printed by
    benchmarks/op.py --tiling, is taken on its device only, and falls back to the defaults."""
    for dtype in ('float16', 'float32', 'float64'):
        for layout in LAYOUTS:
            assert all((dtype, layout, name) in DEFAULT_TILINGS for name in STAGE_CLASSES)
    assert [stage_class(w) for w in (112, 56, 40, 39, 28, 20, 14, 10, 9, 7, 1)] == [
        'large', 'large', 'large', 'medium', 'medium', 'medium', 'small', 'small', 'tiny', 'tiny', 'tiny']
    measured = {('float16', 'channels_last', 'large'): Tiling(2, 1, 1)}
    source = table_source('Some GPU', measured)
    assert eval('{' + source + '}', {'Tiling': Tiling}) == {'Some GPU': measured}
    tables = dict(cuda_tiling.MEASURED_TILINGS, **{'Some GPU': measured})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cuda_tiling, 'MEASURED_TILINGS', tables)
        assert tiling_for(torch.float16, 'channels_last', 56, 'Some GPU') == Tiling(2, 1, 1)
        assert tiling_for(torch.bfloat16, 'channels_last', 56, 'Some GPU') == Tiling(2, 1, 1)
        assert tiling_for(torch.float16, 'channels_last', 56) == DEFAULT_TILINGS['float16', 'channels_last', 'large']
        assert tiling_for(torch.float16, 'contiguous', 7, 'Some GPU') == DEFAULT_TILINGS['float16', 'contiguous',
                                                                                       'tiny']


def test_cupy_unavailable_is_explained(monkeypatch):
    cuda_tensor = types.SimpleNamespace(device=torch.device('cuda', 0), dtype=torch.float16)
    monkeypatch.setattr(cupy_backend, 'import_cupy', lambda: (None, "ModuleNotFoundError: No module named 'cupy'"))
    usable, reason = cupy_usable(cuda_tensor)
    assert not usable and "No module named 'cupy'" in reason and 'pip install cupy-cuda12x' in reason
    assert cupy_usable(types.SimpleNamespace(device=torch.device('cuda', 0), dtype=torch.float8_e4m3fn))[0] is False
    assert cupy_usable(torch.zeros(1))[1] == 'it runs on CUDA tensors only, and this one is on cpu'


class FakeCupy:
    """Stands in for an importable CuPy whose NVRTC cannot be loaded, or works."""
    __version__ = '14.0.0'

    def __init__(self, compile_error=None):
        self.compile_error = compile_error
        self.cuda = types.SimpleNamespace(Device=lambda index: contextlib.nullcontext())

    def RawModule(self, code):
        if self.compile_error:
            raise self.compile_error
        return types.SimpleNamespace(get_function=lambda name: name)


@pytest.fixture
def fake_cupy(monkeypatch):
    def install(compile_error=None):
        monkeypatch.setattr(cupy_backend, 'import_cupy', lambda: (FakeCupy(compile_error), None))
        cupy_backend.device_problem.cache_clear()
    yield install
    cupy_backend.device_problem.cache_clear()


def test_cupy_that_cannot_compile_is_not_used(fake_cupy, monkeypatch):
    monkeypatch.setattr(backends, '_ANNOUNCED', {'cpu', 'cuda'})
    monkeypatch.setattr(backends, '_RESOLVED', {})
    cuda_tensor = types.SimpleNamespace(device=torch.device('cuda', 0), dtype=torch.float32)
    fake_cupy(RuntimeError('CuPy failed to load libnvrtc.so.12'))
    usable, reason = cupy_usable(cuda_tensor)
    assert not usable
    assert reason.startswith('CuPy 14.0.0 cannot compile kernels for cuda:0 (RuntimeError: CuPy failed to load '
                             'libnvrtc.so.12); pip install cupy-cuda12x')
    assert backends.select_backend(cuda_tensor) == 'pytorch'
    fake_cupy()
    monkeypatch.setattr(cupy_backend.CUPY, 'verdicts', {})
    monkeypatch.setenv('INVOLUTION_MM_SELF_CHECK', '0')  # nothing to run its kernels on here
    assert cupy_usable(cuda_tensor) == (True, 'CuPy 14.0.0 compiles kernels for cuda:0; not checked '
                                              '(INVOLUTION_MM_SELF_CHECK=0)')


def test_auto_choice_is_logged_once_per_device_type(monkeypatch):
    logged = []
    monkeypatch.setattr(backends, '_log', lambda message, level: logged.append((message, level)))
    monkeypatch.setattr(backends, '_ANNOUNCED', {'cpu'})
    monkeypatch.setattr(backends, '_RESOLVED', {})
    monkeypatch.setattr(cupy_backend, 'import_cupy', lambda: (None, "ModuleNotFoundError: No module named 'cupy'"))
    cuda_tensor = types.SimpleNamespace(device=torch.device('cuda', 0), dtype=torch.float32)
    assert backends.select_backend(cuda_tensor) == 'pytorch'
    assert backends.select_backend(cuda_tensor) == 'pytorch'
    assert backends.select_backend(torch.zeros(1)) in ('cpu', 'pytorch')
    assert len(logged) == 1
    message, level = logged[0]
    assert message.startswith("involution: cuda tensors use the 'pytorch' backend: 'cupy' cannot run (CuPy is "
                              'not importable')
    assert level == backends.logging.WARNING


# The self-check of the CuPy backend, on its kernels emulated by the host build


@pytest.fixture
def checked_on_cpu(emulated_gpu, monkeypatch):
    """The emulated backend with its self-check in place: CPU tensors count as a device where CuPy compiles,
    and the dispatcher asks ``cupy_usable`` (the self-check's verdict) again."""
    monkeypatch.setattr(cupy_backend.CUPY, 'prerequisite', lambda device, dtype: (True, 'CuPy emulated'))
    cupy = backends._BACKENDS['cupy']
    monkeypatch.setitem(backends._BACKENDS, 'cupy', cupy._replace(is_usable=cupy_usable))
    return emulated_gpu


def wrong_kernel(monkeypatch, name, when=lambda a: True):
    """Make kernel ``name`` add 1 to its result where ``when(first input)``."""
    launch = cupy_backend._launch

    def run(kernel, a, b, result, *args):
        launch(kernel, a, b, result, *args)
        if kernel == name and when(a):
            result.add_(1)

    monkeypatch.setattr(cupy_backend, '_launch', run)


@pytest.mark.parametrize('emulated_gpu', [0], indirect=True)
def test_cupy_self_check_passes_on_the_real_kernels(checked_on_cpu):
    usable, reason = cupy_usable(torch.zeros(1))
    assert usable and reason.startswith('CuPy emulated; self-check passed'), reason
    assert {spec.channels_last for _, spec in checked_on_cpu} == {True, False}  # both kernel families ran


@pytest.mark.parametrize('emulated_gpu', [0], indirect=True)
@pytest.mark.parametrize('name', KERNEL_NAMES)
def test_cupy_self_check_fails_on_wrong_numbers(name, checked_on_cpu, monkeypatch):
    """A kernel that gives wrong numbers: 'cupy' raises a one-line error that says what to pass, 'auto' takes
    the PyTorch backend."""
    wrong_kernel(monkeypatch, name)
    x, weight = make_inputs(1, 8, (5, 6), 2, 3, 1, 1, 1, dtype=torch.float32)
    with pytest.raises(RuntimeError) as info:
        involution(x, weight, 1, 1, backend='cupy')
    message = str(info.value)
    assert '\n' not in message and message.startswith("involution backend 'cupy' cannot run on this input: its "
                                                      'self-check failed on cpu (float32): ')
    assert 'normalized max error' in message and message.endswith("use backend='pytorch' (or 'auto')")
    assert backends.select_backend(x) == 'pytorch'


@pytest.mark.parametrize('emulated_gpu', [0], indirect=True)
def test_cupy_variant_is_checked_on_its_first_call(emulated_gpu, monkeypatch):
    """A compiled variant that gives wrong numbers (here the channel-vector forward) although the self-check
    passed: its first call is checked on its first sample, and it runs the PyTorch backend from then on."""
    wrong_kernel(monkeypatch, 'involution_forward', when=lambda a: a.stride(1) == 1)
    x, weight = make_inputs(2, 32, (9, 10), 2, 7, 1, 3, 1, dtype=torch.float32)
    want = involution(x, weight, 1, 3, backend='pytorch')
    x_cl, w_cl = as_layout(x, 'channels_last'), as_layout(weight, 'channels_last')
    with pytest.warns(UserWarning, match=r"involution \(CuPy kernels\) failed the check of a new variant's first call "
                      r"on cpu \(float32\): involution_forward: normalized max error .*; that variant runs "
                      r"the 'pytorch' backend from now on"):
        torch.testing.assert_close(involution(x_cl, w_cl, 1, 3), want)
    launches = len(emulated_gpu)
    torch.testing.assert_close(involution(x_cl, w_cl, 1, 3), want)
    assert len(emulated_gpu) == launches  # not launched again
    torch.testing.assert_close(involution(x, weight, 1, 3), want)  # the row kernels still run
    assert len(emulated_gpu) == launches + 1


@pytest.mark.parametrize('emulated_gpu', [0], indirect=True)
def test_cupy_during_a_capture(checked_on_cpu, monkeypatch):
    """During a CUDA-graph capture nothing is checked or compiled: 'auto' takes the PyTorch backend for that
    call only (the choice is not kept), 'cupy' says to run one step first."""
    from involution_mm.ops import self_check
    monkeypatch.setattr(self_check, 'capturing', lambda device: True)
    monkeypatch.setattr(backends, 'capturing', lambda device: True)
    monkeypatch.setattr(backends, '_RESOLVED', {})
    x, weight = make_inputs(1, 8, (5, 6), 2, 3, 1, 1, 1, dtype=torch.float32)
    assert backends.select_backend(x) == 'pytorch' and backends._RESOLVED == {}
    with pytest.raises(RuntimeError, match="cannot while a CUDA graph is being captured: run one step before "
                       "capturing, or use backend='pytorch'"):
        involution(x, weight, 1, 1, backend='cupy')
    assert checked_on_cpu == []
    monkeypatch.setattr(self_check, 'capturing', lambda device: False)
    monkeypatch.setattr(backends, 'capturing', lambda device: False)
    assert backends.select_backend(x) == 'cupy'


def load_tool(name):
    """A script of benchmarks/ as a module (benchmarks/ on the path, for the scripts' shared ``timing``)."""
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    spec = importlib.util.spec_from_file_location(f'{name}_tool', osp.join(BENCHMARKS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def report():
    """benchmarks/kernel_report.py, loaded once for the tests below."""
    return load_tool('kernel_report')


@pytest.fixture(scope='module')
def compiled_variants(report, tmp_path_factory):
    """benchmarks/kernel_report.py's variants (what RedNet launches, and an odd geometry) compiled by nvcc for
    Hopper: (label, spec, cubin, ptxas report) each."""
    if shutil.which('nvcc') is None:
        pytest.skip('nvcc is not installed')
    directory = str(tmp_path_factory.mktemp('cubins'))
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda item: (*item, *report.compile_cubin(item[1], 'sm_90', directory)),
                             report.launched_variants()))


def test_nvcc_compiles_without_register_spills(report, compiled_variants):
    """nvcc (no GPU needed) builds every kernel within the 255 registers that 256-thread blocks allow,
    without spilling to local memory: every variant RedNet launches in every dtype and layout, with the
    default table's tiling of every stage class for the tuned cases."""
    assert len(compiled_variants) == 36
    assert {(spec.channels_last, spec.contiguous_rows) for _, spec, _, _ in compiled_variants} == set(VARIANTS.values())
    for label, spec, cubin, ptxas in compiled_variants:
        usage = report.register_usage(ptxas)
        assert set(usage) == set(KERNEL_NAMES), ptxas
        assert all(spilled == 0 and registers <= 255 for registers, spilled in usage.values()), f'{label}:\n{ptxas}'


# Most instructions per multiply-add in the hottest loops of the RedNet classes (K=7, stride 1) at the largest
# maps, by (layout, 16-bit): what the default tiling issues, rounded up. At 16 bits an H100 issues about 2.3
# instructions per multiply-add in the time its memory moves the bytes (docs/benchmarks.md), twice as many in
# float32. The channel-vector kernels take a whole group per thread; the row kernels take 4 channels (16 would
# issue 2.6 but leave 8 warps per multiprocessor), so their budget is looser. The first version of the row
# kernels issued about 8, most of them 64-bit address arithmetic.
MOST_INSTRUCTIONS = {('channels_last', True): 2.6, ('channels_last', False): 3.1, ('contiguous', True): 4.1,
                     ('contiguous', False): 3.3}


def test_hot_loops_issue_few_instructions_per_multiply_add(report, compiled_variants):
    """The op is memory-bound only while its loops issue few instructions besides the multiply-adds."""
    cuobjdump, env = report.find_cuobjdump()
    if cuobjdump is None:
        pytest.skip('cuobjdump is not installed (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)')
    checked = 0
    for label, spec, cubin, _ in compiled_variants:
        if spec.stride == (1, 1) and spec.kernel == (7, 7) and spec.dtype != torch.float64 and '(large' in label \
                and 'strided' not in label:
            most = MOST_INSTRUCTIONS['channels_last' if spec.channels_last else 'contiguous', spec.dtype.itemsize == 2]
            for name in KERNEL_NAMES:
                instructions, multiply_adds = report.hottest_loop(cubin, name, cuobjdump, env)
                assert multiply_adds >= 7 * 4 and instructions <= most * multiply_adds, f'{label} {name}'
                checked += 1
    assert checked == 18


def test_flop_counter_sees_the_cupy_function(emulated_gpu):
    from involution_mm.complexity import model_complexity

    class Aggregation(torch.nn.Module):
        def forward(self, x, weight):
            return run_cupy(x, weight, 2, 3, 1)

    x, weight = make_inputs(2, 32, (9, 10), 2, 7, 2, 3, 1, dtype=torch.float32)
    result = model_complexity(Aggregation(), (x, weight))
    assert result['flops'] == 2 * 32 * 5 * 5 * 49 and not result['uncounted']


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_benchmark_tiling_sweep_runs(layout, emulated_gpu, monkeypatch):
    """benchmarks/op.py --tiling, whose code otherwise runs only on a GPU, on the emulated kernels (three
    candidates, and a clock under which the last one is fastest)."""
    benchmark = load_tool('op')
    monkeypatch.setattr(benchmark, 'tiling_candidates', lambda dtype: [(1, 1), (2, 2), (4, 1)])
    clock = iter(range(100, 0, -1))
    tensors = benchmark.stage_tensors(4, 1, torch.float32, layout, torch.device('cpu'))
    forward, wgrad = benchmark.sweep_stage(*tensors, layout, lambda fn: (fn(), next(clock))[1])
    assert set(forward) == set(wgrad) == {(1, 1), (2, 2), (4, 1)}
    assert {spec.channels_last for _, spec in emulated_gpu} == {layout == 'channels_last'}
    assert benchmark.best_tiling([forward], [wgrad], layout) == Tiling(4, 1, 1)


def test_reference_formulation_on_the_host(tmp_path):
    """benchmarks/reference_involution.py, the benchmark's stand-in for the original CuPy kernel, run thread by
    thread on the host against the PyTorch backend (its figures are only worth its correctness)."""
    reference = load_tool('reference_involution')
    x, weight = make_inputs(*SHAPES[3])
    stride, padding, dilation = (pair(v) for v in SHAPES[3][-3:])
    launchers = ''.join(
        f'extern "C" void run_{name}(REFERENCE_PARAMS) {{\n'
        f'    for (emulated_thread = 0; emulated_thread < total; ++emulated_thread)\n'
        f'        {name}(a, b, result, total, channels, groups, in_h, in_w, out_h, out_w);\n}}\n'
        for name in reference.KERNEL_NAMES)
    prelude = '#define REFERENCE_ON_HOST\n#define KERNEL extern "C" void\nstatic long long emulated_thread;\n' \
              '#define THREAD_ID emulated_thread\n'
    (tmp_path / 'reference.cpp').write_text(prelude + reference.source(torch.float64, weight.shape[2:4], stride,
                                                                       padding, dilation) + launchers)
    subprocess.run(['g++', '-O1', '-shared', '-fPIC', '-Wall', '-Werror', str(tmp_path / 'reference.cpp'), '-o',
                    str(tmp_path / 'reference.so')], check=True)
    library = ctypes.CDLL(str(tmp_path / 'reference.so'))
    out, grad_x, grad_w = run_pytorch(x, weight, stride, padding, dilation)
    grad = gradient_like(out)
    sizes = (x.shape[1], weight.shape[1]) + tuple(x.shape[2:]) + tuple(out.shape[2:])
    got = {}
    for name, a, b, like in (('reference_forward', x, weight, out), ('reference_grad_input', grad, weight, x),
                             ('reference_grad_weight', grad, x, weight)):
        got[name] = torch.empty_like(like)
        function = getattr(library, f'run_{name}')
        function.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_longlong] + [ctypes.c_int] * 6
        function(a.data_ptr(), b.data_ptr(), got[name].data_ptr(), like.numel(), *sizes)
    torch.testing.assert_close(list(got.values()), [out, grad_x, grad_w])
