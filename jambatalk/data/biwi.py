"""BIWI 3D Audiovisual Corpus: reading the raw release and converting it to the processed layout.

Raw layout (see BIWI/README.md)::

    SRC/faces/<S>/<eNN>/frame_XXX.vl        tracked frames at 25 fps (or the shipped per-sequence
                                             archive SRC/faces/<S>/<eNN>.tar; NN without the 'e' works too)
    SRC/rigid_scans/<S>.obj                  the subject's neutral scan (the template), same topology
    SRC/audio/<S>_<eNN>.wav                  44.1 kHz speech (also looked up as audio/<S>/<eNN>.wav,
                                             wav/<S>_<eNN>.wav, or the audio track of videos/<S>_<eNN>.flv)

A .vl file is a 4-byte little-endian unsigned vertex count n followed by n x 3 float32 (x, y, z).

Normalisation (applied to every frame and to the templates, each mesh on its own):

1. rotate by pi about the x axis: (x, y, z) -> (x, -y, -z);
2. centre on the mesh's own vertex mean;
3. divide by the square root of the mesh's total mixed-Voronoi surface area.

The mixed-Voronoi area of a vertex (Meyer et al. 2003) sums, over its triangles, the Voronoi
region inside the triangle (non-obtuse triangles) or a fixed share of the triangle's area (half
for the obtuse corner, a quarter for the others). Within every triangle the three shares add up
to the triangle's area, so the total equals the mesh's surface area; :func:`mixed_voronoi_areas`
computes the per-vertex areas and :func:`surface_area` their sum, both in float64.
"""

from __future__ import annotations

import os
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import DatasetError, InputError
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
from .specs import DatasetSpec, get_spec

__all__ = [
    "ROTATION",
    "read_vl",
    "write_vl",
    "read_obj",
    "mixed_voronoi_areas",
    "surface_area",
    "normalize_mesh",
    "RawSequence",
    "find_sequences",
    "preprocess_biwi",
]

_README = "BIWI/README.md"

#: Rotation by pi about x, exactly (cos pi = -1, sin pi = 0).
ROTATION = np.diag([1.0, -1.0, -1.0])

#: Where the audio of subject S, sentence eNN is looked for (first match wins); {n} is NN.
AUDIO_PATTERNS = ("audio/{s}_{e}", "audio/{s}/{e}", "audio/{s}_{n}", "audio/{s}/{n}",
                  "wav/{s}_{e}", "videos/{s}_{e}", "videos/{s}/{e}", "videos/{s}_{n}")
AUDIO_SUFFIXES = (".wav", ".flac", ".flv", ".mp4", ".avi")


def read_vl(data: Union[str, os.PathLike, bytes], what: str | None = None) -> np.ndarray:
    """Read one .vl frame (path or bytes) -> float32 (n, 3); a short or overlong file is a DatasetError."""
    if isinstance(data, (str, os.PathLike)):
        what = what or f"'{data}'"
        data = Path(data).read_bytes()
    what = what or ".vl data"
    if len(data) < 4:
        raise DatasetError(f"{what} is truncated: {len(data)} bytes, shorter than the 4-byte header",
                           "extract the archive again")
    n = int(np.frombuffer(data[:4], dtype="<u4")[0])
    expected = 4 + 12 * n
    if len(data) != expected:
        raise DatasetError(f"{what} has {len(data)} bytes but its header announces {n} vertices ({expected} bytes)",
                           "the file is truncated or not a .vl frame; extract the archive again")
    return np.frombuffer(data, dtype="<f4", count=3 * n, offset=4).reshape(n, 3).copy()


def write_vl(path: str | os.PathLike, vertices: np.ndarray) -> None:
    """Write a .vl frame (used by tests and tools that make BIWI-format data)."""
    v = np.ascontiguousarray(vertices, dtype="<f4").reshape(-1, 3)
    Path(path).write_bytes(np.asarray([len(v)], dtype="<u4").tobytes() + v.tobytes())


def read_obj(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read the vertices (float64, file order) and faces (int64 triangles, polygons fanned) of an .obj.

    Texture and normal indices are ignored; vertex order is exactly the file's ``v`` lines, which
    is what the .vl frames index.
    """
    path = Path(path)
    verts, faces = [], []
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("v "):
                    verts.append(line.split()[1:4])
                elif line.startswith("f "):
                    idx = [int(tok.split("/")[0]) for tok in line.split()[1:]]
                    idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                    faces.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
        vertices = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
        face_arr = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    except (OSError, ValueError, IndexError) as exc:
        raise DatasetError(f"'{path}' is not a readable .obj mesh ({type(exc).__name__}: {exc})",
                           f"use the rigid-scan template of the BIWI corpus (see {_README})") from exc
    if len(vertices) == 0 or len(face_arr) == 0:
        raise DatasetError(f"'{path}' has {len(vertices)} vertices and {len(face_arr)} faces",
                           f"use the rigid-scan template of the BIWI corpus (see {_README})")
    if face_arr.min() < 0 or face_arr.max() >= len(vertices):
        raise DatasetError(f"'{path}' has faces indexing past its {len(vertices)} vertices", "repair the mesh")
    return vertices, face_arr


def mixed_voronoi_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Mixed-Voronoi area of every vertex (float64 (V,)), after Meyer et al. 2003.

    For a triangle with no obtuse angle, corner i receives (|e_j|^2 cot a_j + |e_k|^2 cot a_k) / 8,
    where e_j, e_k are the edges from i and a_j, a_k the angles opposite them. For an obtuse
    triangle, the obtuse corner receives half the triangle's area and the others a quarter each.
    Degenerate (zero-area) triangles contribute nothing.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    p = [v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]]
    double_area = np.linalg.norm(np.cross(p[1] - p[0], p[2] - p[0]), axis=1)
    area = 0.5 * double_area
    ok = double_area > 0
    safe = np.where(ok, double_area, 1.0)
    cot, sq = [], []
    for i in range(3):
        a, b = p[(i + 1) % 3] - p[i], p[(i + 2) % 3] - p[i]
        cot.append(np.einsum("ij,ij->i", a, b) / safe)  # cot of the angle at corner i
        edge = p[(i + 2) % 3] - p[(i + 1) % 3]
        sq.append(np.einsum("ij,ij->i", edge, edge))  # squared length of the edge opposite corner i
    shares = np.empty((len(f), 3))
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        # edge i->j is opposite corner k, edge i->k is opposite corner j
        shares[:, i] = (sq[k] * cot[k] + sq[j] * cot[j]) / 8.0
    obtuse = np.stack([c < 0 for c in cot], axis=1)
    any_obtuse = obtuse.any(axis=1)
    shares[any_obtuse] = np.where(obtuse[any_obtuse], 0.5, 0.25) * area[any_obtuse, None]
    shares[~ok] = 0.0
    return np.bincount(f.ravel(), weights=shares.ravel(), minlength=len(v))


def surface_area(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Total mixed-Voronoi area of a mesh (equal to the sum of its triangle areas)."""
    return float(mixed_voronoi_areas(vertices, faces).sum())


def normalize_mesh(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """BIWI normalisation of one mesh (V, 3): rotate by pi about x, centre, divide by sqrt(area). float64."""
    v = np.asarray(vertices, dtype=np.float64) @ ROTATION
    v = v - v.mean(axis=0)
    area = surface_area(v, faces)
    if not area > 0:
        raise DatasetError(f"a mesh has total surface area {area}", "the frame is degenerate or damaged")
    return v / np.sqrt(area)


# --------------------------------------------------------------------------- raw layout


def _number(name: str) -> int | None:
    digits = re.findall(r"\d+", name)
    return int(digits[-1]) if digits else None


@dataclass
class RawSequence:
    """One raw BIWI sequence: where its frames, template and audio are."""

    subject: str
    sentence: str  # "eNN"
    frames: list  # Paths of .vl files, or member names in ``archive``
    archive: Path | None
    template: Path
    audio: Path | None

    @property
    def name(self) -> str:
        return f"{self.subject}_{self.sentence}"

    def frame_gaps(self) -> list[tuple[int, int]]:
        """(a, b) for each jump in the frame numbers from a to b > a + 1: frames missing inside the sequence."""
        numbers = [_number(Path(str(f)).stem) for f in self.frames]
        if any(n is None for n in numbers):
            return []
        return [(a, b) for a, b in zip(numbers, numbers[1:]) if b - a > 1]

    def read_frames(self, n_vertices: int | None = None) -> np.ndarray:
        """All frames, float32 (T, n, 3), in frame-number order; a frame with another vertex count than
        ``n_vertices`` (default: the first frame's) is a DatasetError naming it."""
        if self.archive is None:
            out, names = [read_vl(p) for p in self.frames], [f"'{p}'" for p in self.frames]
        else:
            out, names = [], [f"'{self.archive}:{member}'" for member in self.frames]
            with tarfile.open(self.archive) as tar:
                for member, what in zip(self.frames, names):
                    fobj = tar.extractfile(member)
                    out.append(read_vl(fobj.read() if fobj else b"", what))
        expected = n_vertices if n_vertices is not None else len(out[0]) if out else 0
        for frame, what in zip(out, names):
            if len(frame) != expected:
                raise DatasetError(f"frame {what} has {len(frame)} vertices, not {expected}",
                                   "the frame is damaged or from another mesh; extract the archive again")
        return np.stack(out)


def _sentence_id(name: str) -> str | None:
    match = re.fullmatch(r"e?(\d+)", name)
    return f"e{int(match.group(1)):02d}" if match else None


def _find_audio(src: Path, subject: str, sentence: str) -> Path | None:
    n = sentence[1:]
    for pattern in AUDIO_PATTERNS:
        stem = pattern.format(s=subject, e=sentence, n=n)
        for suffix in AUDIO_SUFFIXES:
            if (src / f"{stem}{suffix}").is_file():
                return src / f"{stem}{suffix}"
    return None


def _by_number(name) -> tuple[int, str]:
    return _number(Path(str(name)).stem) or 0, str(name)


def _frames_in(entry: Path) -> tuple[list, Path | None]:
    by_number = _by_number
    if entry.is_dir():
        return sorted(entry.glob("*.vl"), key=lambda p: by_number(p.name)), None
    try:
        with tarfile.open(entry) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile() and m.name.endswith(".vl")]
    except (OSError, tarfile.TarError) as exc:
        raise DatasetError(f"'{entry}' is not a readable tar archive ({exc})", "download the archive again") from exc
    return sorted(names, key=by_number), entry


def find_sequences(src: str | os.PathLike, subjects: tuple[str, ...] | None = None) -> list[RawSequence]:
    """Every sequence of the raw BIWI folder ``src`` (subjects in ``faces/`` unless given), sorted."""
    src = Path(src)
    faces_dir = src / "faces"
    if not faces_dir.is_dir():
        raise DatasetError(f"BIWI folder '{src}' has no faces/ folder",
                           f"extract the corpus' faces archives into {faces_dir} (see {_README})")
    subjects = subjects or tuple(sorted(p.name for p in faces_dir.iterdir() if p.is_dir()))
    if not subjects:
        raise DatasetError(f"'{faces_dir}' holds no subject folders (F1 ... M6)", f"see {_README}")
    out = []
    for subject in subjects:
        template = src / "rigid_scans" / f"{subject}.obj"
        entries, rank = {}, {}
        for entry in sorted((faces_dir / subject).iterdir()) if (faces_dir / subject).is_dir() else []:
            stem = entry.name[:-4] if entry.name.endswith(".tar") else entry.name
            sentence = _sentence_id(stem) if (entry.is_dir() or entry.name.endswith(".tar")) else None
            # the emotional take's own name (eNN) before a bare number (NN, in the corpus the neutral reading
            # of the same sentence), and an extracted folder before its archive
            order = (stem.startswith("e"), entry.is_dir())
            if sentence and (sentence not in entries or order > rank[sentence]):
                entries[sentence], rank[sentence] = entry, order
        for sentence, entry in sorted(entries.items()):
            frames, archive = _frames_in(entry)
            out.append(RawSequence(subject, sentence, frames, archive, template, _find_audio(src, subject, sentence)))
    return out


def _read_audio(path: Path) -> tuple[np.ndarray, int]:
    """A recording as int16 mono at its own rate (wav/flac), or at 16 kHz when decoded by ffmpeg."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="int16", always_2d=True)
        if data.shape[1] > 1:
            data = np.round(data.mean(axis=1)).astype(np.int16)[:, None]
        floats = sf.info(str(path)).subtype in ("FLOAT", "DOUBLE")
    except Exception:  # noqa: BLE001 - not a soundfile format: decode with the library's loader
        from ..audio import SAMPLE_RATE, load_audio

        try:
            mono = load_audio(path)
        except InputError as exc:
            raise DatasetError(exc.problem, exc.fix) from exc
        return np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16), SAMPLE_RATE
    # NaN or inf in a float recording would come out of the int16 conversion as silence
    if floats and not np.isfinite(sf.read(str(path), dtype="float64")[0]).all():
        raise DatasetError(f"'{path}' has non-finite samples (NaN or inf)", "re-export or re-download the recording")
    return data[:, 0], int(rate)


def preprocess_biwi(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                    spec: Union[str, DatasetSpec] = "biwi", show_progress: bool = True) -> PreprocessReport:
    """Convert the raw BIWI corpus in ``src`` to the processed layout in ``dst`` (normalised meshes).

    Raises a DatasetError before writing anything when templates are missing or of another mesh,
    and after the run when some sequences could not be written (truncated .vl frames, non-finite
    vertices), naming each. Sequences without audio are skipped with a warning.
    """
    spec = get_spec(spec)
    src = Path(src)
    check_src_dst(src, dst, "BIWI", f"pass the corpus folder as --src (see {_README})")
    sequences = find_sequences(src)
    n_vertices = spec.n_vertices
    subjects = sorted({s.subject for s in sequences})
    meshes = {}
    for subject in subjects:
        path = src / "rigid_scans" / f"{subject}.obj"
        if not path.is_file():
            raise DatasetError(f"the template of subject {subject} ('{path}') is missing",
                               f"extract the corpus' rigid_scans archive into {src / 'rigid_scans'} (see {_README})")
        vertices, faces = read_obj(path)
        if len(vertices) != n_vertices:
            raise DatasetError(f"template '{path}' has {len(vertices)} vertices, not {n_vertices}",
                               f"use the rigid-scan templates of the BIWI corpus (see {_README})")
        meshes[subject] = (vertices, faces)
    missing = [f"{s.name} (no audio found)" for s in sequences if s.audio is None]
    missing += [f"{s.name} (no .vl frames)" for s in sequences if not s.frames]
    usable = sum(1 for s in sequences if s.audio is not None and s.frames)
    require_usable(spec.name, len(sequences), usable, f"'{src / 'faces'}'", missing,
                   f"put the eNN frame folders (or .tar archives) in faces/<S>/ and the recordings in audio/ "
                   f"(see {_README})")
    # the raw scans first: normalising a NaN scan failed on its area, naming neither the file nor the subject
    check_templates({s: v for s, (v, _) in meshes.items()}, f"'{src / 'rigid_scans'}'",
                    "the scan is damaged; download rigid_scans again")
    templates = {s: normalize_mesh(v, f) for s, (v, f) in meshes.items()}
    check_templates(templates, f"'{src / 'rigid_scans'}'", "the scan is damaged; download rigid_scans again")
    dst = prepare_dst(dst, spec.name, n_vertices)
    report = PreprocessReport(spec.name, dst)
    start = time.perf_counter()
    write_templates(dst, templates, overwrite)
    copy_spec_files(spec, src, dst)
    report.missing.extend(missing)
    for seq in progress(sequences, len(sequences), "biwi", show_progress):
        if seq.audio is None or not seq.frames:
            continue
        if not overwrite and sequence_done(dst, seq.name):
            report.skipped.append(seq.name)
            continue
        try:
            raw = seq.read_frames(n_vertices)
            check_finite(raw, f"sequence {seq.name}")
            faces = meshes[seq.subject][1]
            frames = np.stack([normalize_mesh(v, faces) for v in raw]).astype(np.float32)
            samples, rate = _read_audio(seq.audio)
            n_frames, n_samples, note = align_lengths(len(frames), spec.fps, len(samples), rate)
            gaps = seq.frame_gaps()
            if gaps:  # kept, as tracking can drop frames, but the frames after a gap run ahead of the speech
                report.gaps.append(gap_note(seq.name, gaps))
            if note:
                report.trimmed.append(f"{seq.name} ({note})")
            write_sequence(dst, seq.name, frames[:n_frames], samples[:n_samples], rate)
        except DatasetError as exc:
            report.failed[seq.name] = exc.problem
            continue
        report.written.append(seq.name)
        report.frames_in += len(raw)
        report.frames_out += n_frames
    report.seconds = time.perf_counter() - start
    return report.finish()

