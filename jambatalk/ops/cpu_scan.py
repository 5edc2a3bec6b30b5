"""A compiled forward-only selective scan for CPUs (``cpu_scan.c``), built with the system C compiler.

Inference on CPU spends most of a Mamba layer in the selective scan. The PyTorch path
(:func:`jambatalk.ops.selective_scan._scan_inference`) makes several passes over
``(L, d_inner, d_state)`` tensors and dispatches one call per time step; ``cpu_scan.c`` keeps each
channel's state in registers and makes one pass, its exponential inlined so that the compiler
vectorises it.

The library is compiled on first use, for the CPU features that PyTorch reports, into
``$JAMBATALK_CACHE_DIR`` (default ``$XDG_CACHE_HOME/jambatalk``, else ``~/.cache/jambatalk``), under a
name that hashes the source, the compiler and its flags, and is then reused. It is compiled with
``-ffast-math`` but linked without it, so that loading it leaves the process's floating-point mode
alone. Before first use it is checked against the PyTorch scan on a small problem. Where anything
fails (no compiler, a compile error, a mismatch, Windows) :func:`load` returns None, the reason is
logged once, and the scan stays on the PyTorch path: the results differ only by float32 rounding.
Set ``JAMBATALK_CPU_SCAN=0`` to turn it off.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch

__all__ = ["load", "available", "scan_forward", "cache_dir", "MAX_STATE", "why_unavailable"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_scan.c")
MAX_STATE = 256  # the C source's MAX_STATE
#: target flags tried in turn where PyTorch reports AVX2 or AVX512 (it does so only where AVX2 and FMA
#: are present), else the compiler's default target; the first that builds and passes the check is used
_AVX2_FLAGS = (["-mavx2", "-mfma"], [])
_FLAGS = ["-O3", "-ffast-math", "-fopenmp-simd", "-fPIC"]

_STATE: dict = {}  # "fn": the loaded function or None, "why": the reason it is None


def cache_dir() -> Path:
    """Where compiled libraries are kept."""
    if os.environ.get("JAMBATALK_CACHE_DIR"):
        return Path(os.environ["JAMBATALK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jambatalk"


def _compiler() -> Optional[list[str]]:
    cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc")
    argv = shlex.split(cc)
    if not argv or shutil.which(argv[0]) is None:
        return None
    return argv


def _build(cc: list[str], arch: list[str]) -> Path:
    """Compile and link cpu_scan.c with ``arch`` flags (or reuse the cached library); returns its path."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(cc + _FLAGS + arch).encode(), sys.platform.encode()]))
    target = cache_dir() / f"cpu_scan-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, lib = Path(tmp) / "cpu_scan.o", Path(tmp) / "cpu_scan.so"
        # two steps: linking with -ffast-math would add a constructor that sets flush-to-zero process-wide
        for argv in (cc + _FLAGS + arch + ["-c", str(SOURCE), "-o", str(obj)], cc + ["-shared", str(obj), "-o", str(lib)]):
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
        os.replace(lib, target)  # atomic: a concurrent build or a crash never leaves half a library
    return target


def _open(path: Path) -> Callable:
    lib = ctypes.CDLL(str(path))
    fn = lib.jambatalk_scan_forward
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_long] * 4 + [ctypes.c_float]
    return fn


def _self_check(fn: Callable) -> Optional[str]:
    """None when the library equals the PyTorch scan on a small problem, else what differed."""
    from .selective_scan import _scan_inference

    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(2, 5, 37, generator=g), torch.rand(2, 5, 37, generator=g) * 3
    A = -torch.rand(5, 19, generator=g) * 8
    B, C, h0 = torch.randn(2, 19, 37, generator=g), torch.randn(2, 19, 37, generator=g), torch.randn(2, 5, 19, generator=g)
    y_ref, h_ref = _scan_inference(u, delta, A, B, C, h0)
    y, h = _call(fn, u, delta, A, B, C, h0)
    err = max(((y - y_ref).abs().max() / y_ref.abs().max()).item(), ((h - h_ref).abs().max() / h_ref.abs().max()).item())
    return None if err <= 1e-5 else f"it differs from the PyTorch scan by {err:.2e} (relative)"


def load() -> Optional[Callable]:
    """The compiled scan function, building it on the first call; None where it cannot be had (logged once)."""
    if "fn" in _STATE:
        return _STATE["fn"]
    fn, why = None, None
    if os.environ.get("JAMBATALK_CPU_SCAN", "1") == "0":
        why = "JAMBATALK_CPU_SCAN=0"
    elif os.name == "nt":
        why = "it is not built on Windows"
    elif (cc := _compiler()) is None:
        why = "no C compiler was found (set CC, or install gcc or clang)"
    else:
        errors = []
        avx2 = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
        for arch in _AVX2_FLAGS if avx2 else ([],):
            try:
                fn = _open(_build(cc, arch))
            except (OSError, RuntimeError) as exc:
                errors.append(str(exc))
                continue
            why = _self_check(fn)
            if why is None:
                break
            fn = None
        else:
            why = why or "; ".join(errors)
    _STATE["fn"], _STATE["why"] = fn, why
    if fn is None:
        log.info("jambatalk: the compiled CPU scan is off (%s); using the PyTorch scan", why)
    return fn


def available() -> bool:
    """True when the compiled scan can be used."""
    return load() is not None


def why_unavailable() -> Optional[str]:
    """Why :func:`load` returned None (None when it did not, or before it was called)."""
    return _STATE.get("why")


def _call(fn: Callable, u, delta, A, B, C, h0):
    from .selective_scan import LOG_DECAY_FLOOR

    batch, d_inner, length = u.shape
    d_state = A.shape[1]
    u, delta, A = u.contiguous(), delta.contiguous(), A.contiguous()
    B_t, C_t = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (batch, L, d_state)
    h = h0.clone().contiguous() if h0 is not None else u.new_zeros(batch, d_inner, d_state)
    y = u.new_empty(batch, d_inner, length)
    status = fn(u.data_ptr(), delta.data_ptr(), A.data_ptr(), B_t.data_ptr(), C_t.data_ptr(), h.data_ptr(),
                y.data_ptr(), batch, d_inner, length, d_state, LOG_DECAY_FLOOR)
    if status != 0:
        raise RuntimeError(f"the compiled scan refused d_state={d_state} (at most {MAX_STATE})")
    return y, h


def scan_forward(u, delta, A, B, C, h0=None):
    """Forward-only scan with the compiled library: (y (batch, d_inner, L), last state).

    Float32 CPU tensors in mamba-ssm's layout (``B, C: (batch, d_state, L)``), ``delta`` after any
    bias and softplus, ``delta >= 0`` and ``A <= 0``. Raises RuntimeError when the library is unavailable.
    """
    fn = load()
    if fn is None:
        raise RuntimeError(f"the compiled CPU scan is unavailable: {why_unavailable()}")
    return _call(fn, u, delta, A, B, C, h0)
