"""Compiled forward-only kernels for CPUs (``cpu_scan.c``): the Mamba mixer's and the MoE's gate, built with
the system C compiler.

Inference on CPU spends most of a Mamba layer in the selective scan. The PyTorch path
(:func:`jambatalk.ops.selective_scan._scan_inference`) makes several passes over
``(L, d_inner, d_state)`` tensors and dispatches one call per time step; ``cpu_scan.c`` makes one
pass, its exponential inlined so that the compiler vectorises it. :func:`scan_forward` is the scan
alone in mamba-ssm's layout; :func:`mamba_inner` is everything in a Mamba mixer between its two
projections (conv and SiLU, step sizes, scan, skip, gate) on the projections' own time-major layout,
which is what :class:`~jambatalk.model.mamba.MambaMixer` runs for inference. :func:`moe_gate` is the
mixture-of-experts' gate between its two matrix products (softmax, GELU and scaling in one pass), which
:class:`~jambatalk.model.moe.MoE` runs for inference when every token visits every expert.

Where PyTorch runs on GNU OpenMP (its Linux wheels), the library is built with OpenMP and linked to the
libgomp already loaded: the scan's blocks of channels, and the conv's and the MoE gate's rows, are shared
between PyTorch's threads (``torch.get_num_threads()``), the same values on any number of them.

The library is compiled on first use, for the CPU features that PyTorch reports, into
``$JAMBATALK_CACHE_DIR`` (default ``$XDG_CACHE_HOME/jambatalk``, else ``~/.cache/jambatalk``), under a
name that hashes the source, the compiler and its flags, and is then reused. It is compiled with
``-ffast-math`` but linked without it, so that loading it leaves the process's floating-point mode
alone. Before first use it is checked against the PyTorch paths on small problems. Where anything
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
from types import SimpleNamespace
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .selective_scan import LOG_DECAY_FLOOR

__all__ = ["load", "available", "scan_forward", "mamba_inner", "mamba_inner_prepared", "mamba_weights",
           "MambaWeights", "mamba_inner_reference", "moe_gate", "moe_gate_prepared", "moe_gate_reference", "cache_dir",
           "MAX_STATE", "MAX_EXPERTS", "why_unavailable"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_scan.c")
MAX_STATE = 256  # the C source's MAX_STATE
MAX_EXPERTS = 256  # the C source's MAX_EXPERTS
LOG2E = 1.4426950408889634
#: the decays' floor as the Mamba kernel takes it: its exponents are base 2
_LOG2_DECAY_FLOOR = LOG_DECAY_FLOOR * LOG2E
#: target flags tried in turn for the CPU capability PyTorch reports (it reports AVX2 only where FMA is
#: present too, and AVX512 only with AVX512F); the first that builds and passes the check is used. gcc
#: prefers 256-bit vectors even on AVX-512 targets; 512-bit ones make the scans about 1.4x faster.
_ARCH_FLAGS = {
    "AVX512": (["-mavx512f", "-mfma", "-mprefer-vector-width=512"], ["-mavx2", "-mfma"], []),
    "AVX2": (["-mavx2", "-mfma"], []),
}
_FLAGS = ["-O3", "-ffast-math", "-fopenmp-simd", "-fPIC"]
#: tried first where PyTorch runs on GNU OpenMP: the kernels then share their work between PyTorch's
#: own threads (the library links the libgomp already loaded, so no second thread pool is started)
_OPENMP = ["-fopenmp"]

_STATE: dict = {}  # "fn": the loaded functions or None, "why": the reason it is None


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
        link = cc + [flag for flag in arch if flag in _OPENMP] + ["-shared", str(obj), "-o", str(lib)]
        for argv in (cc + _FLAGS + arch + ["-c", str(SOURCE), "-o", str(obj)], link):
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
        os.replace(lib, target)  # atomic: a concurrent build or a crash never leaves half a library
    return target


def _torch_runs_on_libgomp() -> bool:
    """Whether GNU OpenMP's runtime (libgomp.so.1) is loaded, as PyTorch's Linux wheels load it."""
    try:
        with open("/proc/self/maps") as maps:
            return any("/libgomp.so.1" in line for line in maps)
    except OSError:
        return False


def _open(path: Path) -> SimpleNamespace:
    lib = ctypes.CDLL(str(path))
    p, n, f = ctypes.c_void_p, ctypes.c_long, ctypes.c_float
    fns = SimpleNamespace(scan=lib.jambatalk_scan_forward, conv=lib.jambatalk_mamba_conv,
                          mamba_scan=lib.jambatalk_mamba_scan, moe_gate=lib.jambatalk_moe_gate)
    fns.scan.argtypes = [p] * 7 + [n] * 4 + [f]
    fns.conv.argtypes = [p, n, p, p, p, p, n, n, n, n, n]
    fns.mamba_scan.argtypes = [p, p, n, n, p, p, p, p, p, n, p, p, p, n, n, n, n, f, n]
    fns.moe_gate.argtypes = [p, n, n, n, n, p, n]
    for fn in (fns.scan, fns.conv, fns.mamba_scan, fns.moe_gate):
        fn.restype = ctypes.c_int
    return fns


def _self_check(lib: SimpleNamespace) -> Optional[str]:
    """None when the library equals the PyTorch paths on small problems, else what differed."""
    from .selective_scan import _scan_inference

    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(2, 5, 37, generator=g), torch.rand(2, 5, 37, generator=g) * 3
    A = -torch.rand(5, 19, generator=g) * 8
    B, C, h0 = torch.randn(2, 19, 37, generator=g), torch.randn(2, 19, 37, generator=g), torch.randn(2, 5, 19, generator=g)
    pairs = list(zip(_call(lib, u, delta, A, B, C, h0), _scan_inference(u, delta, A, B, C, h0)))
    # any d_state (5), and 16 and 8 in register blocks of channels with the rest (40 = 2 x 16 + 8) after them
    for d_inner, d_state in ((6, 5), (40, 16), (20, 8)):
        args = mamba_check_inputs(batch=2, d_inner=d_inner, d_state=d_state, dt_rank=3, d_conv=4, length=37, seed=1)
        weights = mamba_weights(*(args[k] for k in _WEIGHT_ARGS))
        pairs += list(zip(_mamba_inner(lib, args["xz"], weights, args["conv_state"], args["ssm_state"]),
                          mamba_inner_reference(**args)))
    # the MoE gate: 3 experts of 21 (16 in vector lanes and 5 after them), values across GELU's range
    rows = torch.randn(37, 3 * 22, generator=g) * 4
    pairs += list(zip(_moe_gate(lib, rows.clone(), 3, 21), moe_gate_reference(rows.clone(), 3, 21)))
    err = max(((x - ref).abs().max() / ref.abs().max()).item() for x, ref in pairs)
    return None if err <= 1e-5 else f"it differs from the PyTorch path by {err:.2e} (relative)"


def load() -> Optional[SimpleNamespace]:
    """The compiled functions (``scan``, ``conv``, ``mamba_scan``, ``moe_gate``), building the library on the first call;
    None where it cannot be had (the reason is logged once)."""
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
        archs = _ARCH_FLAGS.get(torch.backends.cpu.get_cpu_capability(), ([],))
        if _torch_runs_on_libgomp():
            archs = [flags for arch in archs for flags in (arch + _OPENMP, arch)]
        for arch in archs:
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


def _check_float32(t: torch.Tensor, what: str, path: str = "Mamba path") -> None:
    """The kernels read and write float32 CPU memory, nothing else: any other tensor is refused before a call."""
    if t.dtype != torch.float32 or t.device.type != "cpu":
        raise ValueError(f"the compiled {path} takes float32 CPU tensors, got {what} in {t.dtype} on {t.device} "
                         "(under autocast?)")


def _call(lib: SimpleNamespace, u, delta, A, B, C, h0):
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("h0", h0)):
        if t is not None:
            _check_float32(t, name, "scan")
    batch, d_inner, length = u.shape
    d_state = A.shape[1]
    u, delta, A = u.contiguous(), delta.contiguous(), A.contiguous()
    B_t, C_t = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (batch, L, d_state)
    h = h0.clone().contiguous() if h0 is not None else u.new_zeros(batch, d_inner, d_state)
    y = u.new_empty(batch, d_inner, length)
    status = lib.scan(u.data_ptr(), delta.data_ptr(), A.data_ptr(), B_t.data_ptr(), C_t.data_ptr(), h.data_ptr(),
                      y.data_ptr(), batch, d_inner, length, d_state, LOG_DECAY_FLOOR)
    if status != 0:
        raise RuntimeError(f"the compiled scan refused d_state={d_state} (at most {MAX_STATE})")
    return y, h


def scan_forward(u, delta, A, B, C, h0=None):
    """Forward-only scan with the compiled library: (y (batch, d_inner, L), last state).

    Float32 CPU tensors in mamba-ssm's layout (``B, C: (batch, d_state, L)``), ``delta`` after any
    bias and softplus, ``delta >= 0`` and ``A <= 0``. Raises RuntimeError when the library is unavailable.
    """
    lib = load()
    if lib is None:
        raise RuntimeError(f"the compiled CPU scan is unavailable: {why_unavailable()}")
    return _call(lib, u, delta, A, B, C, h0)


# ----------------------------------------------------------------------------- a whole Mamba mixer


_WEIGHT_ARGS = ("conv_weight", "conv_bias", "x_proj_weight", "dt_proj_weight", "dt_bias", "A", "D")


class MambaWeights(NamedTuple):
    """A Mamba mixer's weights in the layouts the compiled kernels read (from :func:`mamba_weights`)."""

    conv_weight: torch.Tensor  # (d_conv, d_inner)
    conv_bias: torch.Tensor  # (d_inner,)
    x_proj_weight: torch.Tensor  # (dt_rank + 2 d_state, d_inner)
    dt_weight: torch.Tensor  # (dt_rank, d_inner): dt_proj's weight transposed
    dt_bias: torch.Tensor  # (d_inner,)
    A2: torch.Tensor  # (d_state, d_inner): A transposed, times log2(e) (the kernel's exponents are base 2)
    D: torch.Tensor  # (d_inner,)


def mamba_weights(conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A, D) -> MambaWeights:
    """:func:`mamba_inner`'s weight arguments laid out for the kernels: contiguous float32 tensors, detached
    (views of the arguments where those are laid out so already, else copies)."""
    d_inner, d_conv = conv_weight.shape[0], conv_weight.shape[-1]
    with torch.no_grad():
        return MambaWeights(
            conv_weight.detach().reshape(d_inner, d_conv).t().float().contiguous(),
            conv_bias.detach().float().contiguous(),
            x_proj_weight.detach().float().contiguous(),
            dt_proj_weight.detach().t().float().contiguous(),
            dt_bias.detach().float().contiguous(),
            (A.detach().t().float() * LOG2E).contiguous(),
            D.detach().float().contiguous(),
        )


def _mamba_inner(lib: SimpleNamespace, xz, weights: MambaWeights, conv_state=None, ssm_state=None):
    _check_float32(xz, "in_proj's output")
    if conv_state is not None:
        _check_float32(conv_state, "the conv state")
    batch, length, two_inner = xz.shape
    d_inner, (d_conv, _), (d_state, _) = two_inner // 2, weights.conv_weight.shape, weights.A2.shape
    dt_rank = weights.dt_weight.shape[0]
    xz = xz.contiguous()
    prev = None if conv_state is None else conv_state.transpose(1, 2).contiguous()  # (batch, d_conv - 1, d_inner)
    u = xz.new_empty(batch, length, d_inner)
    lib.conv(xz.data_ptr(), two_inner, None if prev is None else prev.data_ptr(), weights.conv_weight.data_ptr(),
             weights.conv_bias.data_ptr(), u.data_ptr(), batch, length, d_inner, d_conv, torch.get_num_threads())
    x_dbl = F.linear(u, weights.x_proj_weight)  # (batch, L, dt_rank + 2 d_state): [dt | B | C]
    _check_float32(x_dbl, "x_proj's output")
    h = (xz.new_zeros(batch, d_state, d_inner) if ssm_state is None  # a new tensor: the kernel writes into it
         else ssm_state.transpose(1, 2).float().clone(memory_format=torch.contiguous_format))
    y = xz.new_empty(batch, length, d_inner)
    work = xz.new_empty(3 * d_inner)
    status = lib.mamba_scan(u.data_ptr(), x_dbl.data_ptr(), x_dbl.shape[-1], dt_rank, weights.dt_weight.data_ptr(),
                            weights.dt_bias.data_ptr(), weights.A2.data_ptr(), weights.D.data_ptr(),
                            xz.data_ptr() + d_inner * xz.element_size(), two_inner, h.data_ptr(), y.data_ptr(),
                            work.data_ptr(), batch, length, d_inner, d_state,
                            _LOG2_DECAY_FLOOR,
                            torch.get_num_threads())
    if status != 0:
        raise RuntimeError("the compiled Mamba scan refused its decay floor")
    return y, h.transpose(1, 2)


def mamba_inner_prepared(xz, weights: MambaWeights, conv_state=None, ssm_state=None):
    """:func:`mamba_inner` with its weights already laid out by :func:`mamba_weights` (what a module that
    keeps them between calls uses)."""
    lib = load()
    if lib is None:
        raise RuntimeError(f"the compiled CPU scan is unavailable: {why_unavailable()}")
    return _mamba_inner(lib, xz, weights, conv_state, ssm_state)


def mamba_inner(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A, D,
                conv_state=None, ssm_state=None):
    """Everything in a Mamba-1 mixer between ``in_proj`` and ``out_proj``, forward only, compiled.

    ``xz``: (batch, L, 2 d_inner), in_proj's output (x then the gate z); ``conv_weight``: (d_inner, 1,
    d_conv) and ``conv_bias`` (d_inner,), the causal depthwise conv; ``x_proj_weight``: (dt_rank + 2 d_state,
    d_inner); ``dt_proj_weight``: (d_inner, dt_rank) and ``dt_bias`` (d_inner,); ``A``: (d_inner, d_state),
    never positive; ``D``: (d_inner,). ``conv_state``: (batch, d_inner, d_conv - 1), the conv inputs before
    this chunk (zeros where None); ``ssm_state``: (batch, d_inner, d_state) (zeros where None). Float32 CPU
    tensors. Returns (y (batch, L, d_inner), the gated scan output that out_proj reads, and the last state
    (batch, d_inner, d_state)). Raises RuntimeError when the library is unavailable.
    """
    return mamba_inner_prepared(
        xz, mamba_weights(conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A, D), conv_state, ssm_state)


def mamba_inner_reference(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A, D,
                          conv_state=None, ssm_state=None):
    """:func:`mamba_inner` in PyTorch (conv1d, linear, the PyTorch selective scan): its oracle."""
    from .selective_scan import selective_scan

    batch, length, two_inner = xz.shape
    d_inner, d_conv, d_state = two_inner // 2, conv_weight.shape[-1], A.shape[1]
    dt_rank = dt_proj_weight.shape[1]
    x, z = xz.transpose(1, 2).chunk(2, dim=1)  # (batch, d_inner, L) each
    if conv_state is None:
        conv_state = x.new_zeros(batch, d_inner, d_conv - 1)
    u = F.silu(F.conv1d(torch.cat([conv_state, x], dim=2), conv_weight, conv_bias, groups=d_inner))
    dt, B, C = F.linear(u.transpose(1, 2), x_proj_weight).split([dt_rank, d_state, d_state], dim=-1)
    delta = F.linear(dt, dt_proj_weight).transpose(1, 2)
    y, last = selective_scan(u, delta, A, B.transpose(1, 2), C.transpose(1, 2), D=D, z=z, delta_bias=dt_bias,
                             delta_softplus=True, return_last_state=True, initial_state=ssm_state, use_kernels="never")
    return y.transpose(1, 2), last


def mamba_check_inputs(batch: int, d_inner: int, d_state: int, dt_rank: int, d_conv: int, length: int,
                       seed: int = 0) -> dict:
    """Random arguments for :func:`mamba_inner` with a Mamba layer's ranges (step sizes around 1e-3..1e-1,
    some large and some very small), for the self-check and the tests."""
    g = torch.Generator().manual_seed(seed)
    dt_bias = torch.empty(d_inner).uniform_(-7.0, 3.0, generator=g)  # softplus: ~1e-3 .. 3
    return {
        "xz": torch.randn(batch, length, 2 * d_inner, generator=g),
        "conv_weight": torch.randn(d_inner, 1, d_conv, generator=g) * 0.5,
        "conv_bias": torch.randn(d_inner, generator=g) * 0.1,
        "x_proj_weight": torch.randn(dt_rank + 2 * d_state, d_inner, generator=g) * d_inner ** -0.5,
        "dt_proj_weight": torch.randn(d_inner, dt_rank, generator=g) * dt_rank ** -0.5,
        "dt_bias": dt_bias,
        "A": -torch.rand(d_inner, d_state, generator=g) * 16 - 0.05,
        "D": torch.randn(d_inner, generator=g),
        "conv_state": torch.randn(batch, d_inner, d_conv - 1, generator=g),
        "ssm_state": torch.randn(batch, d_inner, d_state, generator=g),
    }


# ----------------------------------------------------------------------------- the MoE gate


def _moe_gate(lib: SimpleNamespace, rows: torch.Tensor, n_experts: int, hidden: int):
    logits = rows.new_empty(rows.shape[0], n_experts)
    if lib.moe_gate(rows.data_ptr(), rows.shape[0], rows.shape[1], n_experts, hidden, logits.data_ptr(),
                    torch.get_num_threads()) != 0:
        raise RuntimeError(f"the compiled MoE gate refused {n_experts} experts of {hidden} in rows of {rows.shape[1]}")
    return rows, logits


def moe_gate(rows: torch.Tensor, n_experts: int, hidden: int) -> torch.Tensor:
    """The gate of a mixture whose tokens visit every expert, in place on the first product's output.

    ``rows``: (N, n_experts * (hidden + 1)), a contiguous float32 CPU tensor holding each expert's hidden
    layer before its GELU and then the router's logits, [h_1 .. h_E | l]. Each row becomes
    [GELU(h_1) w_1 .. GELU(h_E) w_E | w] with w = softmax(l), so that its product with
    [W2_1; ..; W2_E; b2] is the weighted sum of the experts' outputs. Returns the logits (N, n_experts).
    Raises RuntimeError when the library is unavailable. :func:`moe_gate_reference` is its oracle.
    """
    if rows.dtype != torch.float32 or rows.device.type != "cpu" or not rows.is_contiguous() or rows.dim() != 2:
        raise ValueError(f"moe_gate takes a contiguous 2-d float32 CPU tensor, got {rows.dtype} {tuple(rows.shape)}")
    if rows.shape[1] != n_experts * (hidden + 1) or not 1 <= n_experts <= MAX_EXPERTS:
        raise ValueError(f"rows of {rows.shape[1]} values do not hold {n_experts} experts of {hidden} and their logits"
                         f" (at most {MAX_EXPERTS} experts)")
    return moe_gate_prepared(rows, n_experts, hidden)


def moe_gate_prepared(rows: torch.Tensor, n_experts: int, hidden: int) -> torch.Tensor:
    """:func:`moe_gate` without its checks of the rows' layout, for a caller that made them so (the MoE's own
    first product)."""
    lib = load()
    if lib is None:
        raise RuntimeError(f"the compiled CPU kernels are unavailable: {why_unavailable()}")
    return _moe_gate(lib, rows, n_experts, hidden)[1]


def moe_gate_reference(rows: torch.Tensor, n_experts: int, hidden: int):
    """:func:`moe_gate` in PyTorch, in place on ``rows`` (no gradient): (rows, logits). The MoE's gate where the
    library is not used, and the library's oracle."""
    h, gate = rows[:, : n_experts * hidden], rows[:, n_experts * hidden:]
    logits = gate.clone()
    torch.ops.aten.gelu_(rows)  # the whole buffer (contiguous, faster than the strided h); gate is rewritten
    gate.copy_(logits.softmax(-1))
    h.view(-1, n_experts, hidden).mul_(gate[:, :, None])
    return rows, logits
