"""Data pickles (templates, masks, VOCASET's raw tables) are read without running code from them."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
from conftest import real_file

from jambatalk.pickles import RefusedPickle, load_data


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_containers_numbers_and_arrays_load_under_every_protocol():
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [1, 2.5, "x", (3, None)], "c": np.float64(3.0),
            "d": {"e": np.int64(7), "f": b"\x00\xff", "g": {1, 2}}}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        out = load_data(io.BytesIO(pickle.dumps(data, protocol=protocol)))
        assert np.array_equal(out["a"], data["a"]) and out["a"].dtype == np.float32
        assert out["b"] == data["b"] and out["c"] == 3.0 and out["d"] == data["d"], protocol


@pytest.mark.parametrize("name", ["FLAME_masks.pkl", "BIWI_lip.pkl", "BIWI3895_templates.pkl", "BIWI3895_lip.pkl"])
def test_the_real_data_pickles_of_the_field_load(name):
    with open(real_file(name), "rb") as f:
        assert len(load_data(f)) > 0


def test_a_pickle_that_calls_anything_else_is_refused_before_it_runs(tmp_path, capsys):
    from jambatalk.cli import main
    from jambatalk.data.specs import load_pickle
    from jambatalk.errors import DatasetError

    marker = tmp_path / "ran"
    evil = tmp_path / "templates.pkl"
    evil.write_bytes(pickle.dumps({"a": _RunsCode(marker)}))
    with pytest.raises(RefusedPickle, match="posix.mkdir|os.mkdir|nt.mkdir"):
        load_data(io.BytesIO(evil.read_bytes()))
    with pytest.raises(DatasetError, match="was not read: it asks to call"):
        load_pickle(evil)
    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(wav, np.zeros(8000, np.float32), 16000)
    assert main(["animate", str(wav), "--template", f"{evil}:a", "--out", str(tmp_path / "m.npy")]) == 2
    assert "jambatalk does not run code from pickles" in capsys.readouterr().err
    import trimesh

    trimesh.creation.icosphere().export(tmp_path / "head.ply")
    assert main(["synth", "--dst", str(tmp_path / "c"), "--sentences", "1", "--template", f"{tmp_path / 'head.ply'}:{evil}"]) == 2
    assert "was not read: it asks to call" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "m.npy").exists()
