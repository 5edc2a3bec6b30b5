"""VOCASET preprocessing on a tiny raw release built in the exact source formats."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jambatalk.cli import main
from jambatalk.data.preprocess import PreprocessWarning
from jambatalk.data.vocaset import decimate_rows, preprocess_vocaset
from jambatalk.errors import DatasetError

V = 5023
SR = 22000
SUBJECTS = ("FaceTalk_170728_03272_TA", "FaceTalk_170809_00138_TA")
# frames captured at 60 fps per (subject, sentence)
LENGTHS = {(SUBJECTS[0], "sentence01"): 7, (SUBJECTS[0], "sentence02"): 6, (SUBJECTS[1], "sentence21"): 9}


def _build_raw(src: Path, audio_extra: dict | None = None, seed: int = 0) -> dict:
    """Write data_verts.npy, subj_seq_to_idx.pkl, raw_audio_fixed.pkl and templates.pkl (Python-2 style pickles)."""
    rng = np.random.default_rng(seed)
    total = sum(LENGTHS.values()) + 3  # a few rows belong to no sequence
    order = rng.permutation(total)  # sequences are scattered over the array's rows
    data = rng.normal(scale=0.1, size=(total, V, 3))
    np.save(src / "data_verts.npy", data)
    index, audio, expected = {}, {}, {}
    used = 0
    for (subject, sentence), n in LENGTHS.items():
        rows = order[used:used + n]
        used += n
        frames = list(range(1, n + 1))
        # insertion order differs from frame order: the frame number, not dict order, decides
        index.setdefault(subject, {})[sentence] = {f: int(r) for f, r in reversed(list(zip(frames, rows)))}
        n_samples = int(round(n / 60 * SR)) + (audio_extra or {}).get((subject, sentence), 0)
        samples = rng.integers(-30000, 30000, size=n_samples).astype(np.int16)
        audio.setdefault(subject, {})[sentence] = {"audio": samples, "sample_rate": SR}
        expected[f"{subject}_{sentence}"] = (data[rows[::2]].astype(np.float32).reshape(-(-n // 2), -1), samples)
    templates = {s: rng.normal(size=(V, 3)) for s in SUBJECTS}
    for name, obj in (("subj_seq_to_idx.pkl", index), ("raw_audio_fixed.pkl", audio), ("templates.pkl", templates)):
        with open(src / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return {"expected": expected, "templates": templates, "index": index, "total": total}


@pytest.fixture
def raw(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    info = _build_raw(src)
    info["src"] = src
    return info


def _outputs(dst: Path) -> list[str]:
    return sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) if dst.exists() else []


def test_outputs_value_for_value(raw, tmp_path):
    dst = tmp_path / "out"
    report = preprocess_vocaset(raw["src"], dst, show_progress=False)
    assert sorted(report.written) == sorted(raw["expected"])
    assert report.frames_in == sum(LENGTHS.values())
    for name, (verts, samples) in raw["expected"].items():
        got = np.load(dst / "vertices_npy" / f"{name}.npy")
        assert got.dtype == np.float32 and got.shape == (len(verts), 3 * V)
        np.testing.assert_array_equal(got, verts)
        wav, rate = sf.read(dst / "wav" / f"{name}.wav", dtype="int16")
        assert rate == SR
        np.testing.assert_array_equal(wav, samples)
    with open(dst / "templates.pkl", "rb") as f:
        templates = pickle.load(f)
    for s in SUBJECTS:
        np.testing.assert_array_equal(templates[s], raw["templates"][s].astype(np.float32))
    assert not [p for p in _outputs(dst) if ".part" in p]


def test_decimation_keeps_every_second_frame_from_the_first():
    assert decimate_rows(np.array([10, 11, 12, 13, 14]), 2).tolist() == [10, 12, 14]


def test_restart_skips_finished_sequences_and_overwrite_redoes_them(raw, tmp_path):
    dst = tmp_path / "out"
    preprocess_vocaset(raw["src"], dst, show_progress=False)
    name = sorted(raw["expected"])[0]
    marker = np.full((1, 3), 7.0, np.float32)
    np.save(dst / "vertices_npy" / f"{name}.npy", marker)
    os.remove(dst / "wav" / f"{sorted(raw['expected'])[1]}.wav")  # an interrupted sequence
    report = preprocess_vocaset(raw["src"], dst, show_progress=False)
    assert report.written == [sorted(raw["expected"])[1]] and len(report.skipped) == 2
    np.testing.assert_array_equal(np.load(dst / "vertices_npy" / f"{name}.npy"), marker)
    report = preprocess_vocaset(raw["src"], dst, overwrite=True, show_progress=False)
    assert len(report.written) == 3
    np.testing.assert_array_equal(np.load(dst / "vertices_npy" / f"{name}.npy"), raw["expected"][name][0])


def test_truncated_data_verts_is_caught_before_anything_is_written(raw, tmp_path):
    path = raw["src"] / "data_verts.npy"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - V * 3 * 8 * 2 - 100)
    dst = tmp_path / "out"
    with pytest.raises(DatasetError) as err:
        preprocess_vocaset(raw["src"], dst, show_progress=False)
    msg = str(err.value)
    assert "truncated" in msg and f"promises {raw['total']} frames" in msg
    assert f"only {raw['total'] - 3} whole frames" in msg
    assert _outputs(dst) == []


def test_index_map_past_the_array_is_refused(raw, tmp_path):
    index = raw["index"]
    index[SUBJECTS[1]]["sentence21"][4] = raw["total"]
    with open(raw["src"] / "subj_seq_to_idx.pkl", "wb") as f:
        pickle.dump(index, f, protocol=2)
    dst = tmp_path / "out"
    with pytest.raises(DatasetError) as err:
        preprocess_vocaset(raw["src"], dst, show_progress=False)
    assert "points past data_verts.npy" in str(err.value) and f"{SUBJECTS[1]}_sentence21" in str(err.value)
    assert f"({raw['total']} rows)" in str(err.value)
    assert _outputs(dst) == []


def test_missing_raw_file_names_it(raw, tmp_path):
    os.remove(raw["src"] / "raw_audio_fixed.pkl")
    with pytest.raises(DatasetError) as err:
        preprocess_vocaset(raw["src"], tmp_path / "out", show_progress=False)
    assert "raw_audio_fixed.pkl" in str(err.value) and "vocaset/README.md" in err.value.fix


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_source_that_is_no_folder_is_named_as_such(raw, tmp_path, kind):
    """A file as --src was reported as a folder that does not exist."""
    src = raw["src"] / "data_verts.npy" if kind == "file" else tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        preprocess_vocaset(src, tmp_path / "out", show_progress=False)
    said = "is a file, not the corpus' folder" if kind == "file" else "does not exist"
    assert said in str(err.value) and "--src" in err.value.fix
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_holding_another_dataset_is_refused_and_left_as_it_was(raw, tmp_path, overwrite):
    """Preprocessing into a synthetic corpus merged VOCASET's templates into its templates.pkl (another mesh) and
    mixed the sequences in, exit 0; with --overwrite it dropped the corpus' templates, its sequences kept."""
    from jambatalk.synth.corpus import generate_corpus

    corpus = generate_corpus(tmp_path / "synthetic", n_sentences=3, progress=False, workers=1)
    other_mesh = tmp_path / "other"
    other_mesh.mkdir()
    with open(other_mesh / "templates.pkl", "wb") as f:  # a processed BIWI folder, say
        pickle.dump({"F1": np.zeros((23370, 3), np.float32)}, f)
    for dst, match in ((Path(corpus), "holds a synthetic corpus"),
                       (other_mesh, "holds templates of another mesh \\(23370 vertices, where vocaset's have 5023\\)")):
        before = {p: p.is_file() and p.read_bytes() for p in dst.rglob("*")}  # folders too: none is made
        with pytest.raises(DatasetError, match=match) as err:
            preprocess_vocaset(raw["src"], dst, overwrite=overwrite, show_progress=False)
        assert "pass a new folder as --dst" in err.value.fix
        assert {p: p.is_file() and p.read_bytes() for p in dst.rglob("*")} == before


def test_the_source_folder_as_dst_is_refused_before_a_raw_file_is_touched(raw):
    """--dst equal to --src wrote the processed templates.pkl (float32) over the raw one."""
    before = {p.name: p.read_bytes() for p in raw["src"].iterdir()}
    with pytest.raises(DatasetError, match="is the VOCASET source folder itself"):
        preprocess_vocaset(raw["src"], raw["src"] / ".", overwrite=True, show_progress=False)
    assert {p.name: p.read_bytes() for p in raw["src"].iterdir()} == before


def test_length_mismatch_is_trimmed_consistently_with_a_warning(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    longer, shorter = (SUBJECTS[0], "sentence01"), (SUBJECTS[1], "sentence21")
    info = _build_raw(src, audio_extra={longer: SR // 5, shorter: -int(SR * 0.1)})
    dst = tmp_path / "out"
    with pytest.warns(PreprocessWarning) as rec:
        report = preprocess_vocaset(src, dst, show_progress=False)
    assert len(report.trimmed) == 2
    msg = str(rec[0].message)
    assert "2 sequences" in msg and "samples" in msg and "frames" in msg
    # audio 0.2 s too long: cut to the 4 frames' duration at 30 fps
    name = f"{longer[0]}_{longer[1]}"
    wav, _ = sf.read(dst / "wav" / f"{name}.wav", dtype="int16")
    assert len(wav) == round(4 * SR / 30)
    np.testing.assert_array_equal(wav, info["expected"][name][1][: len(wav)])
    # audio 0.1 s too short: vertices cut to the audio's duration
    name = f"{shorter[0]}_{shorter[1]}"
    n_samples = len(info["expected"][name][1])
    verts = np.load(dst / "vertices_npy" / f"{name}.npy")
    assert len(verts) == round(n_samples * 30 / SR)
    np.testing.assert_array_equal(verts, info["expected"][name][0][: len(verts)])


def test_non_finite_vertices_fail_that_sequence_only(raw, tmp_path):
    rows = sorted(raw["index"][SUBJECTS[0]]["sentence02"].items())
    data = np.load(raw["src"] / "data_verts.npy")
    data[rows[2][1], 10, 1] = np.nan  # frame 3 -> processed frame 1
    np.save(raw["src"] / "data_verts.npy", data)
    dst = tmp_path / "out"
    with pytest.raises(DatasetError) as err:
        preprocess_vocaset(raw["src"], dst, show_progress=False)
    msg = str(err.value)
    assert f"{SUBJECTS[0]}_sentence02" in msg and "non-finite" in msg and "frames 1" in msg
    assert "2 were" in msg
    files = _outputs(dst)
    assert not any("sentence02" in f for f in files) and not any(".part" in f for f in files)
    assert f"vertices_npy/{SUBJECTS[0]}_sentence01.npy" in files


def test_cli_runs_and_reports_errors(raw, tmp_path, capsys):
    dst = tmp_path / "data" / "vocaset"  # the README's --dst data/vocaset on a fresh clone: data/ is made too
    assert main(["preprocess", "vocaset", "--src", str(raw["src"]), "--dst", str(dst)]) == 0
    assert "3 sequences written" in capsys.readouterr().out
    assert main(["preprocess", "vocaset", "--src", str(raw["src"]), "--dst", str(dst)]) == 0
    assert "3 already done" in capsys.readouterr().out
    assert main(["preprocess", "vocaset", "--src", str(tmp_path / "nowhere"), "--dst", str(dst)]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["preprocess", "synthetic", "--src", str(raw["src"]), "--dst", str(dst)]) == 2
    err = capsys.readouterr().err
    assert "no raw-data preprocessor" in err and "choose one of: biwi, vocaset" in err
    assert main(["preprocess", "vocsaet", "--src", str(raw["src"]), "--dst", str(dst)]) == 2
    err = capsys.readouterr().err  # only the datasets it can preprocess are offered
    assert "unknown dataset 'vocsaet'; choose one of: biwi, vocaset" in err and "synthetic" not in err


def test_a_run_into_an_existing_folder_adds_new_subjects_to_its_templates(raw, tmp_path):
    """A second run that brings another subject wrote its sequences but kept the old templates.pkl, so the folder
    could not be read ('has no template for subjects [...]; run the preprocessing again', which did not help).
    The new subjects are added; a subject whose template changed is refused, naming it, unless --overwrite."""
    from jambatalk.errors import DatasetError

    dst = tmp_path / "out"
    tables = {}
    for name in ("templates.pkl", "subj_seq_to_idx.pkl", "raw_audio_fixed.pkl"):  # a first release: one subject
        with open(raw["src"] / name, "rb") as f:
            tables[name] = pickle.load(f)
        with open(raw["src"] / name, "wb") as f:
            pickle.dump({SUBJECTS[0]: tables[name][SUBJECTS[0]]}, f, protocol=2)
    preprocess_vocaset(raw["src"], dst, show_progress=False)
    with open(dst / "templates.pkl", "rb") as f:
        assert sorted(pickle.load(f)) == [SUBJECTS[0]]
    for name, table in tables.items():
        with open(raw["src"] / name, "wb") as f:
            pickle.dump(table, f, protocol=2)
    full = tables["templates.pkl"]
    preprocess_vocaset(raw["src"], dst, show_progress=False)
    with open(dst / "templates.pkl", "rb") as f:
        table = pickle.load(f)
    assert sorted(table) == sorted(SUBJECTS)
    for s in SUBJECTS:
        np.testing.assert_array_equal(table[s], full[s].astype(np.float32))
    changed = {**full, SUBJECTS[1]: full[SUBJECTS[1]] + 0.01}
    with open(raw["src"] / "templates.pkl", "wb") as f:
        pickle.dump(changed, f, protocol=2)
    with pytest.raises(DatasetError, match=rf"holds other templates than the raw data for subjects \['{SUBJECTS[1]}'\].*"
                       "--overwrite"):
        preprocess_vocaset(raw["src"], dst, show_progress=False)
    preprocess_vocaset(raw["src"], dst, overwrite=True, show_progress=False)
    with open(dst / "templates.pkl", "rb") as f:
        np.testing.assert_array_equal(pickle.load(f)[SUBJECTS[1]], changed[SUBJECTS[1]].astype(np.float32))
