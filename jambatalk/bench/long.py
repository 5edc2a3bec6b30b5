"""``jambatalk bench long``: time and peak memory of animate() on 10 s, 60 s and 600 s of audio.

Each case runs in a fresh process so that its peak memory (VmHWM) is its own. Models: the built-in
default and a VOCASET-size JambaTalk (the paper's sizes, random weights). Targets: time(600 s) /
time(60 s) <= 11 (linear scaling) and peak memory at 600 s <= 4 GB.
"""

from __future__ import annotations

import json
import subprocess
import sys

from . import Record

__all__ = ["run", "case"]

_CHILD = "import sys, json; from jambatalk.bench.long import case; print(json.dumps(case(sys.argv[1], float(sys.argv[2]))))"


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    from . import peak_rss_mb

    return peak_rss_mb()


def random_model(cfg):
    """A JambaTalk of config ``cfg`` with random weights (seed 0) and a random template, in eval mode."""
    import numpy as np
    import torch

    from ..model import JambaTalk

    torch.manual_seed(0)
    template = np.random.default_rng(0).normal(scale=0.1, size=(cfg.n_vertices, 3)).astype(np.float32)
    return JambaTalk(cfg, template=template).eval()


def _model(name: str):
    from ..api import load_model
    from ..config import model_preset

    if name == "default":
        return load_model(None, device="cpu")
    return random_model(model_preset(name))


def case(model_name: str, seconds: float) -> dict:
    """One measurement in this process: animate() wall time and peak memory for ``seconds`` of audio."""
    import time

    import numpy as np
    import torch

    from ..api import animate

    torch.set_flush_denormal(True)
    model = _model(model_name)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    animate(audio[:16000], sample_rate=16000, model=model)  # warm-up
    t = time.perf_counter()
    anim = animate(audio, sample_rate=16000, model=model)
    elapsed = time.perf_counter() - t
    return {"seconds": elapsed, "peak_mb": _peak_mb(), "frames": len(anim), "threads": torch.get_num_threads()}


def run(quick: bool = False) -> list[Record]:
    lengths = (10.0, 60.0) if quick else (10.0, 60.0, 600.0)
    models = ("default", "vocaset")
    records: list[Record] = []
    for model in models:
        times = {}
        for seconds in lengths:
            proc = subprocess.run([sys.executable, "-c", _CHILD, model, str(seconds)], capture_output=True, text=True)
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
                print(f"bench long: {model} at {seconds:g} s failed: {tail[0]}", file=sys.stderr)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            times[seconds] = r["seconds"]
            params = {"model": model, "audio_s": seconds, "frames": r["frames"], "threads": r["threads"]}
            records.append(Record(f"long/{model}/{seconds:g}s/time", r["seconds"], "s",
                                  baseline="real time", baseline_value=seconds, params=params))
            records.append(Record(f"long/{model}/{seconds:g}s/peak_memory", r["peak_mb"], "MB", params=params))
        if 60.0 in times and 600.0 in times:
            records.append(Record(f"long/{model}/scaling_600s_vs_60s", times[600.0] / times[60.0], "x",
                                  params={"model": model, "target": "<= 11"}))
    return records
