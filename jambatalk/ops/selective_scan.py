"""Mamba-1 selective scan: a fast pure-PyTorch path, mamba-ssm's CUDA kernel and, for inference on
CPU, a compiled C scan (:mod:`jambatalk.ops.cpu_scan`) behind one function.

The recurrence, per batch ``b``, channel ``d`` and state ``n``, is::

    h[t] = exp(delta[t] * A) * h[t-1] + delta[t] * B[t] * u[t]
    y[t] = <h[t], C[t]> + D * u[t],   then   y[t] *= silu(z[t])

Shapes follow mamba-ssm: ``u, delta, z: (batch, d_inner, L)``, ``A: (d_inner, d_state)``,
``B, C: (batch, d_state, L)``, ``D, delta_bias: (d_inner,)``.

The PyTorch path has two forms. Without gradients on the CPU (inference, streaming) it runs a step
at a time in time-major blocks of bounded size (:func:`_scan_inference`): three vectorised passes
per block build the decays and inputs, one in-place multiply-add per step advances the state, and
one contraction per block reads the outputs; its memory does not grow with the length. When a
gradient is needed, and on a GPU, where each of those steps would cost kernel launches, it never
loops over every time step (on a GPU without gradients, in segments of bounded memory:
:func:`_scan_segments`). It cuts the sequence into ``n_chunks`` chunks of ``T`` steps and lays
every per-step tensor out as ``(T, batch, n_chunks, d_inner, d_state)``:

1. a loop over the ``T`` positions inside a chunk, vectorised over all chunks at once, runs the
   recurrence from a zero state (one in-place multiply-add per position);
2. a loop over the ``n_chunks`` chunks carries the state from one chunk to the next;
3. one broadcast multiply-add adds each chunk's entering state, decayed to every step, to its
   local states. The decay from a chunk's start to step t is ``exp(A * cumsum(delta))``, summed in
   log space; its exponent is never positive (for ``A < 0``, ``delta >= 0``), so nothing overflows,
   unlike the factorised ``exp(S_t) * exp(-S_s)`` form. Exponents are floored at -60 so that
   products stay out of the (very slow on CPU) subnormal range.

That is about ``2 * sqrt(L)`` Python steps (``T`` is chosen near ``sqrt(2 L)``, within 8..64).
Memory is ``O(L * d_inner * d_state)``: no ``L x L`` tensor is ever formed. The backward pass is
written by hand: the gradient of the states is the same recurrence run backwards in time, through
the same chunked scan, and the other gradients are batched contractions.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Union

import torch
import torch.nn.functional as F

from ..errors import InputError, MissingDependencyError

__all__ = ["autocast_on", "selective_scan", "selective_scan_ref", "chunk_size_for", "inference_block_for", "kernel_available",
           "conv_kernel_for", "USE_KERNELS"]

#: Accepted values of ``use_kernels``.
USE_KERNELS = ("auto", "always", "never")

ScanOutput = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]

_KERNEL: dict = {}  # cached result of the one attempt to import mamba-ssm's kernel
_CONV_KERNEL: dict = {}  # the same for causal-conv1d's


# ----------------------------------------------------------------------------- reference


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Optional[torch.Tensor] = None,
) -> ScanOutput:
    """The selective scan as a plain loop over time: slow, simple, the oracle for the tests.

    Same arguments and results as :func:`selective_scan`; computed in float32.
    """
    dtype_in = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d_inner, length = u.shape
    if initial_state is None:
        h = u.new_zeros(batch, d_inner, A.shape[1])
    else:
        h = initial_state.float()
    decay = torch.exp(delta[..., None] * A[:, None, :])  # (batch, d_inner, L, d_state)
    drive = (delta * u)[..., None] * B.transpose(1, 2)[:, None]  # (batch, d_inner, L, d_state)
    ys = []
    for t in range(length):
        h = decay[:, :, t] * h + drive[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(batch, d_inner, 0)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y


# ----------------------------------------------------------------------------- chunked scan


def chunk_size_for(length: int) -> int:
    """Steps per chunk for a sequence of ``length`` steps (chosen by timing the scan on CPU).

    The Python work is about ``T + length / T`` steps, smallest near ``T = sqrt(length)``; longer
    chunks are a little cheaper per element, so the choice leans long, within 8..64.
    """
    if length <= 8:
        return max(length, 1)
    return int(min(64, max(8, 2 ** round(math.log2(math.sqrt(2.0 * length))))))


def _tile(x: torch.Tensor, T: int, n_chunks: int) -> torch.Tensor:
    """(batch, ch, n_chunks * T) -> a (T, batch, n_chunks, ch) view."""
    batch, ch, _ = x.shape
    return x.view(batch, ch, n_chunks, T).permute(3, 0, 2, 1)


def _untile(x: torch.Tensor, length: int) -> torch.Tensor:
    """(T, batch, n_chunks, ch) -> (batch, ch, length), cutting the padding."""
    T, batch, n_chunks, ch = x.shape
    return x.permute(1, 3, 2, 0).reshape(batch, ch, n_chunks * T)[..., :length].contiguous()


#: Decay exponents are floored here: exp(-60) ~ 1e-26 is already nothing next to float32 rounding,
#: and the floor keeps products of decays and states out of the slow subnormal range on CPUs.
LOG_DECAY_FLOOR = -60.0


def _decay(log_time: torch.Tensor, A: torch.Tensor, shape: tuple, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``exp(max(log_time[..., None] * A, floor))`` as a contiguous tensor of ``shape`` (into ``out``)."""
    if out is None:
        out = torch.empty(shape, dtype=A.dtype, device=A.device)
    torch.mul(log_time.contiguous()[..., None], A, out=out)
    return out.clamp_min_(LOG_DECAY_FLOOR).exp_()


def _scan_tiled(a: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                h0: Optional[torch.Tensor], reverse: bool) -> None:
    """Run ``h[t] = a[t] * h[t-1] + x[t]`` in place on tiled tensors ``(T, batch, n_chunks, d, n)``.

    ``a[t] = exp(dt[t] * A)`` with ``dt`` tiled (T, batch, n_chunks, d). On return ``x`` holds the
    states and ``a`` is spent. ``h0`` (batch, d, n) is the state before the first step, or after
    the last one when ``reverse``, where the recurrence runs backwards: ``h[t] = a[t] h[t+1] + x[t]``.
    """
    T, n_chunks = a.shape[0], a.shape[2]
    # 1. within every chunk at once, from a zero state
    steps = range(T - 2, -1, -1) if reverse else range(1, T)
    for t in steps:
        x[t].addcmul_(a[t], x[t + 1] if reverse else x[t - 1])
    if n_chunks == 1 and h0 is None:
        return
    # 2. the state entering each chunk, carried chunk to chunk with the chunk's whole decay
    # (the decay from a chunk's entry to step t is exp(A * cumulative dt), summed in log space)
    cum = dt.flip(0).cumsum(0).flip(0) if reverse else dt.cumsum(0)  # (T, batch, n_chunks, d)
    edge = 0 if reverse else T - 1
    whole = _decay(cum[edge], A, x.shape[1:])  # (batch, n_chunks, d, n)
    enter = torch.empty_like(x[0])
    first = n_chunks - 1 if reverse else 0
    if h0 is None:
        enter[:, first].zero_()
    else:
        enter[:, first].copy_(h0)
    chunks = range(n_chunks - 2, -1, -1) if reverse else range(1, n_chunks)
    for c in chunks:
        src = c + 1 if reverse else c - 1
        torch.addcmul(x[edge, :, src], whole[:, src], enter[:, src], out=enter[:, c])
    # 3. add each chunk's entering state, decayed to every step, to its local states
    keep = slice(None)
    if h0 is None:
        keep = slice(0, n_chunks - 1) if reverse else slice(1, n_chunks)
    q = a[:, :, keep]
    _decay(cum[:, :, keep], A, q.shape, out=q)
    x[:, :, keep].addcmul_(q, enter[:, keep])


class _ScanCore(torch.autograd.Function):
    """y[t] = <h[t], C[t]> with h from the recurrence; returns (y, last state). Float32 inputs."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0, T):
        batch, d_inner, length = u.shape
        d_state = A.shape[1]
        n_chunks = -(-length // T)
        pad = n_chunks * T - length
        du = delta * u
        if pad:  # delta = 0 past the end: decay 1, drive 0, so the state just holds
            delta_p, du, B_p, C_p = (F.pad(t, (0, pad)) for t in (delta, du, B, C))
        else:
            delta_p, B_p, C_p = delta, B, C
        shape = (T, batch, n_chunks, d_inner, d_state)
        dt = _tile(delta_p, T, n_chunks)
        a = _decay(dt, A, shape)
        h = torch.mul(_tile(du, T, n_chunks).contiguous()[..., None],
                      _tile(B_p, T, n_chunks).contiguous()[..., None, :], out=u.new_empty(shape))
        _scan_tiled(a, h, dt, A, h0, reverse=False)
        del a
        y = torch.matmul(h, _tile(C_p, T, n_chunks)[..., None]).squeeze(-1)
        last = h[T - 1, :, n_chunks - 1].clone()
        ctx.save_for_backward(u, delta, A, B, C, h0, h)
        ctx.T = T
        ctx.set_materialize_grads(False)
        return _untile(y, length), last

    @staticmethod
    def backward(ctx, g_y, g_last):
        u, delta, A, B, C, h0, h = ctx.saved_tensors
        T = ctx.T
        batch, d_inner, length = u.shape
        d_state = A.shape[1]
        n_chunks = h.shape[2]
        pad = n_chunks * T - length
        g_y = torch.zeros_like(u) if g_y is None else g_y.float()
        g_last = None if g_last is None else g_last.float()
        du = delta * u
        # dL/dh[t] = C[t] g_y[t] + exp(delta[t+1] A) dL/dh[t+1]: the recurrence backwards in time
        delta_next = F.pad(delta[..., 1:], (0, pad + 1))
        if pad:
            delta_p, du, B_p, C_p, g_y_p = (F.pad(t, (0, pad)) for t in (delta, du, B, C, g_y))
        else:
            delta_p, B_p, C_p, g_y_p = delta, B, C, g_y
        shape = h.shape
        dt, du_t, B_t, C_t, gy_t = (_tile(t, T, n_chunks) for t in (delta_p, du, B_p, C_p, g_y_p))
        dt_next = _tile(delta_next, T, n_chunks)
        a = _decay(dt_next, A, shape)  # a[t] = exp(delta[t+1] A)
        decayed = torch.mul(a, h)  # exp(delta[t+1] A) h[t]: what step t+1 receives from the past
        g_h = torch.mul(gy_t.contiguous()[..., None], C_t.contiguous()[..., None, :], out=u.new_empty(shape))
        _scan_tiled(a, g_h, dt_next, A, g_last, reverse=True)

        g_du = torch.matmul(g_h, B_t[..., None]).squeeze(-1)  # sum over states
        g_B = torch.matmul(du_t[..., None, :], g_h).squeeze(-2)  # sum over channels
        g_C = torch.matmul(gy_t[..., None, :], h).squeeze(-2)
        # w[t] = dL/d(delta A)[t] = dL/dh[t] * exp(delta[t] A) h[t-1] = dL/dh[t] * decayed[t-1]
        w = a  # spent by the scan: reuse its memory
        torch.mul(g_h[1:], decayed[:-1], out=w[1:])
        torch.mul(g_h[0, :, 1:], decayed[T - 1, :, :-1], out=w[0, :, 1:])
        dA0 = torch.exp((delta[:, :, 0, None] * A).clamp_min(LOG_DECAY_FLOOR))  # (batch, d_inner, d_state)
        if h0 is None:
            w[0, :, 0].zero_()
        else:
            torch.mul(g_h[0, :, 0], dA0 * h0, out=w[0, :, 0])
        del decayed
        w_dm = w.view(-1, d_inner, d_state).transpose(0, 1)  # (d_inner, T * batch * n_chunks, d_state)
        g_delta_a = torch.bmm(w_dm, A[:, :, None]).squeeze(-1).t()  # (T * batch * n_chunks, d_inner)
        g_A = torch.bmm(dt.reshape(-1, d_inner).t()[:, None, :], w_dm).squeeze(1)
        g_h0 = g_h[0, :, 0] * dA0 if h0 is not None and ctx.needs_input_grad[5] else None

        g_du = _untile(g_du, length)
        g_delta = g_du * u + _untile(g_delta_a.reshape(T, batch, n_chunks, d_inner), length)
        return (g_du * delta, g_delta, g_A, _untile(g_B, length), _untile(g_C, length), g_h0, None)


#: Floats in each of the inference scan's two block buffers (512 KB): a block holds this many
#: batch x d_inner x d_state states (32 steps for batch 1, d_inner 256, d_state 16), within 8..512
#: steps, so its memory is bounded whatever the sequence length. Both buffers stay in a core's L2
#: cache between the passes over a block: a 300-step scan of the default model's width took 2.2 ms
#: in blocks of 32 steps against 3.0-3.4 ms in blocks of 256 (4 MB buffers), one thread.
INFERENCE_BLOCK_FLOATS = 1 << 17
INFERENCE_BLOCK_STEPS = (8, 512)


def inference_block_for(batch: int, d_inner: int, d_state: int) -> int:
    """Steps per block of the forward-only scan."""
    low, high = INFERENCE_BLOCK_STEPS
    return int(min(high, max(low, INFERENCE_BLOCK_FLOATS // max(1, batch * d_inner * d_state))))


def _scan_inference(u, delta, A, B, C, h0, block: Optional[int] = None):
    """Forward-only scan, a step at a time in time-major blocks: (y (batch, d_inner, L), last state).

    Without a backward pass nothing needs the states of every step at once, so a block's decays and
    inputs are formed (three vectorised passes), the recurrence runs step by step in place (one
    multiply-add per step on a (batch, d_inner, d_state) slice), and each block's outputs are read
    off with one contraction over the states. Against the chunked scan this skips the second
    decay pass that carries chunk-entry states, and its memory is bounded by ``block``
    (:func:`inference_block_for`).
    """
    batch, d_inner, length = u.shape
    block = block or inference_block_for(batch, d_inner, A.shape[1])
    dt = delta.permute(2, 0, 1).contiguous()  # (L, batch, d_inner)
    du = (delta * u).permute(2, 0, 1).contiguous()
    B_t, C_t = B.permute(2, 0, 1).contiguous(), C.permute(2, 0, 1).contiguous()  # (L, batch, d_state)
    m = min(block, length)
    a_buf = u.new_empty(m, batch, d_inner, A.shape[1])
    h_buf = torch.empty_like(a_buf)
    y = u.new_empty(length, batch, d_inner)
    h = h0
    for s in range(0, length, block):
        e = min(length, s + block)
        a, x = a_buf[: e - s], h_buf[: e - s]
        _decay(dt[s:e], A, a.shape, out=a)
        torch.mul(du[s:e, :, :, None], B_t[s:e, :, None, :], out=x)
        prev = h
        for step, decay in zip(x.unbind(0), a.unbind(0)):
            if prev is not None:
                step.addcmul_(decay, prev)
            prev = step
        y[s:e] = torch.einsum("lbdn,lbn->lbd", x, C_t[s:e])
        h = prev.clone()
    return y.permute(1, 2, 0), h


#: Floats of per-step state (batch x d_inner x d_state per step) in each segment of a forward-only scan on a GPU
#: (:func:`_scan_segments`): 128 MB per buffer, 2048 steps of the VOCASET decoder's (d_inner 1024, d_state 16).
SEGMENT_FLOATS = 1 << 25


def _launch_bound(u: torch.Tensor) -> bool:
    """Whether ``u`` lives on an accelerator, where each small operation costs a kernel launch."""
    return u.device.type != "cpu"


def _scan_segments(u, delta, A, B, C, h0):
    """Forward-only scan for GPUs: the chunked form, about ``2 sqrt(L)`` launches where :func:`_scan_inference`
    makes one per step, in segments that carry the state so that its memory stays bounded
    (:data:`SEGMENT_FLOATS`). Returns (y (batch, d_inner, L), last state)."""
    batch, d_inner, length = u.shape
    seg = max(64, SEGMENT_FLOATS // max(1, batch * d_inner * A.shape[1]))
    ys, h = [], h0
    for s in range(0, length, seg):
        e = min(length, s + seg)
        y, h = _ScanCore.apply(u[..., s:e], delta[..., s:e], A, B[..., s:e], C[..., s:e], h, chunk_size_for(e - s))
        ys.append(y)
    return (torch.cat(ys, -1) if len(ys) > 1 else ys[0]), h


def _compiled_scan_applies(u, delta, A, delta_softplus: bool) -> bool:
    """Whether the compiled CPU scan (:mod:`jambatalk.ops.cpu_scan`) may run this forward-only scan:
    float32 CPU tensors, d_state within its limit, and decay exponents ``delta * A`` never positive."""
    from . import cpu_scan

    if u.device.type != "cpu" or A.shape[1] > cpu_scan.MAX_STATE or not cpu_scan.available():
        return False
    return bool((A <= 0).all()) and (delta_softplus or bool((delta >= 0).all()))


def autocast_on(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` here (torch 2.1 to 2.3 ask per device in other names)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _records_grad(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether autograd records an operation on these tensors (grad mode on and one of them requires grad)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state,
                use_kernels="never"):
    if autocast_on(u.device.type):  # the scan is float32 throughout: autocast would hand bf16 gradients back to it
        with torch.autocast(u.device.type, enabled=False):
            return _scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                               initial_state, use_kernels)
    dtype_in = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h0 = initial_state.float() if initial_state is not None else None
    if _records_grad(u, delta, A, B, C, h0):
        y, last = _ScanCore.apply(u, delta, A, B, C, h0, chunk_size_for(u.shape[-1]))
    elif use_kernels == "auto" and _compiled_scan_applies(u, delta, A, delta_softplus):
        from .cpu_scan import scan_forward

        y, last = scan_forward(u, delta, A, B, C, h0)
    elif _launch_bound(u) and u.shape[-1] > 0:
        y, last = _scan_segments(u, delta, A, B, C, h0)
    else:
        y, last = _scan_inference(u, delta, A, B, C, h0)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype_in)
    return (y, last) if return_last_state else y


# ----------------------------------------------------------------------------- kernel dispatch


def _import_kernel():
    if "fn" not in _KERNEL:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except Exception as exc:  # ImportError, or a broken CUDA build raising at import
            _KERNEL["fn"], _KERNEL["error"] = None, exc
        else:
            _KERNEL["fn"], _KERNEL["error"] = selective_scan_fn, None
    return _KERNEL["fn"]


def _installed_but_broken(exc: Optional[BaseException], package: str) -> bool:
    """Whether an import of ``package`` failed for another reason than its absence: a module it needs is missing,
    or its CUDA build does not load (an undefined symbol after a torch upgrade)."""
    return exc is not None and not (isinstance(exc, ModuleNotFoundError) and exc.name == package)


def _warn_broken_once(store: dict, package: str, what: str) -> None:
    """Warn, once per process, that ``package`` is installed but failed to import, so that CUDA runs ``what``."""
    if store.get("warned") or not _installed_but_broken(store.get("error"), package):
        return
    store["warned"] = True
    exc = store["error"]
    warnings.warn(f"{package} is installed but could not be imported ({type(exc).__name__}: "
                  f"{str(exc).splitlines()[0] if str(exc) else ''}), so {what} runs on the GPU instead, several "
                  f"times slower; reinstall it for this torch and CUDA (pip install --no-cache-dir --force-reinstall "
                  f"--no-build-isolation {package.replace('_', '-')}), or set decoder.use_kernels: never to go without it",
                  stacklevel=4)


def kernel_available() -> bool:
    """True when mamba-ssm's CUDA selective-scan kernel can be imported."""
    return _import_kernel() is not None


def conv_kernel():
    """causal-conv1d's fused causal depthwise conv (``causal_conv1d_fn(x (batch, dim, L), weight (dim, width),
    bias, activation=...)``, CUDA only), or None where it cannot be imported."""
    if "fn" not in _CONV_KERNEL:
        try:
            from causal_conv1d import causal_conv1d_fn
        except Exception as exc:  # ImportError, or a broken CUDA build raising at import
            causal_conv1d_fn, _CONV_KERNEL["error"] = None, exc
        _CONV_KERNEL["fn"] = causal_conv1d_fn
    return _CONV_KERNEL["fn"]


def on_cuda(t: torch.Tensor) -> bool:
    """Whether ``t`` lives where the CUDA kernels run."""
    return t.is_cuda


def conv_kernel_for(x: torch.Tensor, width: int, use_kernels: str):
    """causal-conv1d's fused conv where it may run on ``x`` (CUDA, ``use_kernels`` not "never", a width of 2
    to 4 as its kernel takes, the package installed), else None. A channels-last ``x`` (stride 1 over the
    channels, as a Mamba mixer's view of in_proj's output) also needs the channels and the other two strides in
    multiples of 8, which the kernel checks and fails on rather than falling back."""
    if use_kernels == "never" or not 2 <= width <= 4 or not on_cuda(x):
        return None
    if x.dim() == 3 and x.stride(1) == 1 and x.shape[2] > 1 and (
            x.shape[1] % 8 or x.stride(0) % 8 or x.stride(2) % 8):
        return None
    fn = conv_kernel()
    if fn is None and use_kernels == "auto":
        _warn_broken_once(_CONV_KERNEL, "causal_conv1d", "PyTorch's conv")
    return fn


def _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, use_kernels) -> None:
    if use_kernels not in USE_KERNELS:
        raise InputError(f"use_kernels is {use_kernels!r}", f"use one of {list(USE_KERNELS)}")
    if u.dim() != 3:
        raise InputError(f"selective_scan: u has shape {tuple(u.shape)}, expected (batch, d_inner, L)",
                         "pass u as a 3-d tensor, channels before time")
    batch, d_inner, length = u.shape
    if length < 1:
        raise InputError("selective_scan: the sequence is empty (L = 0)", "pass at least one time step")
    d_state = A.shape[-1] if A.dim() == 2 else -1
    expected = {
        "delta": (delta, (batch, d_inner, length)),
        "A": (A, (d_inner, d_state)),
        "B": (B, (batch, d_state, length)),
        "C": (C, (batch, d_state, length)),
        "D": (D, (d_inner,)),
        "z": (z, (batch, d_inner, length)),
        "delta_bias": (delta_bias, (d_inner,)),
        "initial_state": (initial_state, (batch, d_inner, d_state)),
    }
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise InputError(f"selective_scan: {name} has shape {tuple(tensor.shape)}, expected {shape}",
                             "pass tensors in mamba-ssm's layout (see the selective_scan docstring)")
    if A.is_complex():
        raise InputError("selective_scan: A is complex", "this scan implements the real (S4D-real) Mamba-1 case")


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Optional[torch.Tensor] = None,
    use_kernels: str = "auto",
) -> ScanOutput:
    """Mamba-1 selective scan with mamba-ssm's shapes and semantics.

    Args:
        u, delta, z: (batch, d_inner, L).
        A: (d_inner, d_state), real (normally negative).
        B, C: (batch, d_state, L), input-dependent.
        D, delta_bias: (d_inner,).
        delta_softplus: apply softplus to ``delta + delta_bias``.
        return_last_state: also return the state after the last step, (batch, d_inner, d_state).
        initial_state: (batch, d_inner, d_state) state before the first step, to continue a scan
            chunk by chunk; None is a zero state.
        use_kernels: "auto" uses mamba-ssm's CUDA kernel when it is installed and the tensors are
            on CUDA (and no ``initial_state`` is given: the kernel has no such input); on CPU without
            gradients, the compiled scan of :mod:`jambatalk.ops.cpu_scan` where it builds; else the
            PyTorch path. "always" raises :class:`MissingDependencyError` when the kernel is not
            installed or the tensors are not on CUDA; "never" always uses the PyTorch path. A scan that
            continues an ``initial_state`` (a streamed chunk) runs on the PyTorch path whatever the setting,
            as the kernel has no such input; :meth:`JambaTalk.predict` therefore runs long sequences in one
            pass where the kernel runs. So does a scan that returns its last state while a gradient is being
            recorded: mamba-ssm's backward takes no gradient of the last state and would leave its share out
            of every input's gradient ("always" then raises an InputError).

    Returns:
        y (batch, d_inner, L) in ``u``'s dtype, or ``(y, last_state)`` when ``return_last_state``.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, use_kernels)
    if use_kernels != "never":
        fn = _import_kernel()
        if use_kernels == "always":
            if fn is None:
                raise MissingDependencyError(
                    f"use_kernels='always' needs mamba-ssm's CUDA selective-scan kernel, which could not be "
                    f"imported ({_KERNEL['error']})",
                    "install the 'kernels' extra on a CUDA machine: pip install 'jambatalk[kernels]', "
                    "or set use_kernels='auto' to fall back to the PyTorch scan")
            if not on_cuda(u):
                raise MissingDependencyError(
                    f"use_kernels='always' needs CUDA tensors for mamba-ssm's kernel (the 'kernels' extra), "
                    f"but the inputs are on {u.device}",
                    "move the model to a CUDA device, or set use_kernels='auto' to use the PyTorch scan here")
        state_grad = return_last_state and _records_grad(u, delta, A, B, C, D, z, delta_bias)
        if use_kernels == "always" and state_grad:
            raise InputError(
                "use_kernels='always' with return_last_state=True while gradients are recorded: mamba-ssm's kernel "
                "gives no gradient through the last state, so every input's gradient would miss the last state's share",
                "use use_kernels='auto' (the PyTorch scan then runs), return_last_state=False, or run the scan "
                "under torch.no_grad()")
        if fn is None and on_cuda(u):
            _warn_broken_once(_KERNEL, "mamba_ssm", "the PyTorch scan")
        if fn is not None and on_cuda(u) and initial_state is None and not state_grad:
            return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                      return_last_state=return_last_state)
    return _scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state,
                       use_kernels)
