"""Builds the one C++ extension of involution-mm, the CPU kernels of the involution op
(``involution_mm.ops._involution_cpu``); everything else about the package is in pyproject.toml.

``pip install --no-build-isolation -e .`` (what tools/setup_env.sh runs) compiles it in place, next to the
Python sources, so a checkout on ``PYTHONPATH`` finds it too. The kernels are compiled once per instruction
set (generic, AVX2+FMA, AVX-512) in one binary that picks at run time, so it runs on any x86-64 (no
``-march=native``). Without the extension the package runs on the pure-PyTorch backend.
"""
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

CSRC = 'involution_mm/ops/csrc/cpu/'

setup(
    ext_modules=[
        CppExtension(
            'involution_mm.ops._involution_cpu',
            sources=[CSRC + name for name in ('involution_cpu.cpp', 'kernels_generic.cpp', 'kernels_avx2.cpp',
                                              'kernels_avx512.cpp')],
            # -fopenmp: at::parallel_for runs on torch's OpenMP threads (the process already has torch's
            # libgomp loaded, which this binds to). -ffp-contract=fast: fused multiply-adds under -std=c++17.
            # -fno-tree-loop-distribute-patterns: short row copies stay inline loops, not library calls.
            extra_compile_args=['-O3', '-fopenmp', '-ffp-contract=fast', '-fno-tree-loop-distribute-patterns'],
            extra_link_args=['-fopenmp'],
        )
    ],
    cmdclass={'build_ext': BuildExtension},
)
