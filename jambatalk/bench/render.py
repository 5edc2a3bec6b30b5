"""``jambatalk bench render``: offscreen rendering speed and end-to-end video time.

Figures:
- frames per second at 800x800 for a 5023-vertex (FLAME) and a 23370-vertex (BIWI) mesh with
  every backend that opens here (moderngl on EGL, moderngl on OSMesa, pyrender), each frame a
  new deformation (normals recomputed, vertices uploaded, pixels read back); pyrender, the
  public pipelines' renderer, is the baseline where it is installed;
- the same with 4x multisample anti-aliasing on moderngl-EGL (pyrender always multisamples);
- wall time of a 10 s clip (300 frames at 30 fps, 800x800) rendered to an H.264 MP4 with AAC
  audio, end to end.

Real meshes are used when the shared test artefacts are found (``$JAMBATALK_REAL_DATA`` or
../shared/data/real beside the project); otherwise procedural meshes with the same vertex counts.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from . import Record

__all__ = ["run"]

SIZE = 800
MESHES = (("5023v", 5023, "FLAME_sample.ply"), ("23370v", 23370, "BIWI.ply"))


def _real_data_dir() -> Path:
    env = os.environ.get("JAMBATALK_REAL_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data" / "real"


def _mesh(n_vertices: int, filename: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The real mesh when present (and of the expected size), else a procedural one."""
    from ..render.shapes import dome_mesh

    path = _real_data_dir() / filename
    if path.is_file():
        from ..mesh import load_mesh

        vertices, faces = load_mesh(path)
        if len(vertices) == n_vertices:
            return vertices, faces, filename
    vertices, faces = dome_mesh(n_vertices)
    return vertices, faces, "procedural dome"


def _animate(vertices: np.ndarray, n_frames: int) -> np.ndarray:
    """A jaw-like motion: the lower part of the mesh opens and closes."""
    lo, hi = vertices[:, 1].min(), vertices[:, 1].max()
    weight = np.clip((lo + 0.45 * (hi - lo) - vertices[:, 1]) / (hi - lo), 0.0, None)
    opening = 0.15 * (hi - lo) * (0.5 - 0.5 * np.cos(np.arange(n_frames) * 0.4))
    seq = np.repeat(vertices[None], n_frames, axis=0)
    seq[:, :, 1] -= opening[:, None] * weight[None, :]
    return seq.astype(np.float32)


def _fps(backend: str, seq: np.ndarray, faces: np.ndarray, samples: int = 0) -> float:
    from ..render import Renderer

    with Renderer(faces, size=SIZE, camera="fit", backend=backend, bounds_vertices=seq[0],
                  samples=samples) as renderer:
        out = np.empty(renderer.shape, dtype=np.uint8)
        for frame in seq[:3]:  # warm-up: shader compilation, first uploads
            renderer.render_into(frame, out)
        start = time.perf_counter()
        for frame in seq:
            renderer.render_into(frame, out)
        return len(seq) / (time.perf_counter() - start)


def run(quick: bool = False) -> list[Record]:
    """Measure rendering frames per second per backend and mesh, and a 10 s clip end to end."""
    from ..render import available_backends, render_video

    backends = available_backends()
    n_frames = 30 if quick else 120
    records: list[Record] = []
    threads = os.cpu_count()
    for label, n_vertices, filename in MESHES:
        vertices, faces, source = _mesh(n_vertices, filename)
        seq = _animate(vertices, n_frames)
        measured = {name: _fps(name, seq, faces) for name in backends}
        if "moderngl-egl" in measured:  # with 4x multisampling, as pyrender draws
            measured["moderngl-egl.msaa4"] = _fps("moderngl-egl", seq, faces, samples=4)
        baseline = measured.get("pyrender")
        for name, value in measured.items():
            is_baseline = name == "pyrender"
            records.append(Record(
                name=f"render.fps.{label}.{name}", value=value, unit="frames/s",
                baseline=None if is_baseline or baseline is None else "pyrender",
                baseline_value=None if is_baseline else baseline,
                params={"size": f"{SIZE}x{SIZE}", "msaa": 4 if name.endswith("msaa4") or is_baseline else 0, "vertices": n_vertices, "faces": len(faces), "mesh": source,
                        "frames": n_frames, "cpus": threads}))
    clip_seconds = 2.0 if quick else 10.0
    fps = 30
    vertices, faces, source = _mesh(5023, "FLAME_sample.ply")
    seq = _animate(vertices, int(clip_seconds * fps))
    audio = (0.1 * np.sin(2 * np.pi * 220 * np.arange(int(clip_seconds * 16000)) / 16000)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="jambatalk-bench-") as tmp:
        start = time.perf_counter()
        render_video(Path(tmp) / "clip.mp4", seq, faces, fps=fps, audio=audio, size=SIZE, progress=False)
        wall = time.perf_counter() - start
        size_mb = (Path(tmp) / "clip.mp4").stat().st_size / 2**20
    records.append(Record(
        name=f"render.video_{clip_seconds:g}s.wall", value=wall, unit="s",
        params={"frames": len(seq), "fps": fps, "size": f"{SIZE}x{SIZE}", "vertices": len(vertices), "mesh": source,
                "audio": "aac", "realtime_factor": round(clip_seconds / wall, 2), "file_mb": round(size_mb, 2),
                "cpus": threads}))
    return records
