"""The synthetic corpus: layout, consistency, splits, determinism, restart, command line."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from jambatalk.synth import espeak
from jambatalk.synth.corpus import generate_corpus, plan_corpus
from jambatalk.synth.speakers import HELDOUT_SPEAKERS, TRAIN_SPEAKERS

pytestmark = pytest.mark.skipif(not espeak.available(),
                                reason="libespeak-ng is not installed (apt-get install espeak-ng libespeak-ng1)")
N = 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_corpus(tmp_path_factory.mktemp("synth") / "a", n_sentences=N, seed=3, workers=2, progress=False)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_complete_and_consistent(corpus):
    import soundfile as sf

    meta = json.loads((corpus / "meta.json").read_text())
    splits = json.loads((corpus / "splits.json").read_text())
    templates = pickle.loads((corpus / "templates.pkl").read_bytes())
    regions = json.loads((corpus / "regions.json").read_text())
    assert meta["dataset"] == "synthetic" and meta["fps"] == 30 and meta["seed"] == 3
    names = splits["train"] + splits["val"] + splits["test"]
    assert len(names) == len(set(names)) == N and all(splits[k] for k in ("train", "val", "test"))
    v = meta["n_vertices"]
    assert all(t.shape == (v, 3) and t.dtype == np.float32 for t in templates.values())
    assert all(0 <= min(idx) and max(idx) < v for idx in regions.values() if idx)
    tokens = set()
    for name in names:
        subject = name.rsplit("_", 1)[0]
        assert subject in templates
        seq = np.load(corpus / "vertices_npy" / f"{name}.npy")
        audio, sr = sf.read(corpus / "wav" / f"{name}.wav", dtype="int16")
        assert sf.info(corpus / "wav" / f"{name}.wav").subtype == "PCM_16" and sr == 16000
        label = json.loads((corpus / "labels" / f"{name}.json").read_text())
        assert seq.dtype == np.float32 and seq.ndim == 2 and seq.shape[1] == 3 * v
        assert abs(seq.shape[0] - len(audio) / sr * 30) <= 1
        assert label["phonemes"][-1][2] == pytest.approx(len(audio) / sr, abs=2e-3)
        assert label["text"] and label["n_frames"] == seq.shape[0]
        # the motion is the subject's template plus mouth and face motion
        frames = seq.reshape(len(seq), v, 3)
        assert np.abs(frames - templates[subject]).max() > 2e-3
        tokens.update(p[0] for p in label["phonemes"])
    assert meta["tokens"] == sorted(tokens)


def test_splits_hold_out_text_and_a_voice(corpus):
    splits = json.loads((corpus / "splits.json").read_text())
    text = {n: json.loads((corpus / "labels" / f"{n}.json").read_text())["text"] for s in splits.values() for n in s}
    train_text = {text[n] for n in splits["train"]}
    assert not train_text & {text[n] for n in splits["val"] + splits["test"]}
    held = {s.name for s in HELDOUT_SPEAKERS}
    assert any(n.rsplit("_", 1)[0] in held for n in splits["test"])
    assert not any(n.rsplit("_", 1)[0] in held for n in splits["train"] + splits["val"])
    assert {s.voice for s in HELDOUT_SPEAKERS}.isdisjoint({s.voice for s in TRAIN_SPEAKERS})
    plan = plan_corpus(300, seed=0)
    assert sum(it["split"] == "test" and it["speaker"] in held for it in plan) >= 10


def test_same_seed_same_files_and_restart(corpus, tmp_path):
    from jambatalk.cli import main

    other = tmp_path / "b"
    assert main(["synth", "--dst", str(other), "--sentences", str(N), "--seed", "3", "--workers", "1"]) == 0
    assert _files(corpus) == _files(other)
    name = json.loads((other / "splits.json").read_text())["train"][0]
    (other / "vertices_npy" / f"{name}.npy").unlink()
    kept = other / "wav" / f"{json.loads((other / 'splits.json').read_text())['test'][0]}.wav"
    stamp = kept.stat().st_mtime_ns
    generate_corpus(other, n_sentences=N, seed=3, workers=1, progress=False)
    assert kept.stat().st_mtime_ns == stamp  # finished sequences are skipped
    assert _files(corpus) == _files(other)
    assert not list(other.rglob("*.part*"))


def test_inserted_silences_move_timings_and_keep_the_mouth_closed():
    from jambatalk.synth.corpus import insert_silences, make_sequence
    from jambatalk.synth.head import default_head
    from jambatalk.synth.motion import lip_gap

    audio = np.ones(16000, np.float32)
    ph = [["_", 0.0, 0.1], ["a", 0.1, 0.4], ["_", 0.4, 0.5], ["m", 0.5, 0.9], ["_", 0.9, 1.0]]
    out, new = insert_silences(audio, 16000, ph, {"lead": 0.25, "tail": 0.5, "inner": [0.3]})
    assert len(out) == 16000 + int(0.25 * 16000) + int(0.3 * 16000) + int(0.5 * 16000)
    assert new[0] == ["_", 0.0, 0.35] and new[-1][2] == pytest.approx(len(out) / 16000)
    assert all(a[2] == pytest.approx(b[1]) for a, b in zip(new, new[1:]))  # contiguous
    assert new[2] == ["_", 0.65, 1.05]  # the inner pause grew by 0.3 s
    assert np.all(out[: int(0.25 * 16000)] == 0) and np.all(out[-int(0.5 * 16000):] == 0)
    # a planned sequence: long silences are in the audio, and the mouth is closed through them
    item = plan_corpus(5, seed=1)[0]
    item["augment"] = None
    vertices, wav, label = make_sequence(item, default_head())
    lead_end = label["phonemes"][0][2]
    assert label["phonemes"][0][0] == "_" and lead_end >= item["silence"]["lead"]
    assert label["phonemes"][-1][2] == pytest.approx(len(wav) / 16000, abs=1e-5)
    head = default_head()
    gap = lip_gap(head, vertices)
    quiet = gap[: max(1, int((lead_end - 0.15) * 30))]
    assert np.abs(wav[: int((item["silence"]["lead"] - 0.01) * 16000)]).max() == 0
    assert quiet.max() <= gap.max() * 0.1


def test_bad_template_regions_and_destination_are_input_errors(tmp_path):
    """A damaged regions file, a face-less template mesh and a --dst under a file are refused by name."""
    from jambatalk.errors import InputError
    from jambatalk.mesh import save_mesh
    from jambatalk.synth import default_head
    from jambatalk.synth.corpus import load_template_head

    head = default_head()
    save_mesh(tmp_path / "head.ply", head.vertices, head.faces)
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(InputError, match="could not be read"):
        load_template_head(f"{tmp_path / 'head.ply'}:{tmp_path / 'bad.pkl'}")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="holds list, not a dict"):
        load_template_head(f"{tmp_path / 'head.ply'}:{tmp_path / 'list.json'}")
    save_mesh(tmp_path / "cloud.ply", head.vertices, None)
    (tmp_path / "regions.json").write_text("{}")
    with pytest.raises(InputError, match="no faces"):
        load_template_head(f"{tmp_path / 'cloud.ply'}:{tmp_path / 'regions.json'}")
    with pytest.raises(InputError, match="template mesh '.*nope.ply' does not exist"):
        load_template_head(str(tmp_path / "nope.ply"))  # named as missing, not as lacking a regions file
    with pytest.raises(InputError, match="is a folder"):
        load_template_head(str(tmp_path))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        generate_corpus(tmp_path / "afile" / "sub", n_sentences=2, progress=False)


def test_the_space_estimate_fits_what_is_written(corpus):
    from jambatalk.synth.corpus import estimated_bytes

    written = sum(p.stat().st_size for sub in ("vertices_npy", "wav", "labels") for p in (corpus / sub).iterdir())
    estimate = estimated_bytes(plan_corpus(N, 3), json.loads((corpus / "meta.json").read_text())["n_vertices"])
    assert 0.7 < estimate / written < 1.4


def test_a_corpus_the_disk_has_no_room_for_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import collections
    import shutil

    from jambatalk.errors import InputError

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 50 * 10**6, 50 * 10**6))
    with pytest.raises(InputError, match=r"the corpus needs about 1\.\d GB in '.*new' \(300 sequences of about "
                                         r"3\.\d MB\) but 0\.1 GB is free there; pass fewer --sentences"):
        generate_corpus(tmp_path / "new", n_sentences=300, progress=False)
    assert not (tmp_path / "new").exists()


def test_a_folder_holding_another_dataset_is_refused_and_left_as_it_was(tmp_path):
    """synth --dst on a processed VOCASET folder replaced its templates.pkl and mixed its sequences in, exit 0."""
    from jambatalk.errors import InputError

    dst = tmp_path / "vocaset"
    (dst / "vertices_npy").mkdir(parents=True)
    np.save(dst / "vertices_npy" / "FaceTalk_170725_00137_TA_sentence01.npy", np.zeros((3, 15), np.float32))
    templates = pickle.dumps({"FaceTalk_170725_00137_TA": np.zeros((5, 3), np.float32)})
    (dst / "templates.pkl").write_bytes(templates)
    before = sorted(p.relative_to(dst) for p in dst.rglob("*"))
    with pytest.raises(InputError, match=r"holds a dataset that is not a synthetic corpus \(templates.pkl, "
                                         r"vertices_npy/FaceTalk_170725_00137_TA_sentence01.npy without meta.json"):
        generate_corpus(dst, n_sentences=3, progress=False)
    assert sorted(p.relative_to(dst) for p in dst.rglob("*")) == before
    assert (dst / "templates.pkl").read_bytes() == templates
