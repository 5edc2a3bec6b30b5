"""Trainer: exact resume, distributed training, and the debug config end to end."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from jambatalk.config import load_experiment
from jambatalk.errors import ConfigError, DatasetError, InputError
from jambatalk.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


def _espeak_or_skip():
    from jambatalk.synth import espeak

    if not espeak.available():
        pytest.skip("libespeak-ng is not installed (apt-get install espeak-ng libespeak-ng1)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    _espeak_or_skip()
    from jambatalk.synth.corpus import generate_corpus

    root = tmp_path_factory.mktemp("corpus") / "synthetic"
    generate_corpus(root, n_sentences=10, seed=0, workers=1, progress=False)
    return root


def _cfg(root, *extra):
    return load_experiment(ROOT / "configs" / "debug.yaml",
                           [f"data.root={root}", "data.generate=false", "train.log_every=1",
                            "data.max_seconds=1.5", "train.val_every=1", *extra])


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_resume_gives_the_same_losses_and_weights(corpus, tmp_path):
    full = Trainer(_cfg(corpus, "train.max_steps=6"), tmp_path / "full", progress=False)
    full.fit()
    part = Trainer(_cfg(corpus, "train.max_steps=3"), tmp_path / "part", progress=False)
    part.fit()
    resumed = Trainer(_cfg(corpus, "train.max_steps=6"), tmp_path / "part", resume=True, progress=False)
    assert resumed.step == 3
    resumed.fit()
    a, b = _weights(tmp_path / "full" / "last"), _weights(tmp_path / "part" / "last")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    la = dict((s, v) for s, v in full.history["train/total"])
    lb = dict((s, v) for s, v in resumed.history["train/total"])
    assert la.keys() == lb.keys() and len(la) == 6
    assert all(la[s] == lb[s] for s in la)
    state = torch.load(tmp_path / "part" / "last" / "trainer_state.pt", weights_only=True)  # tensors and numbers
    assert state["step"] == 6


def test_loader_workers_read_the_same_batches_and_a_run_resumes_with_another_number(corpus, tmp_path):
    """train.num_workers > 0 reads the train split in worker processes (it was accepted and ignored): their crops and
    augmented audio are the in-process reads', so a run made with two workers and resumed with none ends on the
    weights and losses of a run made in one go."""
    extra = ("data.augment=true", "model.decoder.dropout=0.1")
    full = Trainer(_cfg(corpus, "train.max_steps=6", *extra), tmp_path / "full", progress=False)
    full.fit()
    part = Trainer(_cfg(corpus, "train.max_steps=3", "train.num_workers=2", *extra), tmp_path / "part",
                   progress=False)
    first = next(part._batches(0, 0))
    reads = part.loader.loader._iterator._workers  # the worker processes that read it
    assert len({w.pid for w in reads}) == 2 and os.getpid() not in {w.pid for w in reads}
    want = full._epoch_batches(0, 0)[0]
    from jambatalk.data import collate
    in_process = collate([full.train_set[x] for x in want])
    assert first["names"] == in_process["names"]
    for key in ("audio", "vertices", "frame_mask"):
        torch.testing.assert_close(first[key], in_process[key], rtol=0, atol=0, msg=key)
    part.fit()
    assert part.loader is None and not any(w.is_alive() for w in reads)  # the workers end with the run
    resumed = Trainer(_cfg(corpus, "train.max_steps=6", *extra), tmp_path / "part", resume=True, progress=False)
    resumed.fit()
    a, b = _weights(tmp_path / "full" / "last"), _weights(tmp_path / "part" / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert full.history["train/total"] == part.history["train/total"] + resumed.history["train/total"][3:]


def test_each_epoch_crops_anew_and_ranks_share_the_single_process_items_but_not_dropout(corpus, tmp_path):
    """An item's crop and augmentation follow the run's seed, the epoch and the item's place in the epoch's whole
    order: every epoch draws new windows, and two ranks read exactly the items of a one-process run between them.
    Dropout follows the step and the rank: replicas drew the same masks (every rank seeded alike)."""
    cfg = _cfg(corpus, "train.max_steps=2", "model.decoder.dropout=0.3")
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    one = [x for b in tr._epoch_batches(0, 0) for x in b]
    assert len({s for _, s in one}) == len(one)
    later = dict(x for b in tr._epoch_batches(1, 0) for x in b)
    assert all(later[j] != s for j, s in one)  # a new window every epoch
    items = {}
    for rank in (0, 1):
        tr.rank, tr.world = rank, 2
        items[rank] = [x for b in tr._epoch_batches(0, 0) for x in b]
    interleaved = [x for pair in zip(items[0], items[1]) for x in pair]
    assert interleaved[: len(one)] == one
    tr.rank, tr.world = 0, 1

    from jambatalk.data import collate

    batch = collate([tr.train_set[(0, 1)]])
    state = {k: v.clone() for k, v in tr.model.state_dict().items()}
    losses = []
    for rank in (0, 1, 0):  # step 1 from the same weights on rank 0, rank 1 and rank 0 again
        tr.model.load_state_dict(state)
        tr.step, tr.rank = 0, rank
        losses.append(tr.train_step(batch)["total"])
    assert losses[0] == losses[2]  # a step's dropout is the same on the same rank
    assert losses[0] != losses[1]  # and another on another rank


def test_a_dataset_error_in_a_loader_worker_is_raised_with_its_fix(corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(corpus, root)
    name = json.loads((root / "splits.json").read_text())["train"][-1]  # not the first: the trainer reads it
    path = root / "vertices_npy" / f"{name}.npy"
    arr = np.load(path)
    arr[2, 0] = np.nan
    np.save(path, arr)
    tr = Trainer(_cfg(root, "train.max_steps=50", "train.num_workers=2", "train.val_every=0"), tmp_path / "run",
                 progress=False)
    with pytest.raises(DatasetError) as info:
        tr.fit()
    assert "non-finite vertex coordinates" in info.value.problem and name in info.value.problem
    assert "Traceback" not in str(info.value) and "preprocessing" in info.value.fix


@pytest.mark.parametrize("case", ["changed_config", "truncated_weights", "truncated_state", "empty_state"])
def test_resume_from_a_changed_config_or_a_damaged_checkpoint_is_a_checkpoint_error(case, corpus, tmp_path):
    from jambatalk.errors import CheckpointError

    run = tmp_path / "run"
    Trainer(_cfg(corpus, "train.max_steps=1"), run, progress=False).fit()
    extra = []
    if case == "changed_config":  # without the run's experiment.yaml, which names the change first (ConfigError)
        (run / "last" / "experiment.yaml").unlink()
        extra, match = ["model.decoder.d_model=48"], "do not fit this run's model"
    else:
        name = "model.safetensors" if case == "truncated_weights" else "trainer_state.pt"
        data = (run / "last" / name).read_bytes()
        (run / "last" / name).write_bytes(b"" if case == "empty_state" else data[: len(data) // 3])
        match = "is damaged"
    with pytest.raises(CheckpointError, match=match):
        Trainer(_cfg(corpus, "train.max_steps=2", *extra), run, resume=True, progress=False)


def test_resume_reads_the_trainer_state_without_running_code_from_it(corpus, tmp_path):
    """trainer_state.pt is read with weights_only: a state that asks for a Python callable is refused, naming it,
    before it runs; a state written before the NumPy RNG key was kept as a tensor (a NumPy array) still resumes,
    to the same random numbers."""
    import random

    from jambatalk.errors import CheckpointError
    from jambatalk.train import _rng_state

    run = tmp_path / "run"
    Trainer(_cfg(corpus, "train.max_steps=1", "train.val_every=0"), run, progress=False).fit()
    path = run / "last" / "trainer_state.pt"
    state = torch.load(path, weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()  # as written before
    torch.save(state, path)
    expected = np.random.random(3)
    np.random.seed(123)
    Trainer(_cfg(corpus, "train.max_steps=2", "train.val_every=0"), run, resume=True, progress=False)
    np.testing.assert_array_equal(np.random.random(3), expected)
    assert isinstance(_rng_state()["numpy"][1], torch.Tensor) and random.getstate()

    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(ran),)

    state["history"] = {"x": Payload()}
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"was not read: it calls Python code \((posix|os|nt)\.mkdir\)"):
        Trainer(_cfg(corpus, "train.max_steps=2"), run, resume=True, progress=False)
    assert not ran.exists()


def test_resume_refuses_changed_optimiser_and_batch_settings_and_allows_a_longer_run(corpus, tmp_path, capsys):
    """A new learning rate on --resume was recorded in experiment.yaml but never applied (the scheduler's stored
    state wins), and a new batch size failed later with 'collate() got an empty batch': both are refused at once,
    named, with the run folder untouched; a longer run (epochs, max_steps) and new logging still resume."""
    run = tmp_path / "run"
    Trainer(_cfg(corpus, "train.max_steps=2"), run, progress=False).fit()
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"train.lr 0.001 -> 0.5; train.batch_size 2 -> 1\).*init_from="):
        Trainer(_cfg(corpus, "train.max_steps=4", "train.lr=0.5", "train.batch_size=1"), run, resume=True,
                progress=False)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    from jambatalk.cli import main  # overrides may follow --resume on the command line too

    args = ["--config", str(ROOT / "configs" / "debug.yaml"), f"data.root={corpus}", "data.generate=false"]
    assert main(["train", "--out", str(run), *args, "--resume", "train.lr=0.5", "data.max_seconds=1.5"]) == 2
    assert "(train.lr 0.001 -> 0.5)" in capsys.readouterr().err
    # the model, losses and data: a changed attention span, dropout or loss weight was taken without a word
    with pytest.raises(ConfigError, match=r"with a changed model, loss or data \(model.decoder.attention_span "
                                          r"'bidirectional' -> 'causal'; loss.vertex 1000.0 -> 2.0; data.augment "
                                          r"False -> True\)"):
        Trainer(_cfg(corpus, "train.max_steps=4", "model.decoder.attention_span=causal", "loss.vertex=2",
                     "data.augment=true"), run, resume=True, progress=False)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    moved = tmp_path / "moved"  # where the data lies may change
    shutil.copytree(corpus, moved)
    resumed = Trainer(_cfg(moved, "train.max_steps=3", "train.log_every=2", "train.val_every=0"), run, resume=True,
                      progress=False)
    resumed.fit()
    assert resumed.step == 3


def test_a_dataset_without_its_val_split_trains_when_validation_is_off(corpus, tmp_path):
    """train.val_every=0 reads no val split: a processed folder without one (a VOCASET subset) was refused."""
    root = tmp_path / "corpus"
    shutil.copytree(corpus, root)
    for name in json.loads((root / "splits.json").read_text())["val"]:
        (root / "vertices_npy" / f"{name}.npy").unlink()
    with pytest.raises(DatasetError, match="split 'val' are missing"):
        Trainer(_cfg(root, "train.max_steps=1"), tmp_path / "run", progress=False)
    trainer = Trainer(_cfg(root, "train.max_steps=1", "train.val_every=0"), tmp_path / "run", progress=False)
    trainer.fit()
    assert trainer.step == 1 and (tmp_path / "run" / "best").is_dir()


def test_the_datasets_lip_mask_and_phonemes_reach_the_losses_whatever_the_preset_says(corpus, tmp_path):
    """With the lip reader off, loss.lip_vertex trained the tiny preset's placeholder vertices 0-15, not the lips;
    on a corpus whose meta.json lists no tokens, the lip reader learned against the preset's placeholder tokens,
    every phoneme of the labels left out of its targets."""
    tr = Trainer(_cfg(corpus, "train.max_steps=1", "model.lip_reader.enabled=false", "loss.lip_vertex=100"),
                 tmp_path / "run", progress=False)
    lips = [int(i) for i in tr.spec.lip_indices(corpus)]
    assert tr.model.cfg.lip_indices == lips and lips != list(range(16))
    root = tmp_path / "corpus"
    shutil.copytree(corpus, root)
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "tokens"}))
    with pytest.raises(ConfigError, match=r"use \d+ phonemes that model.lip_reader.tokens does not list") as err:
        Trainer(_cfg(root, "train.max_steps=1"), tmp_path / "run2", progress=False)
    assert "meta.json 'tokens'" in err.value.fix and not (tmp_path / "run2").exists()
    tokens = "[" + ",".join(f"'{t}'" for t in meta["tokens"]) + "]"
    assert Trainer(_cfg(root, "train.max_steps=1", f"model.lip_reader.tokens={tokens}"), tmp_path / "run3",
                   progress=False).model.cfg.lip_reader.tokens == meta["tokens"]


def test_checkpoints_are_written_whole_and_best_follows_last_without_validation(corpus, tmp_path, monkeypatch):
    """A full disk while saving left last/ with new weights and no trainer state (neither --resume nor a new run
    took the folder), the epoch before lost, and ended as 'internal error'; after a resumed run without validation
    best/ stayed the first run's weights, which jambatalk test evaluates."""
    import shutil as shutil_module
    from collections import namedtuple

    from jambatalk.errors import InputError

    run = tmp_path / "run"
    Trainer(_cfg(corpus, "train.max_steps=2", "train.val_every=0"), run, progress=False).fit()
    before = {p.name: p.read_bytes() for p in (run / "last").iterdir()}
    trainer = Trainer(_cfg(corpus, "train.max_steps=4", "train.val_every=0"), run, resume=True, progress=False)
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):  # as torch.save fails on a full disk, its file half written
        real_save(obj, f, *args, **kwargs)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", disk_full)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda p: namedtuple("u", "total used free")(10 ** 9, 10 ** 9, 0))
    with pytest.raises(InputError, match=r"cannot write '.*last': no space left on the disk"):
        trainer.fit()
    assert {p.name: p.read_bytes() for p in (run / "last").iterdir()} == before
    assert sorted(p.name for p in run.iterdir()) == ["best", "history.json", "last", "tb"]
    monkeypatch.undo()
    Trainer(_cfg(corpus, "train.max_steps=4", "train.val_every=0"), run, resume=True, progress=False).fit()
    best, last = _weights(run / "best"), _weights(run / "last")
    assert all(torch.equal(best[k], last[k]) for k in last)
    assert torch.load(run / "best" / "trainer_state.pt", weights_only=False)["step"] == 4


def test_checkpoints_are_model_folders_with_their_config(corpus, tmp_path):
    import jambatalk

    tr = Trainer(_cfg(corpus, "train.max_steps=2"), tmp_path / "run", progress=False)
    tr.fit()
    for sub in ("best", "last"):
        folder = tmp_path / "run" / sub
        assert {"config.json", "model.safetensors", "trainer_state.pt", "experiment.yaml"} <= {
            p.name for p in folder.iterdir()}
    model = jambatalk.load_model(tmp_path / "run" / "last")
    assert model.cfg.n_vertices == tr.spec.n_vertices and model.faces.shape[0] > 0
    assert model.cfg.lip_reader.tokens == json.loads((corpus / "meta.json").read_text())["tokens"]
    assert (tmp_path / "run" / "tb").is_dir()


def test_audio_phoneme_loss_and_augmentation_train_and_the_head_reloads(corpus, tmp_path):
    import jambatalk

    tr = Trainer(_cfg(corpus, "train.max_steps=2", "loss.audio_phonemes=0.001", "data.augment=true"),
                 tmp_path / "run", progress=False)
    assert tr.model.phoneme_head is not None and tr.model.cfg.phoneme_head
    assert tr.train_set.augment and not tr.val_set.augment  # validation reads the files as written
    tr.fit()
    assert all(v > 0 for _, v in tr.history["train/audio_phonemes"])
    assert tr.validate()["audio_phonemes"] > 0
    model = jambatalk.load_model(tmp_path / "run" / "last")
    assert model.phoneme_head is not None
    torch.testing.assert_close(model.phoneme_head.weight, tr.model.phoneme_head.weight)
    assert not Trainer(_cfg(corpus, "train.max_steps=1"), tmp_path / "plain", progress=False).model.phoneme_head


def test_init_from_starts_a_new_run_from_a_model_folder(corpus, tmp_path):
    from jambatalk.errors import CheckpointError

    Trainer(_cfg(corpus, "train.max_steps=2"), tmp_path / "first", progress=False).fit()
    start = _weights(tmp_path / "first" / "last")
    tuned = Trainer(_cfg(corpus, "train.max_steps=1", f"train.init_from={tmp_path / 'first' / 'last'}"),
                    tmp_path / "tuned", progress=False)
    assert tuned.step == 0
    for k, v in tuned.model.state_dict().items():
        torch.testing.assert_close(v, start[k], rtol=0, atol=0, msg=k)
    fresh = Trainer(_cfg(corpus, "train.max_steps=1"), tmp_path / "fresh", progress=False)
    assert not torch.equal(fresh.model.state_dict()["head.weight"], start["head.weight"])
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(_cfg(corpus, f"train.init_from={tmp_path / 'nowhere'}"), tmp_path / "x", progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        Trainer(_cfg(corpus, f"train.init_from={bad}"), tmp_path / "z", progress=False)
    with pytest.raises(CheckpointError, match="do not fit"):
        Trainer(_cfg(corpus, "model.decoder.d_model=32", f"train.init_from={tmp_path / 'first' / 'last'}"),
                tmp_path / "y", progress=False)


def test_a_diverged_loss_stops_training_without_saving_broken_weights(corpus, tmp_path):
    """A huge learning rate turns the loss non-finite after the first update: training stops at that step
    with a TrainingError naming the step and the fix, and no checkpoint holds non-finite weights."""
    from jambatalk.errors import TrainingError

    run = tmp_path / "run"
    tr = Trainer(_cfg(corpus, "train.max_steps=6", "train.lr=1e30", "train.warmup_steps=0"), run, progress=False)
    with pytest.raises(TrainingError, match=r"diverged at step \d.*lower train.lr"):
        tr.fit()
    assert tr.step < 6
    for folder in (run / "last", run / "best"):
        if folder.exists():
            assert all(bool(torch.isfinite(w).all()) for w in _weights(folder).values())


def test_a_stopped_run_says_how_to_continue_and_one_stopped_before_its_first_save_leaves_nothing(corpus, tmp_path,
                                                                                                 capsys, monkeypatch):
    import shlex

    from jambatalk.cli import main

    run = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "debug.yaml"), "--out", str(run), f"data.root={corpus}",
            "data.generate=false", "data.max_seconds=1.5", "train.val_every=0", "train.save_every=1",
            "train.epochs=2"]
    real_step = Trainer.train_step

    def stop_at(epoch):
        def step(self, batch):
            if self.epoch >= epoch:
                raise KeyboardInterrupt
            return real_step(self, batch)
        return step

    monkeypatch.setattr(Trainer, "train_step", stop_at(0))  # before anything was saved: no folder, no tb/ log
    assert main(args) == 130
    assert "interrupted; no checkpoint had been saved" in capsys.readouterr().err and not run.exists()
    run.mkdir()  # a folder of the user's: kept, empty
    assert main(args) == 130 and list(run.iterdir()) == []
    capsys.readouterr()

    monkeypatch.setattr(Trainer, "train_step", stop_at(1))  # after the first epoch's checkpoint
    assert main(args) == 130
    err = capsys.readouterr().err
    assert f"interrupted; the last checkpoint (epoch 1) is in '{run / 'last'}'; continue the run with: " in err
    command = shlex.split(err.split("continue the run with: ")[1].splitlines()[0])  # not a progress bar after it
    assert command[:2] == ["jambatalk", "train"] and "--resume" in command
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert main(command[1:]) == 0  # the command given continues the run to its end
    state = torch.load(run / "last" / "trainer_state.pt", weights_only=True)
    n = state["step"] // 2  # steps per epoch
    assert state["epoch"] == 2 and f"trained steps {n + 1}-{2 * n} of {2 * n} (2 whole epochs of {n} steps)" \
        in capsys.readouterr().out
    assert main(command[1:]) == 0  # once more: it said "trained 12 steps (2 epochs)" and trained none
    assert f"nothing to train: the run in {run} had already reached its {2 * n} steps; raise train.epochs" \
        in capsys.readouterr().out


def test_refuses_to_overwrite_a_run_without_resume(corpus, tmp_path):
    Trainer(_cfg(corpus, "train.max_steps=1"), tmp_path / "run", progress=False).fit()
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(_cfg(corpus, "train.max_steps=1"), tmp_path / "run", progress=False)


def test_torchrun_two_cpu_processes_end_with_identical_weights(corpus, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "jambatalk", "train", "--config", str(ROOT / "configs" / "debug.yaml"), "--out", str(out),
           f"data.root={corpus}", "data.generate=false", "train.max_steps=3", "data.max_seconds=1.5",
           "train.val_every=1"]
    env["JAMBATALK_DUMP_RANK_WEIGHTS"] = str(tmp_path)  # every rank saves its final weights there
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=k)
    saved = _weights(out / "last")
    torch.testing.assert_close(saved["head.weight"], w0["head.weight"])
    assert not torch.equal(w0["head.weight"], torch.zeros_like(w0["head.weight"]))  # it trained


def test_debug_config_trains_and_evaluates_from_the_cli(corpus, tmp_path):
    from jambatalk.cli import main

    run = tmp_path / "run"
    args = ["--config", str(ROOT / "configs" / "debug.yaml"), f"data.root={corpus}", "data.generate=false"]
    assert main(["train", "--out", str(run), *args, "train.epochs=1", "model.n_subjects=16"]) == 0
    assert main(["test", "--checkpoint", str(run), "--out", str(tmp_path / "eval"), *args, "--silence-gate", "off"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    # test predicts as the model was trained: each training subject in its own style (it used none), and with the
    # silence gate chosen (it took the model's setting, which could not be changed) and recorded
    import jambatalk
    from jambatalk.data import SequenceDataset, get_spec

    assert report["silence_gate"] is False
    assert main(["test", "--checkpoint", str(run), "--out", str(tmp_path / "seen"), *args, "--split", "train",
                 "--silence-gate", "on"]) == 0
    assert json.loads((tmp_path / "seen" / "report.json").read_text())["silence_gate"] is True
    model = jambatalk.load_model(run / "best")
    items = list(SequenceDataset(get_spec("synthetic"), corpus, "train", cache_audio=False))
    gated = []
    for it in items:
        assert it["subject_index"] >= 0
        saved = np.load(tmp_path / "seen" / "pred" / f"{it['name']}.npy")
        args_ = (it["audio"], it["template"], len(it["vertices"]))
        np.testing.assert_array_equal(saved, model.predict(*args_, subject=int(it["subject_index"]), silence_gate=True))
        assert not np.array_equal(saved, model.predict(*args_, silence_gate=True))  # the style is used
        gated.append(not np.array_equal(saved, model.predict(*args_, subject=int(it["subject_index"]),
                                                             silence_gate=False)))
    assert any(gated)  # the corpus' pauses closed
    # the model keeps its subjects' names: animate and the command line take a style by name (there was no way to
    # choose one but predict's index)
    import soundfile as sf

    subjects = list(get_spec("synthetic").train_subjects(corpus))
    assert model.cfg.subjects == subjects and len(subjects) >= 2
    it = items[0]
    named = jambatalk.animate(it["audio"], it["template"], model, sample_rate=16000, subject=subjects[1])
    np.testing.assert_array_equal(named.vertices, model.predict(it["audio"], it["template"], subject=1))
    assert not np.array_equal(named.vertices, jambatalk.animate(it["audio"], it["template"], model,
                                                                sample_rate=16000).vertices)
    sf.write(tmp_path / "speech.wav", it["audio"], 16000, subtype="FLOAT")
    np.save(tmp_path / "template.npy", it["template"])
    line = ["animate", str(tmp_path / "speech.wav"), "--template", str(tmp_path / "template.npy"), "--checkpoint",
            str(run / "best"), "--out", str(tmp_path / "styled.npy")]
    for subject in (subjects[1], "1"):
        assert main([*line, "--subject", subject]) == 0
        np.testing.assert_array_equal(np.load(tmp_path / "styled.npy"), named.vertices)
    with pytest.raises(InputError, match=rf"subject 'nobody' is not one of this model's 16 speaking styles "
                                         rf"\({subjects[0]}, .*pass a whole number from 0 to 15, a subject's name"):
        jambatalk.animate(it["audio"], model=model, sample_rate=16000, subject="nobody")
    names = json.loads((corpus / "splits.json").read_text())["test"]
    assert sorted(report["per_sequence"]) == sorted(names)
    o = report["overall"]
    assert o["n_sequences"] == len(names) and o["lve"] > 0 and o["mve"] > 0 and o["fdd_abs"] == abs(o["fdd"])
    for name in names:
        pred = np.load(tmp_path / "eval" / "pred" / f"{name}.npy")
        gt = np.load(corpus / "vertices_npy" / f"{name}.npy")
        assert pred.shape == (gt.shape[0], gt.shape[1] // 3, 3)
    for png in ("vertex_error.png", "lip_opening.png", "loss_curves.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 5000
    shutil.rmtree(run)


def test_test_warns_when_the_ground_truth_lies_far_from_its_template(corpus, tmp_path):
    """Templates 10 cm off the recorded faces (another pose, units or subject) inflate LVE and MVE by the offset:
    jambatalk test still reports, but says so, naming the worst sequence; the corpus as made gives no warning."""
    import pickle
    import warnings

    from jambatalk.cli import main

    run = tmp_path / "run"
    args = ["--config", str(ROOT / "configs" / "debug.yaml"), f"data.root={corpus}", "data.generate=false"]
    assert main(["train", "--out", str(run), *args, "train.max_steps=1", "train.val_every=0"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["test", "--checkpoint", str(run), "--out", str(tmp_path / "eval"), *args]) == 0
    moved = tmp_path / "moved"
    shutil.copytree(corpus, moved)
    with open(moved / "templates.pkl", "rb") as f:
        templates = pickle.load(f)
    with open(moved / "templates.pkl", "wb") as f:
        pickle.dump({k: np.asarray(v) + [0.1, 0.0, 0.0] for k, v in templates.items()}, f)
    n_test = len(json.loads((corpus / "splits.json").read_text())["test"])
    with pytest.warns(UserWarning, match=rf"{n_test} of {n_test} test sequences lie far from their template .* "
                      r"median \d+% of the head's size .* LVE and MVE count that offset"):
        assert main(["test", "--checkpoint", str(run), "--out", str(tmp_path / "eval2"), "--config",
                     str(ROOT / "configs" / "debug.yaml"), f"data.root={moved}", "data.generate=false"]) == 0
    assert json.loads((tmp_path / "eval2" / "report.json").read_text())["overall"]["mve"] > 0.05


def test_a_corpus_made_on_another_mesh_trains_and_tests_on_that_mesh(tmp_path):
    """A corpus written by ``synth --template`` of another mesh brings its own head: the model animates that
    mesh's vertices, the lip reader and LVE read its lips (regions.json), and the checkpoint stores its faces
    (template.ply), not the built-in head's."""
    _espeak_or_skip()
    import trimesh

    from jambatalk.cli import main
    from jambatalk.model import JambaTalk
    from jambatalk.synth.corpus import generate_corpus
    from jambatalk.synth.head import Head, default_head

    head = default_head()
    vertices, faces = trimesh.remesh.subdivide(head.vertices, head.faces)  # the old vertices come first
    lips = head.regions["lips"][::2]  # fewer than the built-in head's, so a mix-up shows
    other = Head.from_template(vertices, faces, {"lips": lips, "forehead": head.regions["upper_face"]})
    root = tmp_path / "corpus"
    generate_corpus(root, n_sentences=4, seed=0, template=other, workers=1, progress=False)
    run = tmp_path / "run"
    args = ["--config", str(ROOT / "configs" / "debug.yaml"), f"data.root={root}", "data.generate=false"]
    assert main(["train", "--out", str(run), *args, "data.max_seconds=1.5", "train.max_steps=1",
                 "train.val_every=0"]) == 0
    model = JambaTalk.from_pretrained(run / "last")
    assert model.cfg.n_vertices == len(vertices) != head.n_vertices
    assert model.cfg.lip_indices == sorted(int(i) for i in lips)
    assert np.array_equal(model.faces.numpy(), faces)
    assert main(["test", "--checkpoint", str(run), "--out", str(tmp_path / "eval"), *args]) == 0
    pred = next((tmp_path / "eval" / "pred").glob("*.npy"))
    assert np.load(pred).shape[1:] == (len(vertices), 3)


def test_test_refuses_a_model_predicting_nan_and_the_built_in_model_without_out(corpus, tmp_path, capsys):
    """jambatalk test: damaged weights stop it before any prediction is written, naming the checkpoint; the
    built-in model's folder (inside the installed package) is not a default place for the report."""
    from jambatalk.api import DEFAULT_MODEL_DIR
    from jambatalk.cli import main
    from jambatalk.model import JambaTalk

    run = tmp_path / "run"
    args = ["--config", str(ROOT / "configs" / "debug.yaml"), f"data.root={corpus}", "data.generate=false"]
    assert main(["train", "--out", str(run), *args, "train.max_steps=1"]) == 0
    broken = JambaTalk.from_pretrained(run / "last")
    with torch.no_grad():
        broken.head.bias.fill_(float("nan"))
    broken.save_pretrained(tmp_path / "broken")
    assert main(["test", "--checkpoint", str(tmp_path / "broken"), "--out", str(tmp_path / "eval"), *args]) == 2
    err = capsys.readouterr().err
    assert "non-finite vertices" in err and "broken" in err
    assert not list((tmp_path / "eval").rglob("*.npy"))
    if (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        assert main(["test", "--checkpoint", str(DEFAULT_MODEL_DIR), *args]) == 2
        assert "pass --out" in capsys.readouterr().err
        assert not (DEFAULT_MODEL_DIR / "eval").exists()


def test_test_that_fails_part_way_leaves_earlier_predictions_and_no_new_files(corpus, tmp_path, capsys):
    """jambatalk test writes pred/ whole or not at all: a damaged recording part-way through a split stops
    it with the earlier run's predictions untouched, nothing half-written beside them, and no --out folder
    where there was none; a pred/ folder holding other files is refused before anything runs."""
    from jambatalk.cli import main

    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    args = ["--config", str(ROOT / "configs" / "debug.yaml"), f"data.root={data}", "data.generate=false"]
    assert main(["train", "--out", str(tmp_path / "run"), *args, "train.max_steps=1"]) == 0
    assert main(["train", "--out", str(tmp_path / "run2"), *args, "train.max_steps=2"]) == 0  # other predictions
    out = tmp_path / "eval"
    assert main(["test", "--checkpoint", str(tmp_path / "run"), "--out", str(out), "--split", "train", *args]) == 0
    before = {p.name: p.read_bytes() for p in (out / "pred").iterdir()}
    report = (out / "report.json").read_bytes()
    names = json.loads((data / "splits.json").read_text())["train"]
    assert len(names) >= 2 and sorted(before) == sorted(f"{n}.npy" for n in names)

    (data / "wav" / f"{names[1]}.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    capsys.readouterr()
    assert main(["test", "--checkpoint", str(tmp_path / "run2"), "--out", str(out), "--split", "train", *args]) == 2
    assert names[1] in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (out / "pred").iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(["pred", "report.json", *(p.name for p in out.glob("*.png"))])
    assert (out / "report.json").read_bytes() == report
    assert main(["test", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "new"), "--split", "train", *args]) == 2
    assert not (tmp_path / "new").exists()

    (out / "pred" / "notes.txt").write_text("mine")
    assert main(["test", "--checkpoint", str(tmp_path / "run"), "--out", str(out), "--split", "train", *args]) == 2
    assert "not predictions" in capsys.readouterr().err
    assert (out / "pred" / "notes.txt").read_text() == "mine"
