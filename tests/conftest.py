"""Shared test fixtures.

Real artefacts (meshes, masks, speech) live in ../shared/data/real beside the project and are
never part of it; tests that need them skip, with the reason, where that folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("JAMBATALK_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _flush_subnormals():
    """Every test starts with subnormal floats flushed to zero, as `jambatalk train` and the benchmarks
    run (on CPU, arithmetic on subnormals is orders of magnitude slower), whatever an earlier test left."""
    torch.set_flush_denormal(True)


def real_file(name: str) -> Path:
    """Path of a real artefact, or skip the calling test with the reason."""
    path = REAL / name
    if not path.exists():
        pytest.skip(f"real artefact {name} not found under {REAL} (set JAMBATALK_REAL_DATA to its folder)")
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def grid_mesh(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A flat n x n grid facing +z: n*n vertices, 2 (n-1)^2 triangles."""
    ys, xs = np.mgrid[0:n, 0:n] / (n - 1) * 0.2 - 0.1
    v = np.stack([xs.ravel(), ys.ravel(), np.zeros(n * n)], 1).astype(np.float32)
    f = []
    for r in range(n - 1):
        for c in range(n - 1):
            i = r * n + c
            f += [[i, i + 1, i + n], [i + 1, i + n + 1, i + n]]
    return v, np.array(f)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny JambaTalk with the grid as its template, saved once per test module."""
    from jambatalk.config import model_preset
    from jambatalk.model import JambaTalk

    torch.manual_seed(0)
    v, f = grid_mesh()
    model = JambaTalk(model_preset("tiny"), template=v, faces=f)
    with torch.no_grad():
        model.head.weight.normal_(std=0.01)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    model.save_pretrained(folder)
    return folder


def fake_corpus(root: Path, frames: dict[str, int] | None = None, seconds: dict[str, float] | None = None) -> Path:
    """A processed synthetic-layout folder without espeak: sequences of the built-in head, 30 fps, noise for
    speech. ``frames`` and ``seconds`` override a sequence's vertex frames and audio length."""
    import json
    import pickle

    import numpy as np
    import soundfile as sf

    from jambatalk.synth.head import default_head

    head = default_head()
    splits = {"train": ["spk01_sent000", "spk02_sent001", "spk01_sent002", "spk02_sent003"],
              "val": ["spk01_sent004"], "test": ["spk02_sent005"]}
    for sub in ("vertices_npy", "wav"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    template = np.asarray(head.vertices, np.float32)
    for name in sum(splits.values(), []):
        n = (frames or {}).get(name, 24)
        verts = template[None] + rng.normal(scale=1e-3, size=(n, *template.shape)).astype(np.float32)
        np.save(root / "vertices_npy" / f"{name}.npy", verts.reshape(n, -1))
        n_samples = int(round((seconds or {}).get(name, n / 30) * 16000))
        sf.write(root / "wav" / f"{name}.wav", rng.integers(-3000, 3000, n_samples).astype(np.int16), 16000,
                 subtype="PCM_16")
    with open(root / "templates.pkl", "wb") as f:
        pickle.dump({"spk01": template, "spk02": template * 1.01}, f)
    (root / "splits.json").write_text(json.dumps(splits))
    (root / "meta.json").write_text(json.dumps({"dataset": "synthetic", "tokens": ["a", "b", "c"]}))
    return root


def scan_inputs(batch, d_inner, d_state, length, *, seed=0, softplus=True, delta_scale=0.5) -> dict:
    """Random inputs of a selective scan in mamba-ssm's layout (jambatalk.ops.selective_scan), an initial state
    included."""
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(batch, d_inner, length, generator=g) * delta_scale
    if not softplus:  # the scan needs a positive step size when nothing maps it to one
        delta = delta.abs() + 0.05
    return {
        "u": torch.randn(batch, d_inner, length, generator=g),
        "delta": delta,
        "A": -torch.rand(d_inner, d_state, generator=g) * 4 - 0.1,
        "B": torch.randn(batch, d_state, length, generator=g),
        "C": torch.randn(batch, d_state, length, generator=g),
        "D": torch.randn(d_inner, generator=g),
        "z": torch.randn(batch, d_inner, length, generator=g),
        "delta_bias": torch.randn(d_inner, generator=g) * 0.5,
        "initial_state": torch.randn(batch, d_inner, d_state, generator=g),
    }
