"""Wall time and peak memory of a callable, on CPU or CUDA; used by the benchmarks and the tests."""
import statistics
import time
from typing import Callable, List

import torch
from torch.profiler import ProfilerActivity, profile


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated while ``fn`` runs, beyond what was allocated before it.

    CUDA: the caching allocator's peak statistics. CPU: the running sum of the profiler's per-event memory
    records in time order (allocations attributed to each op, minus frees).
    """
    device = torch.device(device)
    if device.type == 'cuda':
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def wall_times(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> List[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn`` after ``warmup`` calls (device synchronised)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median_time(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    """Median of :func:`wall_times`."""
    return statistics.median(wall_times(fn, device, repeats, warmup))
