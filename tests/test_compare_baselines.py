"""tools/compare_baselines.py: the table it prints from eval_default.py results (no training here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "compare_baselines.py"
STATIC = 2.0e-5


def _result(lve: float, mve: float = 3e-4, fdd: float = 2e-7) -> dict:
    return {"silence_gate": False, "heldout": {"all": {
        "model": {"lve": lve, "mve": mve, "fdd": fdd}, "static": {"lve": STATIC, "mve": 5e-4, "fdd": 2.5e-7},
        "lve_ratio": lve / STATIC}}}


def _table(tmp_path, *extra):
    proc = subprocess.run([sys.executable, str(TOOL), "--out", str(tmp_path), "--table-only", *extra],
                          capture_output=True, text=True)
    return proc


def test_table_gives_means_spreads_and_ratios_over_seeds(tmp_path):
    for seed, lve in enumerate((1.0e-5, 1.2e-5, 1.1e-5)):
        (tmp_path / f"jambatalk-s{seed}.json").write_text(json.dumps(_result(lve)))
    for seed, lve in enumerate((1.4e-5, 1.6e-5)):
        (tmp_path / f"faceformer-s{seed}.json").write_text(json.dumps(_result(lve, mve=4e-4)))
    (tmp_path / "faceformer-s1.json.partial").write_text("{")  # an unfinished evaluation: ignored
    proc = _table(tmp_path, "--markdown")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in proc.stdout.splitlines()[2:]}
    assert set(rows) == {"JambaTalk", "FaceFormer-style"}
    jt, ff = rows["JambaTalk"], rows["FaceFormer-style"]
    assert jt[0] == "3" and jt[1] == "1.100e-05 +- 1.0e-06" and jt[2] == "0.550" and jt[5] == "1.000"
    assert ff[0] == "2" and ff[1] == "1.500e-05 +- 1.4e-06" and ff[3] == "4.000e-04"
    assert ff[5] == f"{1.1 / 1.5:.3f}"  # JambaTalk's mean LVE over the FaceFormer-style decoder's


def test_no_results_and_bad_results_are_errors(tmp_path):
    proc = _table(tmp_path)
    assert proc.returncode == 1 and "no results" in proc.stderr
    (tmp_path / "mamba-s0.json").write_text(json.dumps({"heldout": {}}))
    proc = _table(tmp_path)
    assert proc.returncode != 0 and "not an eval_default.py result" in proc.stderr


@pytest.mark.parametrize("bad", [["--decoders", "lstm"], ["--seeds", "x"]])
def test_bad_arguments_are_refused(tmp_path, bad):
    assert _table(tmp_path, *bad).returncode == 2


@pytest.mark.parametrize("make", ["missing", "no_wavs"])
def test_eval_default_refuses_a_real_speech_folder_it_cannot_read_before_evaluating(tmp_path, make):
    real = tmp_path / "real"
    if make == "no_wavs":
        real.mkdir()
        (real / "notes.txt").write_text("no recordings here")
    tool = TOOL.parent / "eval_default.py"
    proc = subprocess.run([sys.executable, str(tool), "--data", str(tmp_path / "absent"), "--real", str(real),
                           "--json", str(tmp_path / "out.json")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert ("no such folder" if make == "missing" else "no .wav files") in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("where", ["missing_folder", "not_json"])
def test_eval_default_refuses_a_json_path_it_cannot_write_before_evaluating(tmp_path, where):
    """--json into a missing folder failed with a traceback after the whole evaluation."""
    out = tmp_path / "absent" / "res.json" if where == "missing_folder" else tmp_path / "speech.wav"
    if where == "not_json":
        out.write_bytes(b"RIFF")
    proc = subprocess.run([sys.executable, str(TOOL.parent / "eval_default.py"), "--data", str(tmp_path / "none"),
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("does not exist" if where == "missing_folder" else "the output is a .json file") in proc.stderr
    assert "silence gate" not in proc.stdout  # refused before the model was loaded
    assert where == "missing_folder" or out.read_bytes() == b"RIFF"


@pytest.mark.parametrize("tool", ["export_default.py", "eval_default.py"])
def test_the_default_model_tools_report_a_missing_checkpoint_in_one_line(tmp_path, tool):
    """A missing checkpoint gave a CheckpointError traceback."""
    args = [str(tmp_path / "absent")] if tool == "export_default.py" else ["--data", str(tmp_path), "--checkpoint",
                                                                         str(tmp_path / "absent")]
    dst = ["--dst", str(tmp_path / "dst")] if tool == "export_default.py" else []
    proc = subprocess.run([sys.executable, str(TOOL.parent / tool), *args, *dst], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: model folder '{tmp_path / 'absent'}' does not exist" in proc.stderr
    assert not (tmp_path / "dst").exists()


def test_results_of_another_budget_stop_the_comparison_and_only_the_asked_seeds_count(tmp_path):
    """Rerunning with --epochs 3 into an --out holding 1-epoch runs reused their JSON, and the table counted every
    seed it found whatever --seeds said."""
    import yaml

    data, out = tmp_path / "data", tmp_path / "out"
    (data / "vertices_npy").mkdir(parents=True)
    for seed, lve in enumerate((1.0e-5, 1.2e-5)):
        (out / f"jambatalk-s{seed}" / "last").mkdir(parents=True)
        (out / f"jambatalk-s{seed}.json").write_text(json.dumps(_result(lve)))
        (out / f"jambatalk-s{seed}" / "last" / "experiment.yaml").write_text(
            yaml.safe_dump({"train": {"epochs": 1, "seed": seed}, "data": {"root": str(data.resolve())}}))
    args = [sys.executable, str(TOOL), "--data", str(data), "--out", str(out), "--decoders", "jambatalk", "--seeds", "0"]
    proc = subprocess.run(args + ["--epochs", "3"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "was trained with epochs 1 (asked: 3)" in proc.stderr
    proc = subprocess.run(args + ["--epochs", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].split()[1:3] == ["1", "1.000e-05"]  # seed 0 alone


@pytest.mark.parametrize("case", ["too_big", "nan"])
def test_export_default_checks_the_model_before_it_replaces_the_destination(tmp_path, case):
    """An export over the size limit replaced --dst (by default the built-in model) and then reported the limit;
    a model with NaN weights exported with exit 0. Both are refused now, with --dst as it was."""
    import numpy as np
    import torch

    from jambatalk.config import model_preset
    from jambatalk.model import JambaTalk

    cfg = model_preset("tiny")
    model = JambaTalk(cfg, template=np.ones((cfg.n_vertices, 3), np.float32),
                      faces=np.array([[0, 1, 2]], np.int64))
    if case == "nan":
        with torch.no_grad():
            model.head.bias.fill_(float("nan"))
    model.save_pretrained(tmp_path / "ck")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "model.safetensors").write_bytes(b"the model in place")
    limit = ["-c", "import runpy, sys; sys.argv = sys.argv[1:]; "
             "g = runpy.run_path(sys.argv[0], run_name='x'); g['main'].__globals__['LIMIT_MB'] = 0.001; "
             "from jambatalk.errors import script_exit; sys.exit(script_exit('export_default', g['main']))"]
    proc = subprocess.run([sys.executable, *(limit if case == "too_big" else []), str(TOOL.parent / "export_default.py"),
                           str(tmp_path / "ck"), "--dst", str(dst)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert ("over the 0 MB limit" if case == "too_big" else "non-finite weights (head.bias)") in proc.stderr
    assert sorted(p.name for p in dst.iterdir()) == ["model.safetensors"]
    assert (dst / "model.safetensors").read_bytes() == b"the model in place"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dst")]


def test_a_run_that_fails_stops_the_comparison_in_one_line_with_its_reason(tmp_path):
    """A training run that failed ended the comparison in a RuntimeError traceback that only pointed at the log."""
    data = tmp_path / "data"
    (data / "vertices_npy").mkdir(parents=True)  # a corpus without sequences: training refuses it
    proc = subprocess.run([sys.executable, str(TOOL), "--data", str(data), "--out", str(tmp_path / "out"),
                           "--decoders", "jambatalk", "--seeds", "0", "--epochs", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("compare_baselines: error: jambatalk train failed (exit 2): ") and "see " in line
    assert "jambatalk train: error:" in line  # the run's own reason, from its log


def test_eval_default_writes_strict_json_with_null_for_what_it_could_not_measure():
    """A recording without silence gave silence_opening_rel NaN, written as NaN: not JSON."""
    import math
    import runpy

    finite_or_null = runpy.run_path(str(TOOL.parent / "eval_default.py"), run_name="x")["_finite_or_null"]
    res = {"real": {"a.wav": {"r": 0.5, "silence_opening_rel": math.nan, "n": [1.0, math.inf], "frames": 3}}}
    text = json.dumps(finite_or_null(res), allow_nan=False)
    assert json.loads(text) == {"real": {"a.wav": {"r": 0.5, "silence_opening_rel": None, "n": [1.0, None],
                                                   "frames": 3}}}


def test_a_comparison_stopped_part_way_goes_on_from_each_runs_checkpoint(tmp_path):
    """Each run's evaluation was given NAME.json.partial, which eval_default refuses (not .json): every comparison
    failed after all its training. Rerun after a stop, a run folder holding a checkpoint was trained anew and
    refused ('already holds a run'), so the comparison could not go on."""
    import runpy
    import shutil

    from jambatalk.api import DEFAULT_MODEL_DIR
    from jambatalk.synth import espeak

    if not espeak.available():
        pytest.skip("libespeak-ng is not installed (apt-get install espeak-ng libespeak-ng1)")
    from jambatalk.synth.corpus import generate_corpus

    data, out = tmp_path / "corpus", tmp_path / "out"
    generate_corpus(data, n_sentences=10, seed=0, workers=1, progress=False)
    out.mkdir()
    tool = runpy.run_path(str(TOOL), run_name="x")["run_one"].__globals__
    real_run, trained = tool["_run"], []

    def run(argv, log):
        if "train" not in argv:
            return real_run(argv, log)  # eval_default.py itself
        trained.append(argv)
        if "--resume" not in argv and (out / "jambatalk-s0" / "last").exists():
            raise AssertionError("a run folder with a checkpoint trained anew (jambatalk train refuses it)")
        run_dir = Path(argv[argv.index("--out") + 1])  # a finished run: the built-in model as its weights
        for name in ("last", "best"):
            shutil.copytree(DEFAULT_MODEL_DIR, run_dir / name, dirs_exist_ok=True)
        (run_dir / "last" / "trainer_state.pt").write_bytes(b"state")

    tool["_run"] = run
    result = tool["run_one"]("jambatalk", 0, data, out, 1)
    assert result == out / "jambatalk-s0.json" and "--resume" not in trained[0]
    report = json.loads(result.read_text())
    assert report["heldout"]["all"]["model"]["lve"] > 0
    result.unlink()  # stopped after the training, before its evaluation: the run goes on from its checkpoint
    assert tool["run_one"]("jambatalk", 0, data, out, 1) == result and "--resume" in trained[1]
    assert json.loads(result.read_text()) == report
    assert sorted(p.name for p in out.iterdir()) == ["jambatalk-s0", "jambatalk-s0.eval.log", "jambatalk-s0.json"]
