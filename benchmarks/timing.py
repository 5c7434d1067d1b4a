"""Timing and bandwidth helpers shared by the benchmarks (``op.py``, ``layer.py``, ``models.py``, ``cpu.py``).

Imports nothing of the other benchmark scripts, so any of them can import it.
"""
import platform
import time

import torch

from involution_mm.profiling import synchronize

__all__ = ['machine_description', 'host_microseconds', 'copy_bandwidth', 'graph_ms', 'graph_copy_bandwidth',
           'synchronize']


def machine_description(device: torch.device) -> str:
    """The GPU's name, or the CPU model and the number of threads torch uses."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    model = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                  if line.startswith('model name')), platform.processor() or 'unknown CPU')
    return f'{model}, {torch.get_num_threads()} threads'


def host_microseconds(fn, device: torch.device, calls: int = 200) -> float:
    """Host time of one call: ``calls`` calls queued without synchronising, divided by their number."""
    fn()
    best = float('inf')
    for _ in range(3):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def copy_bandwidth(device: torch.device, timed) -> float:
    """Bytes per second a large tensor copy moves, counting both the read and the write."""
    source = torch.empty(2**29, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    return 2 * source.numel() / timed(lambda: target.copy_(source))


def graph_ms(fn, calls: int = 20, repeats: int = 5) -> float:
    """Device milliseconds of one ``fn()``: ``calls`` calls captured in a CUDA graph, the graph replayed
    ``repeats`` times, the median. No host time per call counts."""
    fn()  # compile and plan outside the capture
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return sorted(times)[len(times) // 2]


def graph_copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large tensor copy (read + write), device time."""
    source = torch.empty(2**29, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    return 2 * source.numel() / (graph_ms(lambda: target.copy_(source)) / 1e3)
