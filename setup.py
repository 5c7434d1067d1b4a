"""Builds the one C++ extension of involution-mm, the CPU kernels of the involution op
(``involution_mm.ops._involution_cpu``); everything else about the package is in pyproject.toml.

``pip install --no-deps --no-build-isolation -e .`` (what tools/setup_env.sh runs) compiles it in place, next to
the Python sources, so a checkout on ``PYTHONPATH`` finds it too. The kernels are compiled once per instruction
set (generic, AVX2+FMA, AVX-512) in one binary that picks at run time, so it runs on any x86-64 (no
``-march=native``). The extension is optional: where torch is not importable at build time (an isolated build)
or the compiler fails, the package is installed without it and runs on the pure-PyTorch backend.
"""
import sys

from setuptools import setup

CSRC = 'involution_mm/ops/csrc/cpu/'
SKIPPED = ('warning: the CPU kernels of involution-mm are not built ({}); CPU tensors will run the PyTorch '
           'backend. Build them with: pip install --no-deps --no-build-isolation -e .')

try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError as error:  # pip's build isolation without torch
    print(SKIPPED.format(f'torch is not importable at build time: {error}'), file=sys.stderr)
    setup()
else:

    class OptionalBuildExtension(BuildExtension):
        """Installs the package without the kernels, saying so, where they do not compile."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as error:  # CompileError, LinkError, a missing compiler or ninja failure
                print(SKIPPED.format(f'{type(error).__name__}: {error}'), file=sys.stderr)
                # not copied in place or listed among the outputs (a new list: the build loop keeps its own)
                self.extensions = [other for other in self.extensions if other is not ext]

    setup(
        ext_modules=[
            CppExtension(
                'involution_mm.ops._involution_cpu',
                sources=[CSRC + name for name in ('involution_cpu.cpp', 'kernels_generic.cpp', 'kernels_avx2.cpp',
                                                  'kernels_avx512.cpp')],
                # -fopenmp: at::parallel_for runs on torch's OpenMP threads (the process already has torch's
                # libgomp loaded, which this binds to). -ffp-contract=fast: fused multiply-adds under
                # -std=c++17. -fno-tree-loop-distribute-patterns: short row copies stay inline loops.
                extra_compile_args=['-O3', '-fopenmp', '-ffp-contract=fast', '-fno-tree-loop-distribute-patterns'],
                extra_link_args=['-fopenmp'],
            )
        ],
        cmdclass={'build_ext': OptionalBuildExtension},
    )
