"""Selective-scan speed: ``jambatalk bench scan``.

Times :func:`jambatalk.ops.selective_scan` (PyTorch path) forward and forward + backward against
two CPU baselines computing the same whole selective scan (softplus step, discretisation,
recurrence, read-out with C, skip D, gate silu(z)) from the same inputs:

* ``mambapy``: the PyPI package mambapy's Blelloch parallel scan (``mambapy.pscan.pscan``),
  with the discretised tensors formed in its (batch, L, d_inner, d_state) layout;
* ``transformers-loop``: transformers' ``mamba_selective_scan``, the function its MambaMixer
  calls on CPU, whose torch path is a sequential loop over time (``use_mambapy=False``). Its
  backward is quadratic in L (each step's slice gradient is scattered into a full-size zero
  tensor), so forward + backward is timed against it only up to L = 600.

The compiled CPU scan (:mod:`jambatalk.ops.cpu_scan`, what ``use_kernels="auto"`` runs without
gradients) is timed forward against the PyTorch path (``scan.forward.compiled``, baseline
``pytorch``) and against mambapy, where it builds. So is a whole Mamba mixer (projections included)
whose inference runs the compiled kernels from in_proj to out_proj, against the same mixer on the
PyTorch path (``scan.mixer.compiled``, baseline ``pytorch``), and the mixture of experts of a MoE-Mamba
layer (2 experts, both visited) with its compiled gate against its PyTorch gate (``scan.moe.compiled``).

Timings run on ``JAMBATALK_BENCH_THREADS`` torch threads (default 1): on a small shared machine,
multi-threaded element-wise ops wait on busy cores and the figures stop being reproducible.

Inputs look like a freshly initialised Mamba layer: A = -(1..d_state), step-size bias from
mamba's dt initialisation, unit-scale u, B, C, z. Repeats are interleaved between the
implementations and the median is reported; ratio = ours / baseline (below 1 is faster).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from . import Record

__all__ = ["run", "mambapy_selective_scan"]

D_STATE = 16
BATCH = 1
LOOP_BACKWARD_MAX_L = 600  # longer: transformers' loop backward takes minutes (quadratic in L)


def _inputs(length: int, d_inner: int, seed: int = 0, batch: int = BATCH) -> dict:
    """Scan inputs shaped like a freshly initialised Mamba layer's (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(d_inner, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return {
        "u": torch.randn(batch, d_inner, length, generator=g),
        "delta": torch.randn(batch, d_inner, length, generator=g) * 0.5,
        "A": -torch.arange(1, D_STATE + 1, dtype=torch.float32).repeat(d_inner, 1),
        "B": torch.randn(batch, D_STATE, length, generator=g),
        "C": torch.randn(batch, D_STATE, length, generator=g),
        "D": torch.ones(d_inner),
        "z": torch.randn(batch, d_inner, length, generator=g),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),
    }


def mambapy_selective_scan(u, delta, A, B, C, D, z, delta_bias):
    """The whole selective scan computed around mambapy's parallel scan (its expected layout)."""
    from mambapy.pscan import pscan

    delta = F.softplus(delta + delta_bias[:, None]).transpose(1, 2)  # (batch, L, d_inner)
    decay = torch.exp(delta.unsqueeze(-1) * A)  # (batch, L, d_inner, d_state)
    drive = (delta * u.transpose(1, 2)).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2)
    states = pscan(decay, drive)
    y = (states @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)  # (batch, d_inner, L)
    return (y + u * D[:, None]) * F.silu(z)


def _ours(use_kernels: str) -> Callable:
    """The project's whole selective scan with ``use_kernels`` ("never": the PyTorch path)."""
    from ..ops.selective_scan import selective_scan

    def scan(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True,
                              use_kernels=use_kernels)
    return scan


def _implementations() -> dict[str, Callable]:
    from ..errors import require

    require("mambapy", purpose="the scan benchmark's baseline")
    modeling_mamba = require("transformers.models.mamba.modeling_mamba", purpose="the scan benchmark's baseline")

    def transformers_loop(u, delta, A, B, C, D, z, delta_bias):
        return modeling_mamba.mamba_selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                                   delta_softplus=True, use_mambapy=False)

    return {"ours": _ours("never"), "mambapy": mambapy_selective_scan, "transformers-loop": transformers_loop}


def _compiled() -> Callable | None:
    """The forward-only compiled CPU scan behind selective_scan's "auto", or None where it does not build."""
    from ..ops import cpu_scan

    if not cpu_scan.available():
        print(f"bench scan: the compiled CPU scan is unavailable ({cpu_scan.why_unavailable()})")
        return None
    return _ours("auto")


def _task(fn: Callable, inputs: dict, backward: bool) -> Callable[[], None]:
    if not backward:
        def forward_only():
            with torch.no_grad():
                fn(**inputs)
        return forward_only
    weight = torch.randn(BATCH, inputs["u"].shape[1], inputs["u"].shape[2], generator=torch.Generator().manual_seed(1))

    def forward_backward():
        leaves = {k: v.detach().requires_grad_() for k, v in inputs.items()}
        y = fn(**leaves)
        torch.autograd.grad((y * weight).sum(), list(leaves.values()))
    return forward_backward


def _time_interleaved(tasks: dict[str, Callable], repeats: int, budget_s: float) -> dict[str, float]:
    """Median wall time (ms) per task; repeats are interleaved and cut down for slow tasks."""
    times: dict[str, list] = {name: [] for name in tasks}
    for name, task in tasks.items():  # warm-up, also the first timing
        start = time.perf_counter()
        task()
        times[name].append(time.perf_counter() - start)
    per_round = sum(t[0] for t in times.values())
    rounds = max(2, min(repeats, int(budget_s / max(per_round, 1e-9))))
    for _ in range(rounds):
        for name, task in tasks.items():
            start = time.perf_counter()
            task()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t[1:]) for name, t in times.items()}


def _check_agree(impls: dict[str, Callable], inputs: dict) -> None:
    with torch.no_grad():
        outs = {name: fn(**inputs) for name, fn in impls.items()}
    ref = outs["transformers-loop"]
    for name, y in outs.items():
        err = ((y - ref).abs().max() / ref.abs().max()).item()
        if not err <= 1e-3:
            raise AssertionError(f"scan benchmark: {name} differs from the sequential loop (relative error {err:.2e})")


def run(quick: bool = False) -> list[Record]:
    """Time the selective scan against mambapy and transformers' loop; one record per pair."""
    impls = _implementations()
    compiled = _compiled()
    if compiled is not None:
        impls["compiled"] = compiled
    threads = int(os.environ.get("JAMBATALK_BENCH_THREADS", "1"))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    # transformers' scan would advise installing mamba_ssm (CUDA only): it is timed here as a baseline on purpose
    hf_logging.set_verbosity_error()
    try:
        return _run(impls, quick)
    finally:
        torch.set_num_threads(previous)
        hf_logging.set_verbosity(verbosity)


def _run(impls: dict[str, Callable], quick: bool) -> list[Record]:
    lengths = (150, 600) if quick else (150, 600, 3000)
    widths = (128,) if quick else (128, 512)
    repeats = 3 if quick else 7
    budget_s = 10.0 if quick else 40.0
    records = []
    for d_model in widths:
        d_inner = 2 * d_model
        for length in lengths:
            inputs = _inputs(length, d_inner)
            _check_agree(impls, inputs)
            for backward in (False, True):
                names = [n for n in impls if not (backward and n == "transformers-loop" and length > LOOP_BACKWARD_MAX_L)
                         and not (backward and n == "compiled")]
                tasks = {name: _task(impls[name], inputs, backward) for name in names}
                ms = _time_interleaved(tasks, repeats, budget_s)
                what = "forward_backward" if backward else "forward"
                params = {"L": length, "d_model": d_model, "d_inner": d_inner, "d_state": D_STATE, "batch": BATCH,
                          "threads": torch.get_num_threads(), "level": "whole selective scan"}
                for base in names[1:]:
                    if base != "compiled":
                        records.append(Record(f"scan.{what}", ms["ours"], "ms", baseline=base,
                                              baseline_value=ms[base], params=dict(params)))
                if "compiled" in ms:
                    for base, label in (("ours", "pytorch"), ("mambapy", "mambapy")):
                        records.append(Record("scan.forward.compiled", ms["compiled"], "ms", baseline=label,
                                              baseline_value=ms[base], params=dict(params)))
            if "compiled" in impls:
                records.append(_mixer_record(d_model, length, repeats, budget_s))
                records.append(_moe_record(d_model, length, repeats, budget_s))
    return records


def _mixer_record(d_model: int, length: int, repeats: int, budget_s: float) -> Record:
    """A whole MambaMixer's inference forward with the compiled kernels against the PyTorch path."""
    from ..config import DecoderConfig
    from ..model.mamba import MambaMixer

    params = {"L": length, "d_model": d_model, "d_inner": 2 * d_model, "d_state": D_STATE, "batch": BATCH,
              "level": "Mamba mixer, in_proj to out_proj"}
    return _compiled_record(
        "scan.mixer.compiled", "the compiled mixer",
        lambda use_kernels: MambaMixer(DecoderConfig(d_model=d_model, d_state=D_STATE, schedule=["mamba"],
                                                     use_kernels=use_kernels)),
        torch.randn(BATCH, length, d_model, generator=torch.Generator().manual_seed(2)), params, repeats, budget_s)


def _moe_record(d_model: int, length: int, repeats: int, budget_s: float) -> Record:
    """The default model's mixture of experts (2 experts, both visited, hidden 2 d_model each) at inference with
    the compiled gate against the PyTorch gate."""
    from ..config import MoEConfig
    from ..model.moe import MoE

    params = {"L": length, "d_model": d_model, "experts": 2, "hidden": 2 * d_model, "batch": BATCH,
              "level": "mixture of experts, both products and the gate"}
    return _compiled_record(
        "scan.moe.compiled", "the compiled MoE gate",
        lambda use_kernels: MoE(d_model, MoEConfig(n_experts=2, top_k=2, hidden_ratio=2), use_kernels=use_kernels),
        torch.randn(BATCH, length, d_model, generator=torch.Generator().manual_seed(3)), params, repeats, budget_s)


def _compiled_record(name: str, what: str, build: Callable, x: torch.Tensor, params: dict, repeats: int,
                     budget_s: float) -> Record:
    """A module's inference forward on ``x`` built with ``use_kernels="auto"`` against the same module (same seed)
    on the PyTorch path ("never"): checked to agree first, then timed side by side."""
    modules = {}
    for use_kernels in ("auto", "never"):
        torch.manual_seed(0)
        modules[use_kernels] = build(use_kernels).eval()

    def output(module):
        out = module(x)
        return out[0] if isinstance(out, tuple) else out  # the MoE returns (y, balancing loss)

    with torch.no_grad():
        y, y_ref = output(modules["auto"]), output(modules["never"])
    err = ((y - y_ref).abs().max() / y_ref.abs().max()).item()
    if not err <= 1e-4:
        raise AssertionError(f"scan benchmark: {what} differs from the PyTorch one (relative error {err:.2e})")

    def task(module):
        def forward():
            with torch.no_grad():
                module(x)
        return forward
    ms = _time_interleaved({k: task(m) for k, m in modules.items()}, repeats, budget_s)
    params = dict(params, threads=torch.get_num_threads())
    return Record(name, ms["auto"], "ms", baseline="pytorch", baseline_value=ms["never"], params=params)
