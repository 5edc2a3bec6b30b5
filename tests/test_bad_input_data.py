"""Bad configs, datasets, checkpoints and raw data given to train, test, synth and preprocess: a clear error
naming the problem and the fix (exit 2 on the command line), and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fake_corpus

from jambatalk.cli import main
from jambatalk.config import load_experiment
from jambatalk.errors import ConfigError, DatasetError

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs" / "debug.yaml"


def _cli_error(capsys, argv: list[str]) -> str:
    """Run the command line, which must fail with exit 2 and one error line; return that line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_absurd_train_threads_are_refused_with_the_config(capsys, tmp_path):
    with pytest.raises(ConfigError, match=r"train.threads is 10000.*up to \d+"):
        load_experiment(DEBUG, ["train.threads=10000"])
    line = _cli_error(capsys, ["train", "--config", str(DEBUG), "--out", str(tmp_path / "run"),
                               f"data.root={tmp_path / 'data'}", "train.threads=10000"])
    assert "train.threads" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()
    assert load_experiment(DEBUG, ["train.threads=64"]).train.threads == 64


# ----------------------------------------------------------------------------- a small processed corpus


def _train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(DEBUG), "--out", str(out), f"data.root={root}", "data.generate=false",
            "train.max_steps=1", *extra]


# ----------------------------------------------------------------------------- config values


BAD_VALUES = [
    ("train.device=banana", r"train.device is 'banana'.*cuda:N"),
    ("model.lip_reader.dropout=2", r"lip_reader.dropout is 2.0.*\[0, 1\)"),
    ("model.lip_reader.dropout=-0.5", r"lip_reader.dropout is -0.5"),
    ("train.weight_decay=-1", r"train.weight_decay is -1.0"),
    ("train.weight_decay=.inf", r"train.weight_decay is inf"),
    ("train.epochs=-1", r"train.epochs is -1"),
    ("loss.vertex=.nan", r"loss.vertex is nan, not a finite number"),
    ("data.max_seconds=0.001", r"data.max_seconds is 0.001.*at least 0.1 s"),
    ("data.max_seconds=-2", r"data.max_seconds is -2.0"),
    ("data.n_sentences=-5", r"data.n_sentences is -5.*set data.n_sentences to 0"),
]


def test_invalid_config_values_are_config_errors_naming_the_key():
    for override, match in BAD_VALUES:
        with pytest.raises(ConfigError, match=match) as err:
            load_experiment(DEBUG, [override, "train.max_steps=5"])
        assert "--sentences" not in str(err.value)
    # a negative count is named as such, not as 'both 0', when the other count is 0
    with pytest.raises(ConfigError, match=r"train.epochs is -1"):
        load_experiment(DEBUG, ["train.epochs=-1", "train.max_steps=0"])
    # the edges of what is allowed still load
    cfg = load_experiment(DEBUG, ["train.device=cuda:1", "model.lip_reader.dropout=0", "train.weight_decay=0",
                                  "train.epochs=0", "train.max_steps=3", "data.max_seconds=0.1", "data.n_sentences=3"])
    assert cfg.train.device == "cuda:1" and cfg.data.max_seconds == 0.1


def test_one_gpu_named_for_every_process_of_a_distributed_run_is_refused():
    """train.device=cuda:1 under torchrun put every rank on GPU 1 (NCCL: 'Duplicate GPU detected')."""
    from jambatalk.errors import ConfigError
    from jambatalk.train import _resolve_device

    with pytest.raises(ConfigError, match="'cuda:1' in a distributed run: every process would take that one GPU.*"
                       "use train.device=cuda or auto"):
        _resolve_device("cuda:1", local_rank=0, distributed=True)
    assert str(_resolve_device("cpu", local_rank=1, distributed=True)) == "cpu"


def test_a_device_this_machine_lacks_is_refused_before_the_run_folder(tmp_path, capsys):
    import torch

    from jambatalk.train import Trainer

    devices = ["cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        with pytest.raises(ConfigError, match=rf"train.device is '{device}' but this machine has.*train.device=cpu"):
            Trainer(load_experiment(DEBUG, [f"data.root={tmp_path / 'none'}", f"train.device={device}"]),
                    tmp_path / "run", progress=False)
    line = _cli_error(capsys, _train_args(tmp_path / "none", tmp_path / "run", "train.device=cuda:99"))
    assert "train.device" in line
    assert not (tmp_path / "run").exists()


def test_n_subjects_below_the_datasets_names_the_right_count(tmp_path, capsys):
    root = fake_corpus(tmp_path / "data")  # two subjects; more embeddings than that would only go unused
    line = _cli_error(capsys, _train_args(root, tmp_path / "run", "model.n_subjects=1"))
    assert "model.n_subjects is 1" in line and "model.n_subjects=2 or more" in line
    assert not (tmp_path / "run").exists()


def test_train_out_that_is_a_file_is_refused_up_front(tmp_path, capsys):
    root = tmp_path / "data"  # never read: the run folder is checked first
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    line = _cli_error(capsys, _train_args(root, afile))
    assert f"'{afile}' is a file" in line and "pass --out a folder" in line
    line = _cli_error(capsys, _train_args(root, afile / "run"))
    assert f"inside '{afile}', which is a file" in line
    assert afile.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_resume_from_a_trainer_state_of_another_kind_is_a_checkpoint_error(tmp_path, capsys):
    import torch

    from jambatalk.train import Trainer

    root = fake_corpus(tmp_path / "data")
    run = tmp_path / "run"
    Trainer(load_experiment(DEBUG, [f"data.root={root}", "data.generate=false"]), run, progress=False)._save("last")
    state = run / "last" / "trainer_state.pt"
    good = torch.load(state, weights_only=False)
    for other in ({"x": 1}, [1, 2], {**torch.load(state, weights_only=False), "optimizer": {"state": {}}}):
        torch.save(other, state)
        line = _cli_error(capsys, _train_args(root, run, "--resume"))
        assert f"'{state}'" in line and "train.init_from=" in line
    # an optimizer state of another model's sizes: it loads, and would fail at the first step
    good["optimizer"]["state"] = {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}}
    torch.save(good, state)
    line = _cli_error(capsys, _train_args(root, run, "--resume"))
    assert f"'{state}'" in line and "does not fit this run" in line and "exp_avg of shape (3,)" in line


@pytest.mark.parametrize("text", ["garbage{", "[1, 2]", '{"tokens": "abc"}', "\udcff"])
def test_a_corrupt_meta_json_is_a_dataset_error_naming_it(tmp_path, capsys, text):
    root = fake_corpus(tmp_path / "data")
    (root / "meta.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    line = _cli_error(capsys, _train_args(root, tmp_path / "run"))
    assert f"'{root / 'meta.json'}'" in line and "regenerate" in line
    assert not (tmp_path / "run").exists()


def test_a_missing_dataset_folder_points_to_the_command_that_makes_it(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    line = _cli_error(capsys, _train_args(missing, tmp_path / "run", "data.n_sentences=12"))
    assert f"jambatalk synth --dst {missing} --sentences 12" in line and "data.generate=true" in line
    assert "preprocess" not in line
    line = _cli_error(capsys, _train_args(missing, tmp_path / "run", "data.dataset=vocaset", "data.generate=true"))
    assert f"jambatalk preprocess vocaset --src RAW --dst {missing}" in line and "builds only the synthetic" in line
    assert not missing.exists() and not (tmp_path / "run").exists()
    a_file = tmp_path / "corpus.txt"  # the fixes offered, synth --dst or data.generate=true, both fail on a file
    a_file.write_text("x")
    for generate in ("true", "false"):
        line = _cli_error(capsys, _train_args(a_file, tmp_path / "run", f"data.generate={generate}"))
        assert f"data.root '{a_file}' is a file, not a dataset folder" in line and "holding vertices_npy/" in line
    assert not (tmp_path / "run").exists()


def test_test_does_not_generate_a_corpus_where_data_root_is_missing(tmp_path, capsys):
    """debug.yaml sets data.generate=true for training; jambatalk test with a mistyped data.root made a new corpus
    there and evaluated on it."""
    from jambatalk.api import DEFAULT_MODEL_DIR

    missing = tmp_path / "nowhere"
    line = _cli_error(capsys, ["test", "--config", str(DEBUG), "--checkpoint", str(DEFAULT_MODEL_DIR), "--out",
                               str(tmp_path / "eval"), f"data.root={missing}"])
    assert "holds no processed dataset" in line and "evaluation does not generate one" in line
    assert not missing.exists() and not (tmp_path / "eval").exists()
    line = _cli_error(capsys, ["test", "--config", str(DEBUG), "--checkpoint", str(DEFAULT_MODEL_DIR), "--out",
                               str(tmp_path / "eval"), "model.decoder.d_model=8"])  # was ignored without a word
    assert "model.decoder.d_model: jambatalk test evaluates the checkpoint's own model" in line
    line = _cli_error(capsys, ["test", "--config", str(DEBUG), "--checkpoint", str(DEFAULT_MODEL_DIR), "--out",
                               str(tmp_path / "eval"), "train.lr=5", "data.max_seconds=1"])  # were ignored too
    assert "train.lr, data.max_seconds: only training reads these" in line and "data.root choose the data" in line
    assert not (tmp_path / "eval").exists()


def test_train_refuses_overrides_of_what_the_dataset_decides(tmp_path, capsys):
    """model.fps=60 and model.n_vertices=100 trained and saved 30 fps and the dataset's vertex count, silently."""
    line = _cli_error(capsys, ["train", "--config", str(DEBUG), "--out", str(tmp_path / "run"), "model.fps=60",
                               "model.n_vertices=100", "train.max_steps=1"])
    assert "model.fps, model.n_vertices: training takes these from the dataset" in line
    assert not (tmp_path / "run").exists()


def test_non_finite_training_vertices_are_named_when_read(tmp_path, capsys):
    import numpy as np

    root = fake_corpus(tmp_path / "data")
    path = root / "vertices_npy" / "spk01_sent002.npy"
    verts = np.load(path)
    verts[5, 7] = np.nan
    np.save(path, verts)
    line = _cli_error(capsys, _train_args(root, tmp_path / "run", "train.max_steps=2"))
    assert f"'{path}' has non-finite vertex coordinates (NaN or inf) in 1 of 24 frames (the first is frame 5)" in line
    assert "diverged" not in line


def test_a_diverged_run_without_checkpoints_does_not_claim_to_keep_them(tmp_path, capsys):
    root = fake_corpus(tmp_path / "data")
    run = tmp_path / "run"
    line = _cli_error(capsys, _train_args(root, run, "train.max_steps=6", "train.lr=1e30", "train.batch_size=1"))
    assert "diverged at step" in line and "no checkpoint had been saved" in line and "are kept" not in line
    assert not (run / "last").exists() and not (run / "best").exists()


# ----------------------------------------------------------------------------- jambatalk synth


def _espeak_or_skip():
    from jambatalk.synth import espeak

    if not espeak.available():
        pytest.skip("libespeak-ng is not installed (apt-get install espeak-ng libespeak-ng1)")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _synth(dst: Path, *extra: str) -> list[str]:
    return ["synth", "--dst", str(dst), "--workers", "1", *extra]


def test_synth_refuses_a_negative_seed(tmp_path, capsys):
    line = _cli_error(capsys, _synth(tmp_path / "c", "--sentences", "3", "--seed", "-1"))
    assert "seed is -1" in line and "--seed 0 or more" in line
    assert not (tmp_path / "c").exists()


def test_synth_refuses_a_folder_holding_a_corpus_of_other_parameters(tmp_path, capsys):
    _espeak_or_skip()
    dst = tmp_path / "c"
    assert main(_synth(dst, "--sentences", "4", "--seed", "0")) == 0
    before = _files(dst)
    for extra in (["--sentences", "3"], ["--sentences", "4", "--seed", "1"]):
        line = _cli_error(capsys, _synth(dst, *extra))
        assert f"'{dst}' holds a synthetic corpus made with other parameters" in line and "new --dst" in line
        assert _files(dst) == before
    (dst / "meta.json").unlink()  # an interrupted run: its splits.json and labels tell
    line = _cli_error(capsys, _synth(dst, "--sentences", "4", "--seed", "1"))
    assert "other parameters" in line
    assert _files(dst) == {k: v for k, v in before.items() if k != "meta.json"}


def test_synth_remakes_empty_or_damaged_sequences_on_a_rerun(tmp_path):
    _espeak_or_skip()
    dst = tmp_path / "c"
    assert main(_synth(dst, "--sentences", "3")) == 0
    before = _files(dst)
    names = sorted(p.stem for p in (dst / "labels").iterdir())
    (dst / "vertices_npy" / f"{names[0]}.npy").write_bytes(b"")
    (dst / "wav" / f"{names[1]}.wav").write_bytes(b"")
    (dst / "labels" / f"{names[2]}.json").write_text("{garbage")
    (dst / "meta.json").write_text("garbage")
    assert main(_synth(dst, "--sentences", "3")) == 0
    assert _files(dst) == before


# ----------------------------------------------------------------------------- jambatalk preprocess


def _vocaset_raw(tmp_path: Path) -> Path:
    from test_preprocess_vocaset import _build_raw

    src = tmp_path / "raw"
    src.mkdir(parents=True)
    _build_raw(src)
    return src


def _repickle(path: Path, change) -> None:
    import pickle

    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    change(data)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)


def _first(d: dict):
    return d[sorted(d)[0]]


def _set_rate(rate):
    def change(data):
        _first(_first(data))["sample_rate"] = rate
    return change


def _rows_as_text(data):
    frames = _first(_first(data))
    for k in frames:
        frames[k] = str(frames[k])


@pytest.mark.parametrize("name, change, match", [
    ("raw_audio_fixed.pkl", _set_rate(0), r"'sample_rate' 0, not a positive whole number"),
    ("raw_audio_fixed.pkl", _set_rate("fast"), r"'sample_rate' 'fast', not a positive whole number"),
    ("raw_audio_fixed.pkl", _set_rate(-22000), r"'sample_rate' -22000, not a positive whole number"),
    ("raw_audio_fixed.pkl", lambda d: d.__setitem__(sorted(d)[0], [1, 2]), r"is list, not a dict of sentences"),
    ("subj_seq_to_idx.pkl", _rows_as_text, r"maps frame \d+ to '\d+', not a row number"),
    ("templates.pkl", lambda d: d.__setitem__(sorted(d)[0], "face"), r"the template of \S+ is str, not a \(5023, 3\)"),
    # transposed: it was reshaped to (5023, 3) and written scrambled
    ("templates.pkl", lambda d: d.__setitem__(sorted(d)[0], d[sorted(d)[0]].T), r"not \(5023, 3\): \S+ \(3, 5023\)"),
    # a NaN was refused only after the output folders were made
    ("templates.pkl", lambda d: d[sorted(d)[0]].__setitem__((0, 0), float("nan")), r"the template of \S+ in '\S+templates.pkl' has non-finite vertex coordinates \(NaN or inf\) at 1 vertices"),
])
def test_malformed_vocaset_pickles_are_refused_before_anything_is_written(tmp_path, capsys, name, change, match):
    import re

    src = _vocaset_raw(tmp_path)
    _repickle(src / name, change)
    dst = tmp_path / "out"
    line = _cli_error(capsys, ["preprocess", "vocaset", "--src", str(src), "--dst", str(dst)])
    assert re.search(match, line) and name in line and "use VOCASET's" in line, line
    assert not dst.exists()


def test_a_sequence_whose_audio_cannot_be_written_leaves_no_vertex_file(tmp_path, monkeypatch):
    import numpy as np
    import soundfile as sf

    from jambatalk.data.preprocess import prepare_dst, write_sequence
    from jambatalk.errors import DatasetError

    dst = prepare_dst(tmp_path / "out")

    def broken(*args, **kwargs):
        raise sf.LibsndfileError(0, "disk trouble")

    monkeypatch.setattr(sf, "write", broken)
    with pytest.raises(DatasetError, match="cannot be written as a WAV file"):
        write_sequence(dst, "A_s1", np.zeros((3, 4, 3), np.float32), np.zeros(100, np.int16), 16000)
    with pytest.raises(DatasetError, match="sampling rate -22000"):
        write_sequence(dst, "A_s1", np.zeros((3, 4, 3), np.float32), np.zeros(100, np.int16), -22000)
    assert [p for p in dst.rglob("*") if p.is_file()] == []


def _biwi_raw(src: Path, sentences: dict[str, dict]) -> Path:
    """A raw BIWI folder of subject F2: for each sentence, 3 frames (``frames``: vertex count of each) and
    audio (``audio``: float samples written as a FLOAT wav, else int16 noise)."""
    import numpy as np
    import soundfile as sf
    from test_preprocess_biwi import SR, V, _grid_mesh, _write_obj

    from jambatalk.data.biwi import write_vl

    rng = np.random.default_rng(0)
    base, faces = _grid_mesh(rng)
    (src / "rigid_scans").mkdir(parents=True)
    (src / "audio").mkdir()
    _write_obj(src / "rigid_scans" / "F2.obj", base, faces)
    for sentence, spec in sentences.items():
        folder = src / "faces" / "F2" / sentence
        folder.mkdir(parents=True)
        for k, n in enumerate(spec.get("frames", [V, V, V])):
            write_vl(folder / f"frame_{k:03d}.vl", (base + rng.normal(scale=0.3, size=base.shape))[:n])
        audio = spec.get("audio")
        if audio is None:
            sf.write(src / "audio" / f"F2_{sentence}.wav", rng.integers(-9000, 9000, int(3 / 25 * SR)).astype(np.int16),
                     SR, subtype="PCM_16")
        else:
            sf.write(src / "audio" / f"F2_{sentence}.wav", audio, SR, subtype="FLOAT")
    return src


def test_biwi_a_nan_rigid_scan_is_named_before_any_output(tmp_path):
    """A 'v nan ...' line in a rigid scan failed as 'a mesh has total surface area 0.0; the frame is degenerate',
    naming no file or subject, as the area was taken before the NaN check."""
    from jambatalk.data.biwi import preprocess_biwi

    src = _biwi_raw(tmp_path / "raw", {"e01": {}})
    scan = src / "rigid_scans" / "F2.obj"
    lines = scan.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("v "))
    lines[first] = "v nan 0.0 0.0"
    scan.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"the template of F2 in '\S+rigid_scans' has non-finite vertex coordinates"):
        preprocess_biwi(src, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_biwi_frames_of_another_vertex_count_or_nan_audio_fail_only_their_sequence(tmp_path):
    import numpy as np
    from test_preprocess_biwi import SR, V

    from jambatalk.data.biwi import preprocess_biwi
    from jambatalk.errors import DatasetError

    nan_audio = np.random.default_rng(1).uniform(-0.5, 0.5, int(3 / 25 * SR))
    nan_audio[100] = np.nan
    src = _biwi_raw(tmp_path / "raw", {"e01": {}, "e02": {"frames": [V, V - 5, V]}, "e03": {"audio": nan_audio}})
    dst = tmp_path / "out"
    with pytest.raises(DatasetError) as err:
        preprocess_biwi(src, dst, show_progress=False)
    msg = str(err.value)
    assert "2 biwi sequences were not written (1 were)" in msg
    assert f"F2_e02: frame '{src / 'faces' / 'F2' / 'e02' / 'frame_001.vl'}' has {V - 5} vertices, not {V}" in msg
    assert f"F2_e03: '{src / 'audio' / 'F2_e03.wav'}' has non-finite samples" in msg
    assert sorted(p.name for p in (dst / "vertices_npy").iterdir()) == ["F2_e01.npy"]
    assert sorted(p.name for p in (dst / "wav").iterdir()) == ["F2_e01.wav"]


def test_preprocess_that_finds_nothing_usable_fails_before_writing(tmp_path, capsys):
    src = _vocaset_raw(tmp_path / "v")
    dst = tmp_path / "out"
    argv = ["preprocess", "vocaset", "--src", str(src), "--dst", str(dst)]
    _repickle(src / "raw_audio_fixed.pkl", lambda d: d.clear())
    line = _cli_error(capsys, argv)
    assert "none of the 3 vocaset sequences" in line and "(no audio in raw_audio_fixed.pkl)" in line
    _repickle(src / "subj_seq_to_idx.pkl", lambda d: d.clear())
    assert "subj_seq_to_idx.pkl' lists no vocaset sequence" in _cli_error(capsys, argv)
    assert not dst.exists()

    src = _biwi_raw(tmp_path / "b", {"e01": {}, "e02": {}})
    argv = ["preprocess", "biwi", "--src", str(src), "--dst", str(dst)]
    for wav in (src / "audio").iterdir():
        wav.unlink()
    line = _cli_error(capsys, argv)
    assert "none of the 2 biwi sequences" in line and "F2_e01 (no audio found)" in line
    for folder in (src / "faces" / "F2").iterdir():
        for frame in folder.iterdir():
            frame.unlink()
        folder.rmdir()
    assert "faces' lists no biwi sequence" in _cli_error(capsys, argv)
    assert not dst.exists()


def test_a_preprocess_report_with_nothing_written_is_an_error(tmp_path):
    from jambatalk.data.preprocess import PreprocessReport
    from jambatalk.errors import DatasetError

    with pytest.raises(DatasetError, match="no vocaset sequence was written: the raw data lists none"):
        PreprocessReport("vocaset", tmp_path).finish()
    assert PreprocessReport("vocaset", tmp_path, skipped=["A_s1"]).finish().skipped == ["A_s1"]


# ----------------------------------------------------------------------------- audio and vertex lengths


def test_audio_and_vertices_of_grossly_different_lengths_are_reported_once(tmp_path):
    import warnings

    from jambatalk.data import SequenceDataset, get_spec

    root = fake_corpus(tmp_path / "data", frames={"spk01_sent000": 1, "spk02_sent001": 80, "spk01_sent002": 30},
                        seconds={"spk01_sent000": 2.6, "spk02_sent001": 0.006, "spk01_sent002": 1.0 + 1 / 30})
    ds = SequenceDataset(get_spec("synthetic"), root, "train")
    with pytest.warns(UserWarning, match=r"spk01_sent000: its audio lasts 2.6 s but its 1 vertex frames last 0.0333 s"):
        ds[0]
    with pytest.warns(UserWarning, match=r"spk02_sent001: its audio lasts 0.006 s but its 80 vertex frames last 2.67 s"):
        ds[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[0], ds[1]  # each sequence is reported once
        ds[2], ds[3]  # a frame apart, or equal: nothing to say


def test_vocaset_float_audio_of_integer_range_fails_its_sequence_instead_of_clipping(tmp_path):
    """Float audio holding int16-range values was clipped into a full-scale square wave, exit 0."""
    import numpy as np

    from jambatalk.data.vocaset import preprocess_vocaset

    src = _vocaset_raw(tmp_path)

    def as_float(data):
        entry = _first(_first(data))
        entry["audio"] = entry["audio"].astype(np.float32)  # 7987 stays 7987.0

    _repickle(src / "raw_audio_fixed.pkl", as_float)
    with pytest.raises(DatasetError, match=r"1 vocaset sequences were not written \(2 were\): \S+: sequence \S+: "
                       r"float audio reaches \d+, far outside \[-1, 1\]"):
        preprocess_vocaset(src, tmp_path / "out", show_progress=False)


def test_vocaset_int16_samples_in_a_wider_integer_type_are_kept(tmp_path):
    """int16-range samples stored as int64 (a list of ints pickled) were read as 64-bit PCM: all-zero wavs, exit 0."""
    import numpy as np
    import soundfile as sf

    from jambatalk.data.vocaset import preprocess_vocaset

    src = _vocaset_raw(tmp_path)
    kept = {}

    def widen(data):
        entry = _first(_first(data))
        kept["audio"] = entry["audio"].copy()
        entry["audio"] = entry["audio"].astype(np.int64)

    _repickle(src / "raw_audio_fixed.pkl", widen)
    preprocess_vocaset(src, tmp_path / "out", show_progress=False)
    peaks = sorted(np.abs(sf.read(str(w), dtype="int16")[0]).max() for w in (tmp_path / "out" / "wav").glob("*.wav"))
    assert peaks[0] > 0.5 * np.abs(kept["audio"]).max()  # every recording at its level, none silent


def test_vocaset_frames_missing_inside_a_sequence_are_reported(tmp_path):
    """A frame number missing from subj_seq_to_idx.pkl was joined over silently: frames are kept by position, so every
    one after the gap is a captured frame later and the motion runs ahead of the speech. It is named, as BIWI's are."""
    from jambatalk.data.preprocess import PreprocessWarning
    from jambatalk.data.vocaset import preprocess_vocaset

    src = _vocaset_raw(tmp_path)
    names = {}

    def drop_frame_3(data):
        subject = sorted(data)[0]
        sentence = sorted(data[subject])[0]
        names["seq"] = f"{subject}_{sentence}"
        frames = data[subject][sentence]
        del frames[sorted(frames, key=int)[2]]

    _repickle(src / "subj_seq_to_idx.pkl", drop_frame_3)
    with pytest.warns(PreprocessWarning, match=rf"1 sequences have frames missing inside them .* runs ahead of the "
                      rf"speech.*{names['seq']} \(1 frames: numbers 3-3\)"):
        report = preprocess_vocaset(src, tmp_path / "out", show_progress=False)
    assert names["seq"] in report.written


def test_biwi_frames_missing_inside_a_sequence_are_reported(tmp_path):
    """Frames deleted from the middle of a sequence were joined up silently, so the rest ran ahead of the speech;
    the sequence is still written (tracking can drop frames) and named in a warning and the summary."""
    from jambatalk.data.biwi import preprocess_biwi
    from jambatalk.data.preprocess import PreprocessWarning

    src = _biwi_raw(tmp_path / "raw", {"e01": {}, "e02": {}})
    (src / "faces" / "F2" / "e02" / "frame_001.vl").unlink()  # frames 000 and 002 remain
    with pytest.warns(PreprocessWarning, match=r"1 sequences have frames missing inside them .* runs ahead of the "
                      r"speech.*F2_e02 \(1 frames: numbers 1-1\)"):
        report = preprocess_biwi(src, tmp_path / "out", show_progress=False)
    assert sorted(report.written) == ["F2_e01", "F2_e02"] and "1 with frames missing inside them" in report.summary()
