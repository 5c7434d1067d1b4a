"""Static report on the CUDA kernels, made without a GPU: registers, spills and the instruction mix of each
kernel's hottest loop, for the variants RedNet launches, compiled by nvcc for one architecture.

    python benchmarks/kernel_report.py [--arch sm_90]

Needs nvcc; the instruction mix also needs cuobjdump and nvdisasm (from a CUDA toolkit, or
``pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm``). The op is memory-bound only while its loops issue
few instructions per multiply-add: at 16-bit precision an H100 has about 100 instruction slots per output
element for the bytes each one moves. These are instruction counts, not timings; benchmarks/op.py measures.
"""
import argparse
import collections
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, Iterator, Optional, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from involution_mm.ops.cuda_source import KERNEL_NAMES, KernelSpec, launch_spec  # noqa: E402
from involution_mm.ops.cuda_tiling import as_layout  # noqa: E402
from involution_mm.ops.geometry import check_inputs, output_memory_format, output_size  # noqa: E402

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FUSED_MULTIPLY_ADDS = ('FFMA', 'DFMA')


# A map width of each stage class (cuda_tiling.STAGE_CLASSES): RedNet-50's stage widths at 224x224
CLASS_WIDTHS = {'large': 56, 'medium': 28, 'small': 14, 'tiny': 7}
LAYOUTS = ('contiguous', 'channels_last', 'strided')


def forward_spec(dtype, width, kernel, stride, padding, dilation, group_channels, layout) -> KernelSpec:
    """The spec of the forward launch on a batch of 64 maps ``width`` wide in ``layout``, on a full GPU."""
    x = torch.empty(64, 2 * group_channels, width, width, dtype=dtype, device='meta')
    out_size = [output_size(width, *args) for args in zip(kernel, stride, padding, dilation)]
    weight = torch.empty(64, 2, *kernel, *out_size, dtype=dtype, device='meta')
    geo = check_inputs(x, weight, stride, padding, dilation)
    x, weight = as_layout(x, layout), as_layout(weight, layout)
    out = torch.empty(64, x.shape[1], *out_size, dtype=dtype, device='meta',
                      memory_format=output_memory_format(x))
    return launch_spec('involution_forward', x, weight, out, geo, 0)


def launched_variants(every_class: bool = True) -> Iterator[Tuple[str, KernelSpec]]:
    """(label, spec) of the variants RedNet launches (K=7, stride 1 and 2, 16 channels per group), by the
    default tiling table, in every dtype and layout, and of one odd geometry. Every stage class of the tuned
    cases (float16 and float32, stride 1, contiguous and channels_last) with ``every_class``, else only the
    largest maps' class; a spec that several classes share is listed once, labelled with all of them."""
    cases = [(dtype, (7, 7), (stride, stride), (3, 3), (1, 1), 16, layout)
             for dtype in DTYPES for stride in (1, 2) for layout in LAYOUTS]
    cases += [(torch.float16, (3, 5), (1, 3), (1, 2), (2, 1), 2, layout) for layout in LAYOUTS]
    for dtype, kernel, stride, padding, dilation, group_channels, layout in cases:
        tuned = dtype in (torch.float16, torch.float32) and stride == (1, 1) and layout != 'strided'
        classes = CLASS_WIDTHS if every_class and tuned else ['large']
        specs = collections.defaultdict(list)  # spec -> its classes, in the order met
        for stage_class in classes:
            args = (dtype, CLASS_WIDTHS[stage_class], kernel, stride, padding, dilation, group_channels, layout)
            specs[forward_spec(*args)].append(stage_class)
        for spec, names in specs.items():
            label = f'{str(dtype)[6:]} K={kernel[0]}x{kernel[1]} stride={stride[0]}x{stride[1]} {layout}'
            yield f'{label} ({", ".join(names)})', spec


def compile_cubin(spec: KernelSpec, arch: str, directory: str) -> Tuple[str, str]:
    """Compile ``spec`` with nvcc; returns the cubin's path and ptxas's verbose report. Raises on failure."""
    stem = osp.join(directory, f'spec_{abs(hash(spec))}')
    with open(stem + '.cu', 'w') as f:
        f.write(spec.source())
    proc = subprocess.run(['nvcc', '-cubin', f'-arch={arch}', '-Xptxas', '-v', '-o', stem + '.cubin', stem + '.cu'],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f'nvcc failed on {spec}:\n{proc.stderr}')
    return stem + '.cubin', proc.stderr


def register_usage(ptxas_report: str) -> Dict[str, Tuple[int, int]]:
    """kernel name -> (registers, bytes spilled to local memory), read from ptxas's verbose report."""
    usage, kernel, spilled = {}, None, 0
    for line in ptxas_report.splitlines():
        if (match := re.search(r"Compiling entry function '(\w+)'", line)):
            kernel, spilled = match.group(1), 0
        elif (match := re.search(r'(\d+) bytes spill stores', line)):
            spilled = int(match.group(1))
        elif (match := re.search(r'Used (\d+) registers', line)) and kernel:
            usage[kernel] = (int(match.group(1)), spilled)
    return usage


def find_cuobjdump() -> Tuple[Optional[str], Dict[str, str]]:
    """cuobjdump's path (on PATH, or from the nvidia-cuda-cuobjdump wheel) and the environment it runs in,
    with nvdisasm's folder on PATH; (None, {}) when it is missing."""
    candidates = [shutil.which('cuobjdump')]
    try:
        import nvidia  # namespace package of NVIDIA's CUDA wheels
        candidates += [osp.join(root, sub, 'bin', 'cuobjdump') for root in nvidia.__path__ for sub in os.listdir(root)]
    except ImportError:
        pass
    for path in filter(None, candidates):
        if osp.isfile(path):
            env = dict(os.environ, PATH=osp.dirname(path) + os.pathsep + os.environ.get('PATH', ''))
            return path, env
    return None, {}


def hottest_loop(cubin: str, kernel: str, cuobjdump: str, env: Dict[str, str]) -> Tuple[int, int]:
    """(instructions, fused multiply-adds) in the longest loop body of ``kernel``'s SASS."""
    sass = subprocess.run([cuobjdump, '-sass', '-fun', kernel, cubin], capture_output=True, text=True, env=env,
                          check=True).stdout
    code = [(int(address, 16), opcode, operands) for address, opcode, operands in re.findall(
        r'/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);', sass)]
    best = (0, 0)
    for address, opcode, operands in code:
        target = re.search(r'0x([0-9a-f]+)', operands) if opcode.startswith('BRA') else None
        start = int(target.group(1), 16) if target else address
        if start < address:  # a backward branch closes a loop
            body = collections.Counter(op.split('.')[0] for a, op, _ in code if start <= a <= address)
            best = max(best, (sum(body.values()), sum(body[op] for op in FUSED_MULTIPLY_ADDS)))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='sm_90', help='GPU architecture to compile for (default: sm_90, Hopper)')
    args = parser.parse_args()
    if shutil.which('nvcc') is None:
        sys.exit('kernel_report: nvcc is not on PATH; install a CUDA toolkit')
    cuobjdump, env = find_cuobjdump()
    if cuobjdump is None:
        print('cuobjdump not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm): registers only\n')
    version = subprocess.run(['nvcc', '--version'], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    print(f'Kernels compiled for {args.arch} by {version}. Per kernel: registers per thread, bytes spilled, '
          'and in its hottest loop instructions per fused multiply-add.\n')
    short = [name.replace('involution_', '') for name in KERNEL_NAMES]
    print('| variant | channels x columns / wgrad columns | ' + ' | '.join(short) + ' |')
    print('|---|---|' + '---|' * len(short))
    with tempfile.TemporaryDirectory() as directory:
        for label, spec in launched_variants():
            cubin, report = compile_cubin(spec, args.arch, directory)
            usage = register_usage(report)
            cells = []
            for name in KERNEL_NAMES:
                registers, spilled = usage[name]
                cell = f'{registers} regs' + (f', {spilled} B spilled' if spilled else '')
                if cuobjdump:
                    instructions, fmas = hottest_loop(cubin, name, cuobjdump, env)
                    cell += f', {instructions / max(fmas, 1):.2f}'
                cells.append(cell)
            tiling = f'{spec.channels_per_thread} x {spec.pixels_per_thread} / {spec.wgrad_pixels_per_thread}'
            print(f'| {label} | {tiling} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
