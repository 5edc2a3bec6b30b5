"""``jambatalk bench gpu``: the figures of a CUDA GPU, JambaTalk against the Transformer-only baseline.

Runs where torch sees a CUDA device (``JAMBATALK_BENCH_DEVICE``, default ``cuda``); ``jambatalk bench`` with
no name runs it only there. Three parts, each timed with the device synchronised around every call (the
median of the repeats after a warm-up):

* ``gpu/rtf/<size>/<model>/<len>``: real-time factor of the whole inference (``JambaTalk.predict``, its
  vertices copied back to the host), for 10 s, 60 s and 600 s of noise (``--quick``: 10 s and 60 s), with the
  ratio JambaTalk / Transformer-only. Sizes: ``default`` (configs/default.yaml's model and
  configs/baselines/transformer.yaml's decoder, as ``bench rtf``) and ``vocaset`` (the VOCASET preset, a
  Wav2Vec 2.0-base-size encoder and a 512-wide decoder; its Transformer-only twin has six bidirectional
  attention layers in place of the hybrid schedule). Random weights.
* ``gpu/train/<model>``: training steps per second of the default-size models (``bench train``'s step and
  batch: 4 x 4 s) with bfloat16 autocast, as ``train.amp`` trains on CUDA, and the ratio JambaTalk /
  Transformer-only (above 1: JambaTalk trains faster).
* ``gpu/scan/{forward,forward_backward}/L<L>``: mamba-ssm's CUDA selective-scan kernel against the PyTorch
  scan (:func:`jambatalk.ops.selective_scan` with ``use_kernels="never"``) on the same inputs (batch 8,
  d_inner 1024: the VOCASET decoder's; d_state 16), ratio kernel / PyTorch. Without mamba-ssm
  (``pip install "jambatalk[kernels]"``) only the PyTorch figures are given, and their params say so.

The functions take the device as an argument, so that the tests run the same code on the CPU.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Callable

from ..errors import InputError
from . import Record

__all__ = ["run", "device_for_bench", "preset_config", "rtf_records", "train_records", "scan_records", "timed"]

SIZES = ("default", "vocaset")
MODELS = ("jambatalk", "transformer")
SCAN_BATCH, SCAN_D_INNER = 8, 1024


def device_for_bench():
    """The CUDA device to measure on (``JAMBATALK_BENCH_DEVICE``, default ``cuda``); an InputError where torch
    sees none."""
    import torch

    from ..api import _resolve_device

    name = os.environ.get("JAMBATALK_BENCH_DEVICE", "cuda")
    if not torch.cuda.is_available():
        raise InputError("bench gpu measures on a CUDA GPU, and torch sees none here "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})",
                         "run it on a machine with an NVIDIA GPU and a CUDA build of torch "
                         "(pip install torch from the CUDA index); the CPU figures are the other benchmarks'")
    device = _resolve_device(name)  # a device this machine cannot use is refused there, naming its GPUs
    if device.type != "cuda":
        raise InputError(f"JAMBATALK_BENCH_DEVICE is {name!r}, not a CUDA device", "set it to cuda or cuda:N, or unset it")
    return device


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device, reps: int, warmup: int = 1) -> float:
    """Median wall seconds of ``reps`` calls of ``fn`` after ``warmup`` calls, the device synchronised before and
    after each (CUDA calls return before the GPU has finished)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _device_params(device) -> dict:
    import torch

    from ..ops.selective_scan import conv_kernel, kernel_available

    params = {"device": str(device), "torch": torch.__version__, "mamba_ssm": kernel_available(),
              "causal_conv1d": conv_kernel() is not None}
    if device.type == "cuda":
        params["gpu"] = torch.cuda.get_device_name(device)
    return params


def preset_config(size: str, name: str):
    """The model config of preset ``size`` with decoder ``name``: the preset's own for "jambatalk"; for "transformer"
    its twin, as many bidirectional attention layers (with MLPs) as the hybrid schedule has layers."""
    from ..config import model_preset

    cfg = model_preset(size)
    if name == "transformer":
        cfg.decoder = dataclasses.replace(cfg.decoder, schedule=["attention"] * len(cfg.decoder.schedule),
                                          attention_span="bidirectional")
    return cfg


def _model(size: str, name: str, device):
    """A model of ``size`` with decoder ``name`` (random weights) on ``device``, in eval mode."""
    from .long import random_model
    from .rtf import build

    model = build(name)[0] if size == "default" else random_model(preset_config(size, name))
    return model.to(device).eval()


def rtf_records(device, seconds: tuple[float, ...] = (10.0, 60.0, 600.0), sizes: tuple[str, ...] = SIZES,
                reps: int = 5) -> list[Record]:
    """``gpu/rtf/...``: the whole inference of each size's two models at each length, and their ratio."""
    import numpy as np
    import torch

    params = _device_params(device)
    records: list[Record] = []
    rng = np.random.default_rng(0)
    for size in sizes:
        models = {name: _model(size, name, device) for name in MODELS}
        for length in seconds:
            audio = (0.1 * rng.standard_normal(int(length * 16000))).astype(np.float32)
            n = reps if length <= 60 else max(1, reps // 2)
            with torch.no_grad():
                took = {name: timed(lambda m=m, a=audio: m.predict(a), device, n) for name, m in models.items()}
            for name, t in took.items():
                records.append(Record(f"gpu/rtf/{size}/{name}/{length:g}s", t / length, "x real time",
                                      params={**params, "seconds": round(t, 5), "reps": n}))
            records.append(Record(f"gpu/rtf/{size}/jambatalk_vs_transformer/{length:g}s", took["jambatalk"], "s",
                                  baseline="transformer", baseline_value=took["transformer"],
                                  params={"ratio": "JambaTalk time / Transformer-only time"}))
        del models
        _free(device)
    return records


def _free(device) -> None:
    """Give the cached blocks of ``device`` (not just the current GPU's) back between sizes and after a failure."""
    import torch

    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.empty_cache()


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def _section(name: str, fn, device) -> list[Record]:
    """``fn()``'s records; a section that runs out of GPU memory is left out with a warning, and the others run."""
    import warnings

    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is caught; the rest is re-raised
        if not _out_of_memory(exc):
            raise
        _free(device)
        warnings.warn(f"bench gpu: {name} ran out of GPU memory on {device} ({str(exc).splitlines()[0][:160]}); its "
                      "records are left out (free the GPU of other work, or run with --quick)", stacklevel=2)
        return []


def train_records(device, steps: int = 20) -> list[Record]:
    """``gpu/train/...``: training steps per second of the default-size models with bfloat16 autocast."""
    from .train import BATCH, SECONDS, measure

    params = _device_params(device)
    amp = device.type == "cuda"
    results = {name: measure(name, steps, device=device, amp=amp) for name in MODELS}
    records = [Record(f"gpu/train/{name}/steps_per_s", 1.0 / r["step_s"], "steps/s",
                      params={**params, "batch": BATCH, "audio_s": SECONDS, "steps": steps, "bf16_autocast": amp})
               for name, r in results.items()]
    records.append(Record("gpu/train/jambatalk_vs_transformer/steps_per_s", 1.0 / results["jambatalk"]["step_s"],
                          "steps/s", baseline="transformer", baseline_value=1.0 / results["transformer"]["step_s"],
                          params={"ratio": "JambaTalk throughput / Transformer-only throughput"}))
    return records


def _scan_inputs(device, batch: int, d_inner: int, length: int, grad: bool) -> dict:
    from .scan import _inputs

    return {k: v.to(device).requires_grad_(grad) for k, v in _inputs(length, d_inner, batch=batch).items()}


def _scan_call(x: dict, grad: bool, use_kernels: str) -> None:
    """One selective scan of the inputs ``x`` (and its backward when ``grad``)."""
    import torch

    from ..ops.selective_scan import selective_scan

    with torch.set_grad_enabled(grad):
        y = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], z=x["z"], delta_bias=x["delta_bias"],
                           delta_softplus=True, use_kernels=use_kernels)
        if grad:
            y.sum().backward()


def scan_records(device, lengths: tuple[int, ...] = (600, 3000), batch: int = SCAN_BATCH,
                 d_inner: int = SCAN_D_INNER, reps: int = 20) -> list[Record]:
    """``gpu/scan/...``: the PyTorch selective scan and, where it is installed, mamba-ssm's kernel, forward (no
    gradient) and forward + backward, with the ratio kernel / PyTorch."""
    from ..ops.selective_scan import kernel_available
    from .scan import D_STATE

    params = {**_device_params(device), "batch": batch, "d_inner": d_inner, "d_state": D_STATE}
    kernel = kernel_available() and device.type == "cuda"
    if not kernel:
        params["note"] = ("mamba-ssm's kernel not timed: " + ("not installed (pip install \"jambatalk[kernels]\")"
                                                                if not kernel_available() else "CUDA only"))
    records: list[Record] = []
    for length in lengths:
        for part, grad in (("forward", False), ("forward_backward", True)):
            x = _scan_inputs(device, batch, d_inner, length, grad)
            took = {"pytorch": timed(lambda x=x, g=grad: _scan_call(x, g, "never"), device, reps)}
            if kernel:
                took["mamba_ssm"] = timed(lambda x=x, g=grad: _scan_call(x, g, "always"), device, reps)
            for impl, t in took.items():
                records.append(Record(f"gpu/scan/{part}/{impl}/L{length}", t * 1e3, "ms", params=dict(params)))
            if kernel:
                records.append(Record(f"gpu/scan/{part}/mamba_ssm_vs_pytorch/L{length}", took["mamba_ssm"] * 1e3, "ms",
                                      baseline="pytorch", baseline_value=took["pytorch"] * 1e3,
                                      params={"ratio": "mamba-ssm kernel time / PyTorch scan time"}))
    return records


def run(quick: bool = False) -> list[Record]:
    device = device_for_bench()
    return (_section("rtf", lambda: rtf_records(device, seconds=(10.0, 60.0) if quick else (10.0, 60.0, 600.0),
                                                reps=3 if quick else 5), device)
            + _section("train", lambda: train_records(device, steps=5 if quick else 20), device)
            + _section("scan", lambda: scan_records(device, lengths=(600,) if quick else (600, 3000),
                                                    reps=5 if quick else 20), device))
