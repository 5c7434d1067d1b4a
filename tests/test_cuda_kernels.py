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
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import REPO
from op_cases import SHAPES, make_inputs, memory_layouts, pair

from involution_mm.ops import backends, cupy_backend, involution
from involution_mm.ops.cuda_source import BLOCK_SIZE, KERNEL_NAMES, KernelSpec, choose_spec
from involution_mm.ops.cupy_backend import cupy_usable
from involution_mm.ops.geometry import check_inputs

# What the CUDA-only parts of involution_kernels.cu become on the host: a global thread index, plain loads,
# and IEEE half conversions through GCC's _Float16.
HOST_PRELUDE = r'''
#define INVOLUTION_EMULATE_ON_HOST
#include <cstring>
#define KERNEL extern "C" void
#define DEVICE static inline
static long long emulated_thread;
#define THREAD_ID emulated_thread
#define LOAD(ptr) (*(ptr))
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
        subprocess.run(['g++', '-O1', '-std=c++17', '-shared', '-fPIC', '-Wall', '-Werror', '-Wno-unknown-pragmas',
                        stem + '.cpp', '-o', stem + '.so'], check=True)
        library = ctypes.CDLL(stem + '.so')
        for name in KERNEL_NAMES:
            getattr(library, f'emulate_{name}').argtypes = ARG_TYPES
        return library

    return load


def emulated_launch(host_kernels):
    """A stand-in for ``cupy_backend._run_kernel`` that runs a planned launch on the host build."""

    def run(plan, pointers, device):
        spec, name = plan.kernel
        assert (spec, name) == (plan.spec, plan.name)
        threads = int(plan.scalars[0])
        assert 0 < threads <= plan.grid[0] * BLOCK_SIZE < threads + BLOCK_SIZE
        getattr(host_kernels(spec), f'emulate_{name}')(*[int(v) for v in pointers + plan.scalars])

    return run


@pytest.fixture(params=[0, 10**9], ids=['most-channels-per-thread', 'one-channel-per-thread'])
def emulated_gpu(request, monkeypatch, host_kernels):
    """Make the CuPy backend run on CPU tensors, its launches on the host build of the kernels; ``params`` is
    the device's resident threads, which decides how many channels a thread takes. Everything else (the
    public function, the registered ops and their autograd, launch planning) is the real code."""
    cupy = backends._BACKENDS['cupy']
    monkeypatch.setitem(backends._BACKENDS, 'cupy', cupy._replace(is_usable=lambda x: (True, 'emulated')))
    monkeypatch.setattr(backends, '_RESOLVED', {})
    monkeypatch.setattr(cupy_backend, '_PLANS', {})
    monkeypatch.setattr(cupy_backend, 'compiled_kernels',
                        lambda spec, device_index: {name: (spec, name) for name in KERNEL_NAMES})
    monkeypatch.setattr(cupy_backend, '_run_kernel', emulated_launch(host_kernels))
    monkeypatch.setattr(cupy_backend, 'resident_threads', lambda device_index: request.param)
    return request.param


def run_cupy(x, weight, stride, padding, dilation):
    return involution(x, weight, stride, padding, dilation, backend='cupy')


def run_kernels(x, weight, stride, padding, dilation):
    """The CuPy backend on CPU tensors (its kernels emulated); returns out, grad_x, grad_w."""
    x, weight = x.detach().requires_grad_(True), weight.detach().requires_grad_(True)
    out = run_cupy(x, weight, stride, padding, dilation)
    grad = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape).to(out.dtype)
    return (out, ) + torch.autograd.grad(out, (x, weight), grad)


def run_pytorch(x, weight, stride, padding, dilation):
    x, weight = x.detach().requires_grad_(True), weight.detach().requires_grad_(True)
    out = involution(x, weight, stride, padding, dilation, backend='pytorch')
    grad = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape).to(out.dtype)
    return (out, ) + torch.autograd.grad(out, (x, weight), grad)


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last], ids=['rows', 'strided'])
@pytest.mark.parametrize('shape', SHAPES)
def test_kernels_match_pytorch_backend_float64(shape, memory_format, emulated_gpu):
    """Both compiled variants: unit column strides (contiguous) and column strides read at run time."""
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation)
    x = x.contiguous(memory_format=memory_format)
    for got, want, name in zip(run_kernels(x, weight, stride, padding, dilation),
                               run_pytorch(x, weight, stride, padding, dilation), ('out', 'grad_x', 'grad_w')):
        torch.testing.assert_close(got, want, msg=name)


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float16, 1e-3), (torch.bfloat16, 8e-3)])
@pytest.mark.parametrize('shape', [SHAPES[1], SHAPES[3], SHAPES[6]])
def test_kernels_in_every_precision(shape, dtype, tol, emulated_gpu):
    """Same sums in float32 as the PyTorch backend, so the two differ by about one rounding of the result."""
    *sizes, stride, padding, dilation = shape
    x, weight = (t.to(dtype) for t in make_inputs(*sizes, stride, padding, dilation))
    exact = run_pytorch(x.double(), weight.double(), stride, padding, dilation)
    for got, want, ref, name in zip(run_kernels(x, weight, stride, padding, dilation),
                                    run_pytorch(x, weight, stride, padding, dilation), exact,
                                    ('out', 'grad_x', 'grad_w')):
        assert got.dtype == dtype, name
        torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol * ref.abs().max().item(), msg=name)
        torch.testing.assert_close(got.double(), want.double(), rtol=2 * tol,
                                   atol=2 * tol * ref.abs().max().item(), msg=name)


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


@pytest.mark.parametrize('shape', SHAPES)
def test_tiling_choice(shape):
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation, dtype=torch.float32)
    geo = check_inputs(x, weight, stride, padding, dilation)
    for dtype in (torch.float16, torch.float32, torch.float64):
        most, fewest = choose_spec(dtype, geo, 0), choose_spec(dtype, geo, 10**9)
        for spec in (most, fewest):
            assert geo.group_channels % spec.channels_per_thread == 0
            assert spec.pixels_per_thread % geo.stride[1] == 0  # the input-gradient kernel relies on it
            assert spec.wgrad_pixels_per_thread == 1 or spec.wgrad_pixels_per_thread * geo.kernel[1] <= 64
        assert fewest.channels_per_thread == 1
        limit = 4 if dtype == torch.float64 else 16 if geo.stride == (1, 1) else 8
        assert most.channels_per_thread == max(c for c in (1, 2, 4, 8, 16) if c <= limit
                                               and geo.group_channels % c == 0)


def test_rednet_stage_tiling():
    """At the RedNet-50 stage shapes (batch 64, 16 channels per group) threads take all 16 channels of their
    group, so each kernel weight is read once, except where that would leave an H100 (132 x 2048 resident
    threads) under-filled."""
    resident = 132 * 2048
    chosen = {}
    for channels, size in ((64, 56), (128, 28), (256, 14), (512, 7)):
        x = torch.empty(64, channels, size, size, device='meta')
        weight = torch.empty(64, channels // 16, 7, 7, size, size, device='meta')
        chosen[size] = choose_spec(torch.float16, check_inputs(x, weight, 1, 3, 1), resident).channels_per_thread
    assert chosen[56] == 16 and chosen[7] < 16


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
    assert cupy_usable(cuda_tensor) == (True, 'CuPy 14.0.0 compiles kernels for cuda:0')


def test_auto_choice_is_logged_once_per_device_type(monkeypatch):
    logged = []
    monkeypatch.setattr(backends, '_log', lambda message, level: logged.append((message, level)))
    monkeypatch.setattr(backends, '_ANNOUNCED', {'cpu'})
    monkeypatch.setattr(backends, '_RESOLVED', {})
    monkeypatch.setattr(cupy_backend, 'import_cupy', lambda: (None, "ModuleNotFoundError: No module named 'cupy'"))
    cuda_tensor = types.SimpleNamespace(device=torch.device('cuda', 0), dtype=torch.float32)
    assert backends.select_backend(cuda_tensor) == 'pytorch'
    assert backends.select_backend(cuda_tensor) == 'pytorch'
    assert backends.select_backend(torch.zeros(1)) == 'pytorch'
    assert len(logged) == 1
    message, level = logged[0]
    assert message.startswith("involution: cuda tensors use the 'pytorch' backend: 'cupy' cannot run (CuPy is "
                              'not importable')
    assert level == backends.logging.WARNING


def load_tool(name):
    """A script of tools/ as a module."""
    spec = importlib.util.spec_from_file_location(f'{name}_tool', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def report():
    """tools/kernel_report.py, loaded once for the tests below."""
    return load_tool('kernel_report')


@pytest.fixture(scope='module')
def compiled_variants(report, tmp_path_factory):
    """tools/kernel_report.py's variants (what RedNet launches, and an odd geometry) compiled by nvcc for
    Hopper: (label, spec, cubin, ptxas report) each."""
    if shutil.which('nvcc') is None:
        pytest.skip('nvcc is not installed')
    directory = str(tmp_path_factory.mktemp('cubins'))
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda item: (*item, *report.compile_cubin(item[1], 'sm_90', directory)),
                             report.launched_variants()))


def test_nvcc_compiles_without_register_spills(report, compiled_variants):
    """nvcc (no GPU needed) builds every kernel within the 255 registers that 256-thread blocks allow,
    without spilling to local memory."""
    assert len(compiled_variants) == 18
    for label, spec, cubin, ptxas in compiled_variants:
        usage = report.register_usage(ptxas)
        assert set(usage) == set(KERNEL_NAMES), ptxas
        assert all(spilled == 0 and registers <= 255 for registers, spilled in usage.values()), f'{label}:\n{ptxas}'


def test_hot_loops_issue_few_instructions_per_multiply_add(report, compiled_variants):
    """The op is memory-bound only while its loops issue few instructions besides the multiply-adds: at most
    3 per multiply-add in the three kernels of the classes RedNet runs on contiguous maps (the first version
    of these kernels issued about 8, most of them 64-bit address arithmetic)."""
    cuobjdump, env = report.find_cuobjdump()
    if cuobjdump is None:
        pytest.skip('cuobjdump is not installed (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)')
    checked = 0
    for label, spec, cubin, _ in compiled_variants:
        if spec.contiguous_rows and spec.stride == (1, 1) and spec.kernel == (7, 7) and spec.dtype != torch.float64:
            for name in KERNEL_NAMES:
                instructions, multiply_adds = report.hottest_loop(cubin, name, cuobjdump, env)
                assert multiply_adds >= 7 * 4 and instructions <= 3 * multiply_adds, f'{label} {name}'
                checked += 1
    assert checked == 9


def test_flop_counter_sees_the_cupy_function(emulated_gpu):
    from involution_mm.complexity import model_complexity

    class Aggregation(torch.nn.Module):
        def forward(self, x, weight):
            return run_cupy(x, weight, 2, 3, 1)

    x, weight = make_inputs(2, 32, (9, 10), 2, 7, 2, 3, 1, dtype=torch.float32)
    result = model_complexity(Aggregation(), (x, weight))
    assert result['flops'] == 2 * 32 * 5 * 5 * 49 and not result['uncounted']


def test_benchmark_tiling_sweep_runs(emulated_gpu):
    """tools/benchmark.py --tiling, whose code otherwise runs only on a GPU, on the emulated kernels."""
    benchmark = load_tool('benchmark')
    x, weight = make_inputs(1, 16, (7, 7), 1, 7, 1, 3, 1, dtype=torch.float32)
    lines = benchmark._tiling_lines(4, x, weight, torch.randn_like(x), lambda fn: (fn(), 1e-3)[1])
    assert lines[0].startswith('# stage 4, CuPy kernels by channels per thread')
    assert [line[3:5] for line in lines[1:]] == [' 1', ' 2', ' 4', ' 8', '16']
    assert sum('*' in line for line in lines) == 1
