"""VOCASET: reading the raw release and converting it to the processed layout.

The raw release (see vocaset/README.md) is four files:

- ``data_verts.npy``: float64 (N, 5023, 3), every captured frame of every sequence at 60 fps (about
  14 GB). It is memory-mapped read-only and read one sequence at a time, and the mapping is dropped
  after each sequence, so memory stays far below the file's size.
- ``subj_seq_to_idx.pkl``: ``{subject: {"sentenceNN": {frame: row of data_verts}}}``.
- ``raw_audio_fixed.pkl``: ``{subject: {"sentenceNN": {"audio": int16 (n,), "sample_rate": 22000}}}``.
- ``templates.pkl``: ``{subject: (5023, 3)}``.

The 60 -> 30 fps step (every second captured frame, starting with the first) happens once, in
:func:`decimate_rows`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from ..audio import is_whole_number
from ..errors import DatasetError
from .preprocess import (
    PreprocessReport,
    align_lengths,
    check_finite,
    check_src_dst,
    check_templates,
    copy_spec_files,
    gap_note,
    prepare_dst,
    progress,
    require_usable,
    sequence_done,
    write_sequence,
    write_templates,
)
from .specs import DatasetSpec, get_spec, load_pickle

__all__ = [
    "RAW_FILES",
    "NpyHeader",
    "read_npy_header",
    "check_data_verts",
    "load_index_map",
    "load_raw_audio",
    "decimate_rows",
    "preprocess_vocaset",
]

#: The raw files the preprocessor reads from --src.
RAW_FILES = ("data_verts.npy", "subj_seq_to_idx.pkl", "raw_audio_fixed.pkl", "templates.pkl")
_README = "vocaset/README.md"


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int  # bytes before the data

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def read_npy_header(path: str | os.PathLike) -> NpyHeader:
    """Parse a .npy header without touching the data."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"'{path}' is not a readable .npy file ({exc})",
                           f"re-download it (see {_README})") from exc
    return NpyHeader(tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran), int(offset))


def check_data_verts(path: str | os.PathLike, n_vertices: int) -> NpyHeader:
    """Validate data_verts.npy's header against the mesh and the file's actual size (truncation)."""
    path = Path(path)
    header = read_npy_header(path)
    shape = header.shape
    if len(shape) != 3 or shape[1:] != (n_vertices, 3) or header.dtype.kind != "f":
        raise DatasetError(f"'{path}' holds {header.dtype} {shape}; expected float (frames, {n_vertices}, 3)",
                           f"use VOCASET's data_verts.npy (see {_README})")
    if header.fortran_order:
        raise DatasetError(f"'{path}' is stored in Fortran order, which cannot be streamed frame by frame",
                           "re-save it in C order (np.save(path, np.ascontiguousarray(array)))")
    expected = header.offset + header.data_bytes
    actual = path.stat().st_size
    if actual < expected:
        frame_bytes = n_vertices * 3 * header.dtype.itemsize
        whole = max(0, actual - header.offset) // frame_bytes
        raise DatasetError(f"'{path}' is truncated: its header promises {shape[0]} frames ({expected} bytes) but "
                           f"the file has {actual} bytes (only {whole} whole frames)",
                           f"the download or copy was cut short; download data_verts.npy again (see {_README})")
    return header


def _frame_key(key) -> int:
    try:
        return int(key)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"frame key {key!r} in subj_seq_to_idx.pkl is not a number",
                           f"use VOCASET's subj_seq_to_idx.pkl (see {_README})") from exc


def load_index_map(path: str | os.PathLike) -> dict[tuple[str, str], np.ndarray]:
    """subj_seq_to_idx.pkl -> {(subject, sentence): rows of data_verts, in frame order}."""
    return _load_index(path)[0]


def _load_index(path: str | os.PathLike) -> tuple[dict[tuple[str, str], np.ndarray], dict[tuple[str, str], list]]:
    """:func:`load_index_map`, and each sequence's gaps: (a, b) for each jump in its frame numbers from a to
    b > a + 1 (frames missing inside it)."""
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise DatasetError(f"'{path}' holds {type(data).__name__}, not {{subject: {{sentence: {{frame: row}}}}}}",
                           f"use VOCASET's subj_seq_to_idx.pkl (see {_README})")
    out: dict[tuple[str, str], np.ndarray] = {}
    gaps: dict[tuple[str, str], list] = {}
    for subject, sentences in data.items():
        if not isinstance(sentences, dict):
            raise DatasetError(f"'{path}': entry '{subject}' is {type(sentences).__name__}, not a dict of sentences",
                               f"use VOCASET's subj_seq_to_idx.pkl (see {_README})")
        for sentence, frames in sentences.items():
            if not isinstance(frames, dict) or not frames:
                raise DatasetError(f"'{path}': {subject}/{sentence} is not a non-empty dict of frame -> row",
                                   f"use VOCASET's subj_seq_to_idx.pkl (see {_README})")
            keys = sorted(frames, key=_frame_key)
            bad = next((k for k in keys if not is_whole_number(frames[k])), None)
            if bad is not None:
                raise DatasetError(f"'{path}': {subject}/{sentence} maps frame {bad!r} to {frames[bad]!r}, not a row "
                                   "number of data_verts.npy", f"use VOCASET's subj_seq_to_idx.pkl (see {_README})")
            out[(str(subject), str(sentence))] = np.asarray([frames[k] for k in keys], dtype=np.int64)
            numbers = [_frame_key(k) for k in keys]
            gaps[(str(subject), str(sentence))] = [(a, b) for a, b in zip(numbers, numbers[1:]) if b - a > 1]
    return out, gaps


def load_raw_audio(path: str | os.PathLike) -> dict[tuple[str, str], tuple[np.ndarray, int]]:
    """raw_audio_fixed.pkl -> {(subject, sentence): (int16 samples, sample_rate)}."""
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise DatasetError(f"'{path}' holds {type(data).__name__}, not {{subject: {{sentence: {{'audio', "
                           "'sample_rate'}}}}", f"use VOCASET's raw_audio_fixed.pkl (see {_README})")
    out = {}
    for subject, sentences in data.items():
        if not isinstance(sentences, dict):
            raise DatasetError(f"'{path}': entry '{subject}' is {type(sentences).__name__}, not a dict of sentences",
                               f"use VOCASET's raw_audio_fixed.pkl (see {_README})")
        for sentence, entry in sentences.items():
            if not isinstance(entry, dict) or "audio" not in entry or "sample_rate" not in entry:
                raise DatasetError(f"'{path}': {subject}/{sentence} is not a dict with 'audio' and 'sample_rate'",
                                   f"use VOCASET's raw_audio_fixed.pkl (see {_README})")
            rate = entry["sample_rate"]
            if not (is_whole_number(rate) and rate > 0):
                raise DatasetError(f"'{path}': {subject}/{sentence} has 'sample_rate' {rate!r}, not a positive whole "
                                   "number of Hz", f"use VOCASET's raw_audio_fixed.pkl (22000 Hz; see {_README})")
            out[(str(subject), str(sentence))] = (entry["audio"], int(rate))
    return out


def _to_int16(audio, what: str) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim == 1 and audio.size == 0:
        raise DatasetError(f"{what}: audio is empty (0 samples)", "re-download the audio")
    if audio.ndim != 1:
        raise DatasetError(f"{what}: audio has shape {audio.shape}, not (samples,)", "re-download the audio")
    if audio.dtype == np.int16:
        return audio
    if audio.dtype.kind == "i" and audio.min() >= -32768 and audio.max() <= 32767:
        # int16 samples in a wider type (a list of ints pickled as int64): read as 32-bit PCM they were all
        # but silent (a peak of 2^-16)
        return audio.astype(np.int16)
    from ..audio import to_mono_float
    from ..errors import InputError

    try:
        mono = to_mono_float(audio, what)
    except InputError as exc:
        raise DatasetError(exc.problem, "re-download the audio") from exc
    if not np.isfinite(mono).all():
        raise DatasetError(f"{what}: audio has non-finite samples", "re-download the audio")
    peak = float(np.abs(mono).max())
    if peak > 2.0:  # would be clipped into a square wave
        raise DatasetError(f"{what}: float audio reaches {peak:g}, far outside [-1, 1]: integer samples stored as "
                           "floats?", "store int16 samples, or floats scaled to [-1, 1]")
    return np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)


def decimate_rows(rows: np.ndarray, step: int) -> np.ndarray:
    """The one place where captured frames are dropped: every ``step``-th frame, starting with the first."""
    return rows[::step]


def _check_rows(index: dict[tuple[str, str], np.ndarray], n_rows: int, path: Path) -> None:
    bad = [(k, int(r.min()), int(r.max())) for k, r in index.items() if r.min() < 0 or r.max() >= n_rows]
    if bad:
        shown = "; ".join(f"{s}_{t} uses rows {lo}..{hi}" for (s, t), lo, hi in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DatasetError(f"subj_seq_to_idx.pkl points past data_verts.npy ({n_rows} rows) in {len(bad)} "
                           f"sequences: {shown}{more}",
                           f"the index and '{path}' come from different downloads; get both again (see {_README})")


def _raw_path(src: Path, name: str) -> Path:
    path = src / name
    if not path.is_file():
        raise DatasetError(f"VOCASET file '{name}' not found in '{src}'",
                           f"download it from https://voca.is.tue.mpg.de (see {_README}) and put it in --src")
    return path


def preprocess_vocaset(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                       spec: Union[str, DatasetSpec] = "vocaset", show_progress: bool = True) -> PreprocessReport:
    """Convert the raw VOCASET release in ``src`` to the processed layout in ``dst``.

    Raises a DatasetError before writing anything when a raw file is missing or inconsistent
    (truncated data_verts.npy, rows past its end, templates of another mesh), and after the run
    when some sequences could not be written (non-finite vertices), naming each.
    """
    spec = get_spec(spec)
    src = Path(src)
    check_src_dst(src, dst, "VOCASET", f"pass the folder with {RAW_FILES[0]} etc. as --src")
    paths = {name: _raw_path(src, name) for name in RAW_FILES}
    n_vertices = spec.n_vertices
    header = check_data_verts(paths["data_verts.npy"], n_vertices)
    index, gaps = _load_index(paths["subj_seq_to_idx.pkl"])
    _check_rows(index, header.shape[0], paths["data_verts.npy"])
    audio = load_raw_audio(paths["raw_audio_fixed.pkl"])
    templates = load_pickle(paths["templates.pkl"])
    if not isinstance(templates, dict):
        raise DatasetError(f"'{paths['templates.pkl']}' is not a dict of subject -> template",
                           f"use VOCASET's templates.pkl (see {_README})")
    subjects = sorted({s for s, _ in index})
    absent = [s for s in subjects if s not in templates]
    if absent:
        raise DatasetError(f"templates.pkl has no template for {len(absent)} subjects: {', '.join(absent)}",
                           f"use the templates.pkl of the same VOCASET release (see {_README})")
    table = {}
    for s in subjects:
        try:
            table[s] = np.asarray(templates[s], dtype=np.float64)
            if table[s].ndim == 1:  # a flat (3V,) template
                table[s] = table[s].reshape(-1, 3)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"'{paths['templates.pkl']}': the template of {s} is {type(templates[s]).__name__}, not "
                               f"a ({n_vertices}, 3) array of numbers ({exc})",
                               f"use VOCASET's templates.pkl (see {_README})") from None
    bad = [f"{s} {v.shape}" for s, v in table.items() if v.shape != (n_vertices, 3)]
    if bad:
        raise DatasetError(f"templates.pkl holds templates that are not ({n_vertices}, 3): {', '.join(bad[:3])}",
                           f"use VOCASET's templates.pkl (see {_README})")
    keys = sorted(index)
    missing = [f"{s}_{t} (no audio in raw_audio_fixed.pkl)" for s, t in keys if (s, t) not in audio]
    require_usable(spec.name, len(keys), len(keys) - len(missing), f"'{paths['subj_seq_to_idx.pkl']}'", missing,
                   f"use subj_seq_to_idx.pkl and raw_audio_fixed.pkl of one VOCASET release (see {_README})")

    check_templates(table, f"'{paths['templates.pkl']}'", f"use VOCASET's templates.pkl (see {_README})")  # before the output folder
    dst = prepare_dst(dst, spec.name, n_vertices)
    report = PreprocessReport(spec.name, dst)
    start = time.perf_counter()
    write_templates(dst, table, overwrite)
    copy_spec_files(spec, src, dst)
    step, fps = spec.frame_step, spec.fps
    report.missing.extend(missing)
    for subject, sentence in progress(keys, len(keys), "vocaset", show_progress):
        name = f"{subject}_{sentence}"
        if (subject, sentence) not in audio:
            continue
        if not overwrite and sequence_done(dst, name):
            report.skipped.append(name)
            continue
        rows = decimate_rows(index[(subject, sentence)], step)
        try:
            samples = _to_int16(audio[(subject, sentence)][0], f"sequence {name}")
            rate = audio[(subject, sentence)][1]
            # a fresh read-only mapping per sequence, dropped afterwards: pages of finished
            # sequences leave this process, whatever the file's size
            verts = np.load(paths["data_verts.npy"], mmap_mode="r")
            frames = np.array(verts[rows], dtype=np.float32)
            del verts
            check_finite(frames, f"sequence {name}")
            n_frames, n_samples, note = align_lengths(len(frames), fps, len(samples), rate)
            if note:
                report.trimmed.append(f"{name} ({note})")
            if gaps[(subject, sentence)]:  # kept, as BIWI's are, but every frame after a gap runs ahead of the speech
                report.gaps.append(gap_note(name, gaps[(subject, sentence)]))
            write_sequence(dst, name, frames[:n_frames], samples[:n_samples], rate)
        except DatasetError as exc:
            report.failed[name] = exc.problem
            continue
        report.written.append(name)
        report.frames_in += len(index[(subject, sentence)])
        report.frames_out += n_frames
    report.seconds = time.perf_counter() - start
    return report.finish()
