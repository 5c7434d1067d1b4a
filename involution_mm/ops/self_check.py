"""Which path runs: a fast path is trusted on a device only after its numbers were checked there.

Every fast GPU path of the package (the fused involution Triton kernels, the SimAM Triton kernels, the
involution op's CuPy kernels) is a :class:`CheckedPath`. Before it runs on a device for a dtype and precision
mode, its module runs a *self-check* there: forward and every gradient on a few tiny cases that together take
each branch of its kernels, synchronized, against the plain PyTorch reference computed in float64 from the
same (rounded) inputs: the normalized max error (``max |got - want| / max |want|``) within the mode's
tolerance (:data:`TOLERANCES`) and NaN/Inf where, and only where, the reference has them. A compile or launch
error fails the check as well. In addition, the first call of every compiled *variant* (what one compile
makes: kernel, dtype, compile-time constants, layouts) is checked on its first sample against the reference.

What a failed check does:

- ``'auto'`` (and ``Involution(fused='auto')``): one warning per device, dtype and variant naming the path,
  the device, the dtype and the measured error or the exception; that variant (or, for a failed self-check,
  that device and dtype) runs the PyTorch path from then on. ``'auto'`` never raises from a fast path and
  never returns its numbers unchecked.
- A fast path named explicitly (``backend='triton'``, ``backend='cupy'``, ``fused=True``): a one-line
  ``RuntimeError`` that says the check failed and what to pass instead.

While a CUDA graph is being captured nothing unchecked is compiled, launched or checked (a check
synchronizes, a first launch loads a module: both are forbidden during a capture): with ``'auto'`` an
unchecked path or variant runs the PyTorch path inside the capture (one warning: run one step before
capturing to capture the fast kernels), a named fast path raises a one-line error that says to run one step
before capturing. Nothing about the device is cached then; the check runs on the first call after the capture.

``INVOLUTION_MM_SELF_CHECK=0`` turns the checks off (the fast paths then run wherever they can start). Each
verdict is logged once (through mmengine's current logger where mmengine is installed).
"""
import logging
import os
import time
import warnings
from typing import Callable, Dict, Hashable, List, Mapping, NamedTuple, Optional, Tuple

import torch

ENV_VAR = 'INVOLUTION_MM_SELF_CHECK'
# Device types on which 'auto' takes a fast path at all (elsewhere the PyTorch path runs without a check).
# Tests add 'cpu' to simulate such a device with Triton's interpreter and the g++ build of the CUDA kernels.
AUTO_DEVICE_TYPES = ['cuda']
# Largest normalized max error accepted per precision mode. Sums are float32 (float64 for float64) in every
# kernel; the rest is the rounding of inputs and results: TF32 products keep 10 mantissa bits, float16 11,
# bfloat16 8, and the kernels' gradients pass through matrix products in the input dtype.
TOLERANCES = {'float64': 1e-8, 'float32': 1e-4, 'tf32': 1e-2, 'float16': 1e-2, 'bfloat16': 5e-2}


class Verdict(NamedTuple):
    """Whether a path runs on a device for a dtype and precision mode, and why (or why not)."""
    runs: bool
    why: str


# Not decided, because a CUDA graph is being captured (never cached).
PENDING = Verdict(False, 'not checked yet, and it cannot be while a CUDA graph is being captured')
_CAPTURE_HINT = 'run one step (forward and backward) before capturing'


def enabled() -> bool:
    """Whether self-checks run (``INVOLUTION_MM_SELF_CHECK`` is not ``0``)."""
    return os.environ.get(ENV_VAR, '1').strip() != '0'


def device_key(device: torch.device) -> Tuple[str, int]:
    """A hashable name of ``device`` (index -1 where it has none)."""
    return device.type, -1 if device.index is None else device.index


def capturing(device: torch.device) -> bool:
    """Whether a CUDA graph is being captured on ``device``'s current stream."""
    return device.type == 'cuda' and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def float32_convs_use_tf32() -> bool:
    """Whether cuDNN convolutions of float32 tensors may use TF32 (PyTorch's default), so the fused kernel's
    span product may too. Reads ``torch.backends.cudnn.conv.fp32_precision`` where torch has it: from torch
    2.9 reading the old ``torch.backends.cudnn.allow_tf32`` raises once the new per-operation switches differ."""
    conv = getattr(torch.backends.cudnn, 'conv', None)
    if conv is not None:
        try:
            precision = conv.fp32_precision
        except (AttributeError, RuntimeError):
            precision = None
        if precision in ('tf32', 'ieee'):
            return precision == 'tf32'
    try:
        return bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:  # the new switches are set inconsistently and say nothing about convolutions
        return False


def precision_mode(dtype: torch.dtype, tf32: bool = False) -> str:
    """The name a self-check is kept under: the dtype's (``'float16'``...), ``'tf32'`` for float32 products
    in TF32."""
    return 'tf32' if tf32 and dtype == torch.float32 else str(dtype).replace('torch.', '')


def compare(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor], mode: str) -> Optional[str]:
    """None when every ``got[name]`` matches ``want[name]`` (its NaN/Inf pattern, and a normalized max error
    within ``TOLERANCES[mode]``), else what differs first, in a few words with the measured error."""
    tolerance = TOLERANCES[mode]
    for name, value in got.items():
        reference = want[name]
        if tuple(value.shape) != tuple(reference.shape):
            return f'{name}: shape {tuple(value.shape)} instead of {tuple(reference.shape)}'
        value, reference = value.double(), reference.double()
        for special in (torch.isnan, torch.isposinf, torch.isneginf):
            if not torch.equal(special(value), special(reference)):
                return f'{name}: NaN or Inf where the reference has none (or the reverse)'
        finite = torch.isfinite(reference)
        if not finite.any():
            continue
        scale = reference[finite].abs().max().clamp_min(torch.finfo(torch.float64).tiny)
        error = ((value - reference)[finite].abs().max() / scale).item()
        if not error <= tolerance:
            return f'{name}: normalized max error {error:.3g} (tolerance {tolerance:g})'
    return None


def describe(error: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    message = str(error).strip().splitlines()
    return f'{type(error).__name__}: {message[0]}' if message else type(error).__name__


def log(message: str, level: int = logging.INFO) -> None:
    """Log through mmengine's current logger when mmengine is installed, else the standard logging."""
    try:
        from mmengine.logging import print_log
    except ImportError:
        logging.getLogger('involution_mm').log(level, message)
    else:
        print_log(message, logger='current', level=level)


class CheckedPath:
    """A fast path that runs on a device, dtype and precision mode only after its self-check passed there,
    and whose compiled variants are each checked on their first call.

    Args:
        name (str): What messages call it, e.g. ``'fused involution (Triton)'``.
        prerequisite (Callable): ``(device, dtype) -> (bool, why not)``: whether it can start there at all
            (its compiler installed, the device new enough...), without launching anything.
        check (Callable): ``(device, dtype, mode) -> None or what failed``: the self-check cases, run there.
        instead (str): What to pass instead of the fast path, for errors, e.g. ``"backend='reference'"``.
        fallback (str): What runs instead, for warnings, e.g. ``'PyTorch operations'``.
    """

    def __init__(self, name: str, prerequisite: Callable[[torch.device, torch.dtype], Tuple[bool, str]],
                 check: Callable[[torch.device, torch.dtype, str], Optional[str]], instead: str,
                 fallback: str) -> None:
        self.name = name
        self.prerequisite = prerequisite
        self.check = check
        self.instead = instead
        self.fallback = fallback
        self.verdicts: Dict[tuple, Verdict] = {}  # (device_key, dtype, mode) -> Verdict
        self.variants: Dict[Hashable, Optional[str]] = {}  # variant -> None (passed) or what failed
        self.seconds: Dict[tuple, float] = {}  # (device_key, dtype, mode) -> time the self-check took
        self.warned: set = set()
        PATHS.append(self)

    def verdict(self, device: torch.device, dtype: torch.dtype, mode: str) -> Verdict:
        """Whether the path runs on ``device`` for ``dtype`` in ``mode``, and why; worked out once (the
        self-check runs then) and kept, except during a CUDA-graph capture (``PENDING``)."""
        key = (device_key(device), dtype, mode)
        found = self.verdicts.get(key)
        if found is None:
            found = self._decide(device, dtype, mode)
            if found is PENDING:
                return found
            self.verdicts[key] = found
            log(f'{self.name} on {device} ({mode}): {"runs" if found.runs else "not used"}, {found.why}',
                logging.INFO if found.runs else logging.WARNING)
        return found

    def _decide(self, device: torch.device, dtype: torch.dtype, mode: str) -> Verdict:
        if capturing(device):  # even the prerequisites may load a module (CuPy's probe kernel)
            return PENDING
        runs, why = self.prerequisite(device, dtype)
        if not runs:
            return Verdict(False, why)
        if not enabled():
            return Verdict(True, f'not checked ({ENV_VAR}=0)')
        start = time.perf_counter()
        try:
            failure = self.check(device, dtype, mode)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as error:  # a compile or launch error fails the check
            failure = describe(error)
        self.seconds[device_key(device), dtype, mode] = seconds = time.perf_counter() - start
        if failure is not None:
            return Verdict(False, f'self-check failed: {failure}')
        return Verdict(True, f'self-check passed ({seconds:.2f} s)')

    def runs(self, device: torch.device, dtype: torch.dtype, mode: str, explicit: bool) -> bool:
        """Whether a call on ``device`` takes this path. With ``explicit`` (the path was named) a path that
        does not run raises a one-line RuntimeError; with ``'auto'`` the first refusal per device, dtype and
        mode is a warning."""
        verdict = self.verdict(device, dtype, mode)
        if verdict.runs:
            return True
        if explicit:
            raise RuntimeError(self._refusal(device, mode, verdict))
        if verdict is PENDING:
            self.warn_once(('capture', device_key(device), dtype, mode),
                           f'{self.name} has not been checked on {device} ({mode}) yet and cannot be while a CUDA '
                           f'graph is being captured, so the graph runs {self.fallback}; {_CAPTURE_HINT} to '
                           'capture the fast kernels')
        elif verdict.why.startswith('self-check failed'):
            self.warn_once((device_key(device), dtype, mode),
                           f'{self.name} failed its self-check on {device} ({mode}): '
                           f'{verdict.why[len("self-check failed: "):]}; using {self.fallback} instead')
        else:
            self.warn_once((device_key(device), dtype, mode),
                           f'{self.name} cannot run on {device} ({verdict.why}); using {self.fallback} instead')
        return False

    def _refusal(self, device: torch.device, mode: str, verdict: Verdict) -> str:
        if verdict is PENDING:
            return (f'{self.name} has not been checked on {device} ({mode}) and cannot be during a CUDA-graph '
                    f'capture: {_CAPTURE_HINT}, or use {self.instead}')
        if verdict.why.startswith('self-check failed'):
            return (f'{self.name} failed its self-check on {device} ({mode}): '
                    f'{verdict.why[len("self-check failed: "):]}; use {self.instead}')
        return f'{self.name} cannot run on {device}: {verdict.why}; use {self.instead}'

    def run_variant(self, variant: Hashable, device: torch.device, mode: str, explicit: bool,
                    fast: Callable[[], object], first_sample_failure: Callable[[object], Optional[str]],
                    fallback: Callable[[], object]) -> object:
        """``fast()``, the path's call of one compiled ``variant``, checked on its first call by
        ``first_sample_failure(result)`` (None, or what differs from the reference on the first sample).

        A variant whose first call failed (or raised) runs ``fallback()`` from then on, after one warning, or
        raises a one-line RuntimeError when the path was named (``explicit``). During a CUDA-graph capture a
        variant not met before is neither compiled, launched nor checked (also with the checks off):
        ``fallback()`` runs (``'auto'``) or an error says to run one step before capturing."""
        state = self.variants.get(variant, _UNCHECKED)
        if state is None:
            return fast()
        if state is _UNCHECKED:
            if capturing(device):
                if explicit:
                    raise RuntimeError(f'{self.name} meets a new variant on {device} ({mode}) during a CUDA-graph '
                                       f'capture, where it cannot be compiled or checked: {_CAPTURE_HINT}, or use '
                                       f'{self.instead}')
                self.warn_once(('capture', variant),
                               f'{self.name} meets a new variant on {device} ({mode}) during a CUDA-graph capture, '
                               f'where it cannot be compiled or checked: the graph runs {self.fallback} for it; '
                               f'{_CAPTURE_HINT} to capture the fast kernels')
                return fallback()
            if not enabled():  # not checked, but known: a capture may launch it
                result = fast()
                self.variants[variant] = None
                return result
            try:
                result = fast()
                state = first_sample_failure(result)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as error:  # a compile or launch error fails the check
                state = describe(error)
            self.variants[variant] = state
            if state is None:
                return result
        message = f'{self.name} failed the check of a new variant\'s first call on {device} ({mode}): {state}'
        if explicit:
            raise RuntimeError(f'{message}; use {self.instead}')
        self.warn_once(variant, f'{message}; that variant runs {self.fallback} from now on')
        return fallback()

    def warn_once(self, key: Hashable, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, stacklevel=3)

    def reset(self) -> None:
        """Forget every verdict, variant and warning (for tests)."""
        self.verdicts.clear()
        self.variants.clear()
        self.seconds.clear()
        self.warned.clear()


_UNCHECKED = object()
PATHS: List[CheckedPath] = []  # every fast path, in the order their modules were imported


def auto_device(device: torch.device) -> bool:
    """Whether ``'auto'`` considers a fast path on ``device`` at all (CUDA; see ``AUTO_DEVICE_TYPES``)."""
    return device.type in AUTO_DEVICE_TYPES


def summary() -> List[Tuple[str, str, str, bool, str, Optional[float]]]:
    """Every verdict reached so far: ``(path, device, mode, runs, why, seconds of its self-check)``."""
    rows = []
    for path in PATHS:
        for (device, dtype, mode), verdict in path.verdicts.items():
            name = device[0] if device[1] < 0 else f'{device[0]}:{device[1]}'
            rows.append((path.name, name, mode, verdict.runs, verdict.why, path.seconds.get((device, dtype, mode))))
    return rows
