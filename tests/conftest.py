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
