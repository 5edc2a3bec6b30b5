"""Shared machinery of the raw-dataset preprocessors and the ``jambatalk preprocess`` command.

Every preprocessor writes the same processed layout::

    DST/vertices_npy/<subject>_<sentence>.npy   (T, 3V) float32 at the spec's fps
    DST/wav/<subject>_<sentence>.wav            16-bit PCM, the recording's own sampling rate
    DST/templates.pkl                           {subject: (V, 3) float32}

Each file is written atomically, and a sequence's .npy and .wav appear together, so an interrupted or
failing sequence leaves no partial file; a sequence counts as finished when both its .npy and .wav
exist, and finished sequences are skipped on the next run unless ``overwrite`` is set.
"""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DatasetError
from ..fileio import atomic_path, check_output_folder
from .specs import DatasetSpec, get_spec, list_specs

__all__ = [
    "PreprocessReport",
    "PreprocessWarning",
    "prepare_dst",
    "require_usable",
    "sequence_done",
    "write_sequence",
    "write_templates",
    "gap_note",
    "align_lengths",
    "check_finite",
    "copy_spec_files",
    "progress",
    "cli_preprocess",
]


class PreprocessWarning(UserWarning):
    """Something in the raw data was corrected or skipped (counts and names in the message)."""


@dataclass
class PreprocessReport:
    """What one preprocessing run did."""

    dataset: str
    dst: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    trimmed: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # sequences written with frames missing inside them
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    frames_in: int = 0
    frames_out: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{self.dataset}: {len(self.written)} sequences written, {len(self.skipped)} already done "
                 f"(skipped) in '{self.dst}'"]
        if self.trimmed:
            parts.append(f"{len(self.trimmed)} trimmed to matching audio / vertex length")
        if self.gaps:
            parts.append(f"{len(self.gaps)} with frames missing inside them")
        if self.missing:
            parts.append(f"{len(self.missing)} without audio or vertices (not written)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return "; ".join(parts)

    def finish(self) -> PreprocessReport:
        """Warn about corrected inputs; raise a DatasetError naming every sequence that failed."""
        if self.trimmed:
            warnings.warn(_listing(f"{len(self.trimmed)} sequences had audio and vertex lengths that disagree by more "
                                   "than one frame and were trimmed to the shorter", self.trimmed),
                          PreprocessWarning, stacklevel=3)
        if self.gaps:
            warnings.warn(_listing(f"{len(self.gaps)} sequences have frames missing inside them and were written "
                                   "with the frames around each gap joined, so their motion after it runs ahead of the "
                                   "speech; leave them out of evaluations where lip sync matters", self.gaps),
                          PreprocessWarning, stacklevel=3)
        if self.missing:
            warnings.warn(_listing(f"{len(self.missing)} sequences were not written because a part is missing "
                                   "from the raw data", self.missing), PreprocessWarning, stacklevel=3)
        if not (self.written or self.skipped or self.failed):
            raise DatasetError(_listing(f"no {self.dataset} sequence was written: the raw data holds none that can be "
                                        "used", self.missing) if self.missing else
                               f"no {self.dataset} sequence was written: the raw data lists none",
                               "check --src: it should be the folder of the raw release (see the dataset's README)")
        if self.failed:
            items = [f"{k}: {v}" for k, v in self.failed.items()]
            raise DatasetError(_listing(f"{len(self.failed)} {self.dataset} sequences were not written "
                                        f"({len(self.written)} were)", items),
                               "repair or re-download those raw files and run the command again "
                               "(finished sequences are kept and skipped)")
        return self


def require_usable(dataset: str, n_listed: int, n_usable: int, where: str, missing: list[str], fix: str) -> None:
    """Before anything is written: a DatasetError when the raw data lists no sequence (``where`` says where they
    are listed), or when none of them has every part (``missing``: 'name (what)' for each part missing)."""
    if n_listed == 0:
        raise DatasetError(f"{where} lists no {dataset} sequence", fix)
    if n_usable == 0:
        raise DatasetError(_listing(f"none of the {n_listed} {dataset} sequences in {where} can be written, each "
                                    "lacks a part", missing), fix)


def _listing(head: str, items: list[str], limit: int = 8) -> str:
    shown = "; ".join(items[:limit])
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return f"{head}: {shown}{more}"


def prepare_dst(dst: str | os.PathLike, dataset: str | None = None, n_vertices: int | None = None) -> Path:
    """Create the processed layout's folders (and missing parents of ``dst``, as synth does). With ``dataset`` and
    ``n_vertices``, a ``dst`` holding another dataset (a synthetic corpus' meta.json, templates of another mesh)
    is a DatasetError: this run would mix its sequences and templates into that folder, with --overwrite too."""
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise DatasetError(f"output '{dst}' exists and is not a folder", "choose a folder for --dst")
    if dataset is not None and dst.is_dir():
        _check_same_dataset(dst, dataset, n_vertices)
    check_output_folder(dst)
    for sub in ("", "vertices_npy", "wav"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    return dst


def sequence_done(dst: Path, name: str) -> bool:
    """True when both outputs of a sequence exist (each was written atomically, so each is whole)."""
    return (dst / "vertices_npy" / f"{name}.npy").is_file() and (dst / "wav" / f"{name}.wav").is_file()


def check_finite(vertices: np.ndarray, what: str) -> None:
    """Raise a DatasetError naming the frames of ``vertices`` (T, ...) that hold NaN or inf."""
    finite = np.isfinite(vertices.reshape(len(vertices), -1)).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        shown = ", ".join(str(int(b)) for b in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise DatasetError(f"{what} has non-finite vertex coordinates (NaN or inf) in {len(bad)} of "
                           f"{len(vertices)} frames (frames {shown})",
                           "the raw file is damaged; re-download it")


def align_lengths(n_frames: int, fps: float, n_samples: int, sample_rate: int,
                  tolerance_frames: float = 1.0) -> tuple[int, int, Optional[str]]:
    """Trim audio or vertices so that both cover the same time.

    Lengths within ``tolerance_frames`` frame periods of each other are kept as they are. Beyond
    that, the longer one is cut to the duration of the shorter. Returns the new frame count, the
    new sample count and a note with the counts (None when nothing was trimmed).
    """
    t_vertices, t_audio = n_frames / fps, n_samples / sample_rate
    if abs(t_vertices - t_audio) <= tolerance_frames / fps + 1e-9:
        return n_frames, n_samples, None
    before = (f"audio {t_audio:.2f} s = {n_samples} samples, vertices {t_vertices:.2f} s = {n_frames} frames")
    if t_audio > t_vertices:
        new_samples = int(round(n_frames * sample_rate / fps))
        return n_frames, new_samples, f"{before}; audio cut to {new_samples} samples"
    new_frames = max(1, int(round(n_samples * fps / sample_rate)))
    return new_frames, n_samples, f"{before}; vertices cut to {new_frames} frames"


def write_sequence(dst: Path, name: str, vertices: np.ndarray, audio: np.ndarray, sample_rate: int) -> None:
    """Write one processed sequence: vertices (T, V, 3) -> (T, 3V) float32 .npy, int16 audio -> .wav."""
    import soundfile as sf

    vertices = np.asarray(vertices)
    if vertices.ndim == 3:
        vertices = vertices.reshape(len(vertices), -1)
    check_finite(vertices, f"sequence {name}")
    audio = np.asarray(audio)
    if audio.dtype != np.int16 or audio.ndim != 1 or audio.size == 0:
        raise DatasetError(f"sequence {name}: audio is {audio.dtype} {audio.shape}, not non-empty 1-D int16",
                           "convert the audio to 16-bit mono first")
    if not (isinstance(sample_rate, (int, np.integer)) and 0 < sample_rate < 2**31):
        raise DatasetError(f"sequence {name}: the sampling rate {sample_rate!r} is not a positive whole number of Hz",
                           "give the recording's sampling rate")
    # both files appear together or neither does: the .wav is moved into place first, the .npy last
    with atomic_path(dst / "vertices_npy" / f"{name}.npy") as tmp_npy, atomic_path(dst / "wav" / f"{name}.wav") as tmp_wav:
        np.save(tmp_npy, np.ascontiguousarray(vertices, dtype=np.float32))
        try:
            sf.write(str(tmp_wav), audio, int(sample_rate), subtype="PCM_16", format="WAV")
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise DatasetError(f"sequence {name}: its audio cannot be written as a WAV file ({exc})",
                               "check the recording and its sampling rate") from exc


def check_templates(templates: dict[str, np.ndarray], where: str = "",
                    fix: str = "the raw file is damaged; re-download it") -> dict[str, np.ndarray]:
    """The templates as float32 (V, 3), or a DatasetError naming one with non-finite vertices (and ``where`` it
    came from); preprocessors call it before making the output folder."""
    table = {str(k): np.ascontiguousarray(v, dtype=np.float32).reshape(-1, 3) for k, v in templates.items()}
    for k, v in table.items():
        if not np.isfinite(v).all():
            raise DatasetError(f"the template of {k}{f' in {where}' if where else ''} has non-finite vertex "
                               f"coordinates (NaN or inf) at {int((~np.isfinite(v).all(axis=1)).sum())} vertices", fix)
    return table


def _held_templates(path: Path, fix: str) -> dict[str, np.ndarray]:
    """The templates a processed folder's templates.pkl holds, {subject: (V, 3) float32}; a DatasetError naming
    the file when it cannot be read."""
    from ..pickles import load_data

    try:
        with open(path, "rb") as f:
            return {str(k): np.asarray(v, dtype=np.float32).reshape(-1, 3) for k, v in dict(load_data(f)).items()}
    except Exception as exc:  # noqa: BLE001 - damaged, foreign or refused
        raise DatasetError(f"'{path}' cannot be read ({type(exc).__name__}: {exc})", fix) from None


def _check_same_dataset(dst: Path, dataset: str, n_vertices: int | None) -> None:
    """A DatasetError when ``dst`` holds another dataset than ``dataset`` (meshes of ``n_vertices``)."""
    fix = f"pass a new folder as --dst, e.g. data/{dataset.lower()}"
    meta = dst / "meta.json"
    if meta.is_file():
        import json

        try:
            other = json.loads(meta.read_text()).get("dataset")
        except (OSError, ValueError, AttributeError):
            other = None
        if other and str(other).lower() != dataset.lower():
            raise DatasetError(f"--dst '{dst}' holds a {other} corpus (its meta.json says so): preprocessing "
                               f"{dataset} into it would mix its sequences and templates with that corpus'", fix)
    held = dst / "templates.pkl"
    if n_vertices is not None and held.is_file():
        counts = sorted({len(v) for v in _held_templates(held, fix).values()} - {n_vertices})
        if counts:
            raise DatasetError(f"--dst '{dst}' holds templates of another mesh ({counts[0]} vertices, where {dataset}'s "
                               f"have {n_vertices}): it is another dataset's folder", fix)


def write_templates(dst: Path, templates: dict[str, np.ndarray], overwrite: bool) -> bool:
    """Write ``templates.pkl`` ({subject: (V, 3) float32}); returns False when it existed and was kept.

    Without ``overwrite`` an existing file keeps its subjects and gains the new ones (a run that adds subjects
    to a folder); a subject whose template there differs from ``templates`` is a DatasetError: the folder was
    made from other data."""
    path = dst / "templates.pkl"
    table = check_templates(templates)
    if path.is_file() and not overwrite:
        fix = "pass --overwrite to write the folder again from this raw data, or a new --dst"
        held = _held_templates(path, fix)
        other = sorted(s for s in set(held) & set(table)
                       if held[s].shape != table[s].shape or not np.allclose(held[s], table[s], rtol=0, atol=1e-6))
        if other:
            raise DatasetError(f"'{path}' holds other templates than the raw data for subjects {other}: the folder "
                               "was made from other data", fix)
        if set(table) <= set(held):
            return False
        table = {**held, **{s: v for s, v in table.items() if s not in held}}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(table, f, protocol=4)
    return True


def gap_note(name: str, gaps: list) -> str:
    """A sequence's frames missing inside it, from the (a, b) jumps in its frame numbers, for the report."""
    return (f"{name} ({sum(b - a - 1 for a, b in gaps)} frames: numbers "
            f"{', '.join(f'{a + 1}-{b - 1}' for a, b in gaps[:3])}" + (", ..." if len(gaps) > 3 else "") + ")")


def check_src_dst(src: Path, dst, dataset: str, fix: str) -> None:
    """A DatasetError when the raw folder ``src`` is missing or not a folder (``fix`` says what to pass), or when
    the processed folder is the raw one: its files of the same names (templates.pkl, the masks) would be written
    over the raw data."""
    if not src.exists():
        raise DatasetError(f"{dataset} source folder '{src}' does not exist", fix)
    if not src.is_dir():
        raise DatasetError(f"{dataset} source '{src}' is a file, not the corpus' folder", fix)
    if Path(dst).expanduser().resolve() == src.expanduser().resolve():
        raise DatasetError(f"--dst '{dst}' is the {dataset} source folder itself: its templates.pkl and masks would "
                           "be written over the raw files", "pass a new folder as --dst, e.g. data/" + dataset.lower())


def copy_spec_files(spec: DatasetSpec, src: Path, dst: Path) -> list[str]:
    """Copy the mask and topology files the spec names from ``src`` into ``dst`` (relative paths kept).

    Returns the files the spec names that were found in neither folder.
    """
    absent = []
    groups = [s.files for s in (spec.lips, spec.upper, spec.faces_source) if s is not None and s.files]
    for group in groups:
        if any((dst / n).is_file() for n in group):
            continue
        found = next((n for n in group if (src / n).is_file()), None)
        if found is None:
            absent.append(group[0])
            continue
        (dst / found).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst / found) as tmp:
            shutil.copyfile(src / found, tmp)
    return sorted(set(absent))


def progress(iterable, total: int, desc: str, enabled: bool = True):
    """A tqdm progress bar on stderr (silent when disabled or when stderr is not a terminal)."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="seq", disable=None, file=sys.stderr)


def cli_preprocess(args) -> int:
    """``jambatalk preprocess DATASET --src DIR --dst DIR [--overwrite]``."""
    have = [n for n in list_specs() if get_spec(n).preprocessor]
    if args.dataset not in list_specs():
        raise DatasetError(f"unknown dataset '{args.dataset}'", f"choose one of: {', '.join(have)}")
    spec = get_spec(args.dataset)
    if not spec.preprocessor:
        raise DatasetError(f"dataset '{spec.name}' has no raw-data preprocessor",
                           f"choose one of: {', '.join(have)}")
    module_name, _, func = spec.preprocessor.partition(":")
    run = getattr(importlib.import_module(module_name), func)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PreprocessWarning)
        try:
            report = run(args.src, args.dst, overwrite=args.overwrite)
        finally:
            for w in caught:
                if issubclass(w.category, PreprocessWarning):
                    print(f"jambatalk preprocess: warning: {w.message}", file=sys.stderr)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    print(f"{report.summary()} ({time.perf_counter() - start:.1f} s)")
    return 0
