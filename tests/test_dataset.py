"""SequenceDataset and collate: variable lengths, padding masks, aligned cropping, labels."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from jambatalk.data import DatasetSpec, SplitDef
from jambatalk.data.dataset import SequenceDataset, collate, crop_phonemes
from jambatalk.errors import DatasetError

FPS = 25.0
HOP = 640  # 16 kHz samples per frame at 25 fps
V = 6
LENGTHS = {"A_s1": 12, "A_s2": 7, "B_s1": 20, "B_s2": 9, "C_s1": 5}

SPEC = DatasetSpec(name="tiny_test", fps=FPS, vertex_count=V, camera="fit",
                   splits={"train": SplitDef(("A", "B"), ("s1", "s2")), "val": SplitDef(("C",), ("s1",))})


@pytest.fixture
def root(tmp_path):
    """A processed folder whose vertex values and audio samples both encode the frame number."""
    for sub in ("vertices_npy", "wav", "labels"):
        (tmp_path / sub).mkdir()
    for name, n in LENGTHS.items():
        seq_id = sorted(LENGTHS).index(name)
        frames = np.arange(n, dtype=np.float32)[:, None, None] + np.zeros((1, V, 3), np.float32)
        frames[:, :, 1] = seq_id
        np.save(tmp_path / "vertices_npy" / f"{name}.npy", frames.reshape(n, -1))
        audio = (np.repeat(np.arange(n), HOP) * 100).astype(np.int16)  # sample value = 100 * frame
        sf.write(tmp_path / "wav" / f"{name}.wav", audio, 16000, subtype="PCM_16")
    labels = {"text": "hi there", "phonemes": [["h", 0.0, 0.1], ["aI", 0.1, 0.3], ["D", 0.3, 0.42]]}
    (tmp_path / "labels" / "A_s1.json").write_text(json.dumps(labels))
    templates = {s: np.full((V, 3), i, np.float32) for i, s in enumerate("ABC")}
    with open(tmp_path / "templates.pkl", "wb") as f:
        pickle.dump(templates, f)
    return tmp_path


def test_items_hold_aligned_audio_vertices_and_labels(root):
    ds = SequenceDataset(SPEC, root, "train")
    assert ds.names == ["A_s1", "A_s2", "B_s1", "B_s2"]
    item = ds[2]
    assert item["name"] == "B_s1" and item["subject"] == "B" and item["subject_index"] == 1
    assert item["vertices"].dtype == np.float32 and item["vertices"].shape == (20, V, 3)
    np.testing.assert_array_equal(item["vertices"][:, 0, 0], np.arange(20))
    assert item["audio"].dtype == np.float32 and item["audio"].shape == (20 * HOP,)
    np.testing.assert_allclose(item["audio"][::HOP] * 32768 / 100, np.arange(20))
    np.testing.assert_array_equal(item["template"], np.full((V, 3), 1, np.float32))
    assert item["phonemes"] is None and item["text"] is None
    first = ds[0]
    assert first["phonemes"] == [["h", 0.0, 0.1], ["aI", 0.1, 0.3], ["D", 0.3, 0.42]]
    assert first["text"] == "hi there"
    val = SequenceDataset(SPEC, root, "val")
    assert val[0]["subject_index"] == -1


def test_collate_pads_variable_lengths_with_masks(root):
    ds = SequenceDataset(SPEC, root, "train")
    items = [ds[i] for i in range(4)]
    batch = collate(items)
    lengths = [12, 7, 20, 9]
    assert batch["vertices"].shape == (4, 20, V, 3) and batch["audio"].shape == (4, 20 * HOP)
    assert batch["frame_lengths"].tolist() == lengths
    assert batch["audio_lengths"].tolist() == [n * HOP for n in lengths]
    assert batch["frame_mask"].dtype == torch.bool
    assert batch["frame_mask"].sum(1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert batch["frame_mask"][i, :n].all() and not batch["frame_mask"][i, n:].any()
        torch.testing.assert_close(batch["vertices"][i, :n], torch.from_numpy(items[i]["vertices"]))
        assert (batch["vertices"][i, n:] == 0).all() and (batch["audio"][i, n * HOP:] == 0).all()
        torch.testing.assert_close(batch["audio"][i, : n * HOP], torch.from_numpy(items[i]["audio"]))
    assert batch["template"].shape == (4, V, 3)
    assert batch["subject_index"].tolist() == [0, 0, 1, 1]
    assert batch["names"] == ["A_s1", "A_s2", "B_s1", "B_s2"]
    assert batch["phonemes"][0] is not None and batch["phonemes"][1] is None


def test_dataloader_batches_of_two(root):
    ds = SequenceDataset(SPEC, root, "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate, shuffle=False)
    batches = list(loader)
    assert [b["names"] for b in batches] == [["A_s1", "A_s2"], ["B_s1", "B_s2"]]
    assert batches[1]["vertices"].shape == (2, 20, V, 3)


def test_cropping_keeps_audio_vertices_and_phonemes_aligned(root):
    ds = SequenceDataset(SPEC, root, "train", max_seconds=0.2)  # 5 frames
    starts = set()
    torch.manual_seed(0)
    for _ in range(30):
        item = ds[2]  # 20 frames
        v, a = item["vertices"], item["audio"]
        assert v.shape == (5, V, 3) and a.shape == (5 * HOP,)
        start = int(v[0, 0, 0])
        np.testing.assert_array_equal(v[:, 0, 0], np.arange(start, start + 5))
        # the audio window starts at the same instant: its first hop carries the same frame number
        np.testing.assert_allclose(a[::HOP] * 32768 / 100, np.arange(start, start + 5))
        starts.add(start)
    assert len(starts) > 3 and min(starts) >= 0 and max(starts) <= 15
    # sequences shorter than the window are returned whole
    longer_window = SequenceDataset(SPEC, root, "train", max_seconds=0.4)
    assert longer_window[1]["vertices"].shape[0] == 7 and longer_window[1]["audio"].shape[0] == 7 * HOP


def _same_phonemes(got, want):
    assert [p[0] for p in got] == [p[0] for p in want]
    np.testing.assert_allclose([p[1:] for p in got], [p[1:] for p in want], atol=1e-9)


def test_crop_phonemes_clips_and_shifts():
    ph = [["h", 0.0, 0.1], ["aI", 0.1, 0.3], ["D", 0.3, 0.42]]
    _same_phonemes(crop_phonemes(ph, 0.2, 0.4), [["aI", 0.0, 0.1], ["D", 0.1, 0.2]])
    assert crop_phonemes(ph, 0.5, 0.6) == []


def test_cropped_item_phonemes_follow_the_window(root):
    ds = SequenceDataset(SPEC, root, "train", max_seconds=0.2)
    torch.manual_seed(1)
    for _ in range(10):
        item = ds[0]
        start_s = float(item["vertices"][0, 0, 0]) / FPS
        full = [["h", 0.0, 0.1], ["aI", 0.1, 0.3], ["D", 0.3, 0.42]]
        want = crop_phonemes(full, start_s, start_s + 0.2)
        _same_phonemes(item["phonemes"], want)
        assert all(0 <= a < b <= 0.2 + 1e-9 for _, a, b in want) and (start_s >= 0.42 or want)


def test_audio_cache(root):
    cached = SequenceDataset(SPEC, root, "val", cache_audio=True)
    uncached = SequenceDataset(SPEC, root, "val", cache_audio=False)
    first = cached[0]["audio"]
    uncached[0]
    (root / "wav" / "C_s1.wav").unlink()
    np.testing.assert_array_equal(cached[0]["audio"], first)
    with pytest.raises(DatasetError, match="C_s1.wav"):
        uncached[0]


def test_subject_filter_and_errors(root):
    ds = SequenceDataset(SPEC, root, "train", subjects=["B"])
    assert ds.names == ["B_s1", "B_s2"]
    with pytest.raises(DatasetError, match=r"\['Z'\]"):
        SequenceDataset(SPEC, root, "train", subjects=["Z"])
    with pytest.raises(DatasetError, match="max_seconds"):
        SequenceDataset(SPEC, root, "train", max_seconds=-1)
    np.save(root / "vertices_npy" / "A_s2.npy", np.zeros((4, 3 * (V + 1)), np.float32))
    with pytest.raises(DatasetError, match=r"A_s2.npy' has shape \(4, 21\)"):
        SequenceDataset(SPEC, root, "train")[1]


def test_missing_sequences_warn_and_templates_are_required(root):
    (root / "wav" / "B_s2.wav").unlink()
    with pytest.warns(UserWarning, match="B_s2"):
        ds = SequenceDataset(SPEC, root, "train")
    assert ds.names == ["A_s1", "A_s2", "B_s1"]
    (root / "templates.pkl").unlink()
    with pytest.raises(DatasetError, match="templates.pkl"):
        SequenceDataset(SPEC, root, "val")


def test_token_table(root):
    ds = SequenceDataset(SPEC, root, "train", token_table={"h": 1, "aI": 2, "D": 3})
    assert ds[0]["tokens"].tolist() == [1, 2, 3] and ds[1]["tokens"] is None
    batch = collate([ds[0], ds[1]])
    assert batch["tokens"].tolist() == [[1, 2, 3], [-1, -1, -1]] and batch["token_lengths"].tolist() == [3, 0]
    with pytest.raises(DatasetError, match="'aI' is not in the token table"):
        SequenceDataset(SPEC, root, "train", token_table={"h": 1, "D": 3})[0]
    unk = SequenceDataset(SPEC, root, "train", token_table={"<unk>": 0, "h": 1})
    assert unk[0]["tokens"].tolist() == [1, 0, 0]


def test_collate_refuses_mixed_meshes(root):
    ds = SequenceDataset(SPEC, root, "train")
    other = dict(ds[0], template=np.zeros((V + 1, 3), np.float32))
    with pytest.raises(DatasetError, match="different sizes"):
        collate([ds[1], other])


def test_training_augmentation_changes_the_audio_only_and_follows_the_torch_seed(root):
    plain = SequenceDataset(SPEC, root, "train")
    noisy = SequenceDataset(SPEC, root, "train", augment=True)
    torch.manual_seed(5)
    a = noisy[2]
    torch.manual_seed(5)
    b = noisy[2]
    c = noisy[2]  # the next read draws a new room, microphone and noise
    ref = plain[2]
    np.testing.assert_array_equal(a["audio"], b["audio"])
    assert a["audio"].shape == ref["audio"].shape and not np.allclose(a["audio"], ref["audio"])
    assert not np.allclose(a["audio"], c["audio"])
    np.testing.assert_array_equal(a["vertices"], ref["vertices"])
    assert a["phonemes"] == ref["phonemes"]


def test_an_item_read_with_a_seed_draws_its_crop_and_augmentation_from_that_seed_alone(root):
    """(index, seed) reads: the same item in any process and whatever the torch RNG has drawn (loader workers)."""
    ds = SequenceDataset(SPEC, root, "train", max_seconds=0.2, augment=True)
    torch.manual_seed(0)
    a = ds[(2, 11)]
    torch.rand(100)
    b = ds[(2, 11)]
    np.testing.assert_array_equal(a["vertices"], b["vertices"])
    np.testing.assert_array_equal(a["audio"], b["audio"])
    others = [ds[(2, seed)] for seed in range(12, 20)]
    assert len({int(o["vertices"][0, 0, 0]) for o in others + [a]}) > 3  # other windows
    assert not any(np.array_equal(o["audio"], a["audio"]) for o in others)
