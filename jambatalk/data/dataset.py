"""One Dataset and one collate function for every processed dataset, driven by its spec."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..errors import DatasetError
from .specs import DatasetSpec, get_spec, split_name

__all__ = ["SequenceDataset", "collate", "load_labels", "crop_phonemes"]


def load_labels(path: str | os.PathLike) -> dict:
    """Read ``labels/<name>.json`` = {"text": str, "phonemes": [[symbol, start_s, end_s], ...]}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        phonemes = [[str(p[0]), float(p[1]), float(p[2])] for p in data.get("phonemes", [])]
    except (OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise DatasetError(f"label file '{path}' is not valid ({type(exc).__name__}: {exc})",
                           'write {"text": ..., "phonemes": [[symbol, start_s, end_s], ...]}') from exc
    return {"text": str(data.get("text", "")), "phonemes": phonemes}


#: audio and vertices that disagree by more than this many seconds, and by more than MISMATCH_SHARE of the longer,
#: are reported: the preprocessors and jambatalk synth leave them within a frame of each other
MISMATCH_SECONDS = 0.5
MISMATCH_SHARE = 0.2


def _check_durations(name: str, audio_s: float, n_frames: int, fps: float) -> None:
    """Warn when a sequence's audio and vertex frames last grossly different times (a wrong file, a cut recording)."""
    frames_s = n_frames / fps
    if abs(audio_s - frames_s) > max(MISMATCH_SECONDS, MISMATCH_SHARE * max(audio_s, frames_s)):
        warnings.warn(f"sequence {name}: its audio lasts {audio_s:.3g} s but its {n_frames} vertex frames last "
                      f"{frames_s:.3g} s at {fps:g} fps; it is used as it is, but its speech and motion do not match "
                      "(run the preprocessing again, or remove the sequence from the dataset)", stacklevel=3)


def crop_phonemes(phonemes: list, start_s: float, end_s: float) -> list:
    """Phonemes overlapping [start_s, end_s), clipped to it and shifted to start at 0."""
    out = []
    for symbol, a, b in phonemes:
        if b > start_s and a < end_s:
            out.append([symbol, max(a, start_s) - start_s, min(b, end_s) - start_s])
    return out


class SequenceDataset(torch.utils.data.Dataset):
    """Sequences of one split of a processed dataset (``vertices_npy/``, ``wav/``, ``templates.pkl``).

    Each item is a dict: ``name``, ``subject``, ``subject_index`` (index among the spec's training
    subjects, or -1), ``audio`` (float32 (N,) at 16 kHz, through :func:`jambatalk.audio.load_audio`),
    ``vertices`` (float32 (T, V, 3)), ``template`` (float32 (V, 3)), ``phonemes`` (list of
    [symbol, start_s, end_s] from ``labels/<name>.json``, or None), ``text`` (str or None) and,
    with a ``token_table``, ``tokens`` (int64 ids of the phonemes, or None).

    Args:
        spec: a dataset spec or its registered name.
        root: the processed folder.
        split: split name of the spec (train, val, test, ...).
        subjects: keep only these subjects of the split.
        cache_audio: keep decoded audio in memory after the first read.
        max_seconds: > 0: crop each item to a random window of at most this length, audio and
            vertices cut at the same instants (window start on a frame boundary).
        token_table: mapping phoneme symbol -> id for ``tokens``; unknown symbols map to the
            table's ``"<unk>"`` entry, or raise a DatasetError when it has none.
        augment: pass every read's audio through a new random room, microphone and noise
            (:func:`jambatalk.synth.augment.random_training_augmentation`, seeded from the torch RNG
            like the crops, so a seeded run is repeatable); for training splits only.

    An item is read by its index, or by ``(index, seed)``: the crop and the augmentation then draw
    from a generator of that seed instead of the torch RNG, so that the item is the same in whichever
    process reads it (the trainer's loader workers).
    """

    def __init__(self, spec: Union[str, DatasetSpec], root: str | os.PathLike, split: str, *,
                 subjects: Optional[list[str]] = None, cache_audio: bool = True, max_seconds: float = 0.0,
                 token_table: Optional[Mapping[str, int]] = None, augment: bool = False):
        self.spec = get_spec(spec)
        self.augment = bool(augment)
        self.root = Path(root)
        self.split = split
        self.cache_audio = cache_audio
        self.max_seconds = float(max_seconds)
        if self.max_seconds < 0:
            raise DatasetError(f"max_seconds is {max_seconds}", "use 0 (whole sequences) or a positive length")
        self.token_table = token_table
        names = self.spec.sequences(split, self.root)
        if subjects is not None:
            known = {split_name(n)[0] for n in self.spec.expected_names(split, self.root)}
            unknown = [s for s in subjects if s not in known]
            if unknown:
                raise DatasetError(f"subjects {unknown} are not in {self.spec.name} split '{split}'",
                                   f"choose from: {', '.join(sorted(known))}")
            names = [n for n in names if split_name(n)[0] in set(subjects)]
            if not names:
                raise DatasetError(f"no sequence of subjects {subjects} in {self.spec.name} split '{split}' "
                                   f"exists in '{self.root}'", "check the processed folder")
        self.names = names
        templates_path = self.root / "templates.pkl"
        if not templates_path.is_file():
            raise DatasetError(f"'{templates_path}' is missing", f"run the preprocessing again (see {self.spec.readme})")
        self.templates = self.spec.templates(path=templates_path)
        self.train_subjects = self.spec.train_subjects(self.root)
        absent = sorted({split_name(n)[0] for n in names} - set(self.templates))
        if absent:
            raise DatasetError(f"'{templates_path}' has no template for subjects {absent}",
                               f"run the preprocessing again (see {self.spec.readme})")
        self._audio: dict[str, np.ndarray] = {}
        self._finite: set[str] = set()  # sequences whose vertices were checked for NaN and inf
        self._timed: set[str] = set()  # sequences whose audio and vertex durations were compared

    def __len__(self) -> int:
        return len(self.names)

    def _load_audio(self, name: str) -> np.ndarray:
        if name in self._audio:
            return self._audio[name]
        from ..audio import load_audio
        from ..errors import InputError

        try:
            audio = load_audio(self.root / "wav" / f"{name}.wav")
        except InputError as exc:
            raise DatasetError(exc.problem, exc.fix) from exc
        if self.cache_audio:
            self._audio[name] = audio
        return audio

    def _load_vertices(self, name: str, n_vertices: int) -> np.ndarray:
        path = self.root / "vertices_npy" / f"{name}.npy"
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"'{path}' is not a readable .npy file ({exc})", "run the preprocessing again") from exc
        if arr.ndim != 2 or arr.shape[1] != 3 * n_vertices or arr.shape[0] == 0:
            raise DatasetError(f"'{path}' has shape {arr.shape}; expected (frames, {3 * n_vertices}) for the "
                               f"{n_vertices}-vertex template", "run the preprocessing again")
        if name not in self._finite:  # each file is read whole once, on its first use
            bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
            if bad.size:
                raise DatasetError(f"'{path}' has non-finite vertex coordinates (NaN or inf) in {bad.size} of "
                                   f"{len(arr)} frames (the first is frame {int(bad[0])})",
                                   "run the preprocessing (or jambatalk synth) again for this sequence, or remove it "
                                   "from the dataset")
            self._finite.add(name)
        return arr

    def __getitem__(self, index: Union[int, tuple[int, int]]) -> dict:
        from ..audio import SAMPLE_RATE

        generator = None
        if isinstance(index, tuple):
            index, seed = index
            generator = torch.Generator().manual_seed(int(seed))
        name = self.names[index]
        subject = split_name(name)[0]
        template = self.templates[subject]
        n_vertices = template.shape[0]
        raw = self._load_vertices(name, n_vertices)
        audio = self._load_audio(name)
        labels_path = self.root / "labels" / f"{name}.json"
        labels = load_labels(labels_path) if labels_path.is_file() else None
        phonemes = labels["phonemes"] if labels else None

        fps = self.spec.fps
        n_frames = raw.shape[0]
        if name not in self._timed:
            self._timed.add(name)
            _check_durations(name, len(audio) / SAMPLE_RATE, n_frames, fps)
        start = 0
        if self.max_seconds > 0:
            window = max(1, int(self.max_seconds * fps + 1e-6))
            if n_frames > window:
                start = int(torch.randint(0, n_frames - window + 1, (1,), generator=generator).item())
                n_frames = window
        vertices = np.array(raw[start:start + n_frames], dtype=np.float32).reshape(n_frames, n_vertices, 3)
        if start or n_frames < raw.shape[0]:
            a = int(round(start * SAMPLE_RATE / fps))
            b = int(round((start + n_frames) * SAMPLE_RATE / fps))
            audio = audio[a:b]
            if audio.size == 0:
                raise DatasetError(f"sequence {name}: no audio in the cropped window (the audio is shorter than "
                                   "its vertices)", "run the preprocessing again")
            if phonemes is not None:
                phonemes = crop_phonemes(phonemes, start / fps, (start + n_frames) / fps)
        if self.augment:
            from ..synth.augment import augment, random_training_augmentation

            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator).item()))
            audio = augment(audio, SAMPLE_RATE, random_training_augmentation(rng))
        item = {
            "name": name,
            "subject": subject,
            "subject_index": self.train_subjects.index(subject) if subject in self.train_subjects else -1,
            "audio": np.ascontiguousarray(audio, dtype=np.float32),
            "vertices": vertices,
            "template": template,
            "phonemes": phonemes,
            "text": labels["text"] if labels else None,
        }
        if self.token_table is not None:
            item["tokens"] = None if phonemes is None else self._tokens(phonemes, name)
        return item

    def _tokens(self, phonemes: list, name: str) -> np.ndarray:
        table = self.token_table
        ids = []
        for symbol, _, _ in phonemes:
            if symbol in table:
                ids.append(table[symbol])
            elif "<unk>" in table:
                ids.append(table["<unk>"])
            else:
                raise DatasetError(f"sequence {name}: phoneme {symbol!r} is not in the token table",
                                   "add it to the table, or give the table an '<unk>' entry")
        return np.asarray(ids, dtype=np.int64)


def collate(batch: list[dict]) -> dict:
    """Stack items of different lengths into padded tensors with masks.

    Returns a dict with ``audio`` (B, Nmax) float32 zero-padded, ``audio_lengths`` (B,),
    ``vertices`` (B, Tmax, V, 3) zero-padded, ``frame_mask`` (B, Tmax) bool (True on real frames),
    ``frame_lengths`` (B,), ``template`` (B, V, 3), ``subject_index`` (B,) int64, and the lists
    ``names``, ``subjects``, ``phonemes``, ``texts``; with tokens, ``tokens`` (B, Lmax) int64
    padded with -1 and ``token_lengths`` (B,).
    """
    if not batch:
        raise DatasetError("collate() got an empty batch", "pass at least one item")
    shapes = {tuple(item["template"].shape) for item in batch}
    if len(shapes) > 1:
        raise DatasetError(f"a batch mixes meshes of different sizes {sorted(shapes)}",
                           "batch sequences of one dataset (one topology) together")
    b = len(batch)
    n_vertices = batch[0]["template"].shape[0]
    audio_lengths = torch.tensor([len(item["audio"]) for item in batch], dtype=torch.long)
    frame_lengths = torch.tensor([len(item["vertices"]) for item in batch], dtype=torch.long)
    audio = torch.zeros(b, int(audio_lengths.max()), dtype=torch.float32)
    vertices = torch.zeros(b, int(frame_lengths.max()), n_vertices, 3, dtype=torch.float32)
    for i, item in enumerate(batch):
        audio[i, : len(item["audio"])] = torch.from_numpy(np.asarray(item["audio"], dtype=np.float32))
        vertices[i, : len(item["vertices"])] = torch.from_numpy(np.asarray(item["vertices"], dtype=np.float32))
    frame_mask = torch.arange(vertices.shape[1])[None, :] < frame_lengths[:, None]
    out = {
        "audio": audio,
        "audio_lengths": audio_lengths,
        "vertices": vertices,
        "frame_mask": frame_mask,
        "frame_lengths": frame_lengths,
        "template": torch.from_numpy(np.stack([np.asarray(item["template"], dtype=np.float32) for item in batch])),
        "subject_index": torch.tensor([int(item["subject_index"]) for item in batch], dtype=torch.long),
        "names": [item["name"] for item in batch],
        "subjects": [item.get("subject") for item in batch],
        "phonemes": [item.get("phonemes") for item in batch],
        "texts": [item.get("text") for item in batch],
    }
    if any("tokens" in item for item in batch):
        tokens = [item.get("tokens") for item in batch]
        lengths = torch.tensor([0 if t is None else len(t) for t in tokens], dtype=torch.long)
        padded = torch.full((b, max(1, int(lengths.max()))), -1, dtype=torch.long)
        for i, t in enumerate(tokens):
            if t is not None and len(t):
                padded[i, : len(t)] = torch.from_numpy(np.asarray(t, dtype=np.int64))
        out["tokens"] = padded
        out["token_lengths"] = lengths
    return out
