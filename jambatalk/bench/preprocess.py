"""Benchmark: VOCASET preprocessing throughput and peak memory on a generated raw release.

Generates, in a temporary folder, a float64 ``data_verts.npy`` of realistic frame shape
(20000 x 5023 x 3, 2.4 GB; 2000 frames with ``--quick``) with matching ``subj_seq_to_idx.pkl``,
``raw_audio_fixed.pkl`` (int16, 22 kHz) and ``templates.pkl``, then runs
:func:`jambatalk.data.vocaset.preprocess_vocaset` in a child process and reports its frames per
second and its peak resident memory (the child's own ``ru_maxrss``), beside the size of the file
it streamed. The generated file was just written, so it is read from a warm page cache.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import Record

__all__ = ["run", "make_raw_vocaset"]

N_VERTICES = 5023
SOURCE_FPS = 60
SAMPLE_RATE = 22000

# The child reads its peak from /proc/self/status (VmHWM, this program's own address space):
# Linux's ru_maxrss would also count the parent's peak from before the exec.
_CHILD = """
import json, resource, sys, time
from jambatalk.data.vocaset import preprocess_vocaset
start = time.perf_counter()
report = preprocess_vocaset(sys.argv[1], sys.argv[2], show_progress=False)
seconds = time.perf_counter() - start
try:
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"seconds": seconds, "frames_in": report.frames_in, "frames_out": report.frames_out,
                  "sequences": len(report.written), "peak_rss_mb": peak}))
"""


def make_raw_vocaset(src: Path, n_frames: int, seed: int = 0) -> dict:
    """Write a raw VOCASET-format release of ``n_frames`` captured frames into ``src``."""
    rng = np.random.default_rng(seed)
    src.mkdir(parents=True, exist_ok=True)
    subjects = [f"FaceTalk_bench_{i:02d}_TA" for i in range(12)]
    templates = {s: rng.normal(scale=0.05, size=(N_VERTICES, 3)) for s in subjects}
    lengths = []
    while sum(lengths) < n_frames:
        lengths.append(int(rng.integers(180, 340)))  # VOCASET sentences: 3-6 s at 60 fps
    lengths[-1] -= sum(lengths) - n_frames
    if lengths[-1] <= 0:
        lengths.pop()
    index, audio, owners = {}, {}, []
    row = 0
    for k, n in enumerate(lengths):
        subject, sentence = subjects[k % 12], f"sentence{k // 12 + 1:02d}"
        index.setdefault(subject, {})[sentence] = {f + 1: row + f for f in range(n)}
        samples = rng.integers(-8000, 8000, size=int(round(n / SOURCE_FPS * SAMPLE_RATE))).astype(np.int16)
        audio.setdefault(subject, {})[sentence] = {"audio": samples, "sample_rate": SAMPLE_RATE}
        owners.extend([subject] * n)
        row += n
    direction = rng.normal(scale=1e-3, size=(N_VERTICES, 3))
    chunk = 256
    # written with plain file writes, chunk by chunk, so this process stays small too
    with open(src / "data_verts.npy", "wb") as f:
        header = {"descr": "<f8", "fortran_order": False, "shape": (n_frames, N_VERTICES, 3)}
        np.lib.format.write_array_header_1_0(f, header)
        for a in range(0, n_frames, chunk):
            b = min(n_frames, a + chunk)
            phase = np.sin(np.arange(a, b) * 0.2)[:, None, None]
            base = np.stack([templates[s] for s in owners[a:b]])
            np.ascontiguousarray(base + phase * direction, dtype="<f8").tofile(f)
    for name, obj in (("subj_seq_to_idx.pkl", index), ("raw_audio_fixed.pkl", audio), ("templates.pkl", templates)):
        with open(src / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return {"sequences": len(lengths), "bytes": (src / "data_verts.npy").stat().st_size}


def run(quick: bool = False) -> list[Record]:
    """Generate the raw release, preprocess it in a child process, report throughput and peak memory."""
    n_frames = 2000 if quick else 20000
    with tempfile.TemporaryDirectory(prefix="jambatalk-bench-preprocess-") as tmp:
        src, dst = Path(tmp) / "raw", Path(tmp) / "processed"
        made = make_raw_vocaset(src, n_frames)
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(dst)], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"preprocessing child failed: {proc.stderr.strip()[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    size_mb = made["bytes"] / 2**20
    params = {"frames": n_frames, "vertices": N_VERTICES, "sequences": result["sequences"],
              "frames_out": result["frames_out"], "seconds": round(result["seconds"], 2)}
    return [
        Record("preprocess.vocaset.frames_per_s", result["frames_in"] / result["seconds"], "frames/s",
               params=dict(params, counted="captured 60 fps frames covered")),
        Record("preprocess.vocaset.out_frames_per_s", result["frames_out"] / result["seconds"], "frames/s",
               params=dict(params, counted="30 fps frames written")),
        Record("preprocess.vocaset.peak_rss", result["peak_rss_mb"], "MiB", baseline="data_verts.npy size",
               baseline_value=size_mb, params=dict(params, limit_mb=2048)),
    ]
