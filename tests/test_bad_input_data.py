"""Bad configs, datasets, checkpoints and raw data given to train, test, synth and preprocess: a clear error
naming the problem and the fix (exit 2 on the command line), and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from jambatalk.cli import main
from jambatalk.config import load_experiment
from jambatalk.errors import ConfigError

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
