"""``jambatalk bench stream``: push 10 minutes of audio in 100 ms chunks through a Stream.

Reports the compute time per chunk (median, p99, max) against the chunk duration (the real-time
budget) and its trend over time: the mean per chunk in the last minute over that in the first
(no growth means ~1.0; windows of a tenth of the run for --quick's minute), for the built-in default
model. Target: p99 below the chunk duration on 2 CPU cores, and no growth.
"""

from __future__ import annotations

import time

import numpy as np

from . import Record

__all__ = ["run", "measure"]


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise shaped by a syllable-rate envelope with pauses (loud, quiet and silent stretches)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = np.repeat(rng.choice([0.0, 0.3, 1.0], size=n // 3200 + 1, p=[0.2, 0.3, 0.5]), 3200)[:n]
    return (0.1 * rng.standard_normal(n) * env).astype(np.float32)


def measure(model=None, seconds: float = 600.0, chunk_ms: float = 100.0, lookahead: float = 0.3) -> dict:
    import torch

    from ..stream import Stream

    torch.set_flush_denormal(True)
    stream = Stream(model, lookahead=lookahead)
    audio = _speechlike(seconds)
    n = int(chunk_ms * 16)
    stream.push(audio[:16000])  # warm-up
    stream.reset()
    times, frames = [], 0
    for pos in range(0, len(audio), n):
        t = time.perf_counter()
        frames += len(stream.push(audio[pos: pos + n]))
        times.append(time.perf_counter() - t)
    frames += len(stream.flush())
    ms = np.array(times) * 1000.0
    window, means = trend_windows(ms, chunk_ms)
    slope = np.polyfit(np.arange(len(means)) * window / 60.0, means, 1)[0] if len(means) > 1 else 0.0
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
            "window_s": window, "first_window_mean_ms": float(means[0]), "last_window_mean_ms": float(means[-1]),
            "slope_ms_per_min": float(slope), "chunks": len(ms), "frames": frames, "latency_s": stream.latency,
            "threads": torch.get_num_threads()}


def trend_windows(ms: np.ndarray, chunk_ms: float) -> tuple[float, list[float]]:
    """The trend's windows: (their length in seconds, the mean compute per chunk in each). A window is a minute,
    or a tenth of a run shorter than ten minutes, so that a short run still compares its start with its end (a
    single minute's window compared the run with itself). Means, since the encoder runs every few chunks."""
    per = max(1, min(int(60000 / chunk_ms), len(ms) // 10))
    means = [float(ms[i: i + per].mean()) for i in range(0, len(ms) - per + 1, per)] or [float(ms.mean())]
    return per * chunk_ms / 1000.0, means


def run(quick: bool = False) -> list[Record]:
    seconds, chunk_ms = (60.0 if quick else 600.0), 100.0
    r = measure(None, seconds, chunk_ms)
    params = {"model": "default", "audio_s": seconds, "chunk_ms": chunk_ms, "threads": r["threads"],
              "window_s": r["window_s"]}
    budget = "chunk duration (real time)"
    return [
        Record("stream/chunk_compute/median", r["median_ms"], "ms", budget, chunk_ms, params=params),
        Record("stream/chunk_compute/p99", r["p99_ms"], "ms", budget, chunk_ms, params=params),
        Record("stream/chunk_compute/max", r["max_ms"], "ms", budget, chunk_ms, params=params),
        Record("stream/chunk_compute/mean_last_window", r["last_window_mean_ms"], "ms", "mean in the first window",
               r["first_window_mean_ms"], params=params),
        Record("stream/trend/slope", r["slope_ms_per_min"], "ms/min", params=params),
        Record("stream/latency_bound", r["latency_s"] * 1000.0, "ms", params={**params, "lookahead_s": 0.3}),
    ]
