"""BIWI preprocessing on a tiny raw corpus in the exact source formats (.vl frames, rigid-scan .obj)."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jambatalk.data import get_spec
from jambatalk.data.biwi import (
    mixed_voronoi_areas,
    preprocess_biwi,
    read_obj,
    read_vl,
    surface_area,
    write_vl,
)
from jambatalk.data.preprocess import PreprocessWarning
from jambatalk.errors import DatasetError

V = 23370  # 123 x 190 grid
ROWS, COLS = 123, 190
SR = 44100


def _grid_mesh(rng) -> tuple[np.ndarray, np.ndarray]:
    """A bumpy, irregular face-sized grid (some triangles obtuse) with BIWI's vertex count."""
    y, x = np.meshgrid(np.linspace(-0.1, 0.1, ROWS), np.linspace(-0.08, 0.08, COLS), indexing="ij")
    x = x + rng.uniform(-3e-4, 3e-4, x.shape)
    z = 0.02 * np.cos(6 * x) * np.cos(5 * y) + rng.normal(scale=5e-4, size=x.shape)
    verts = np.stack([x, y, z], axis=-1).reshape(-1, 3) * 1000.0  # BIWI units are millimetres
    i = np.arange(ROWS - 1)[:, None] * COLS + np.arange(COLS - 1)[None, :]
    i = i.ravel()
    faces = np.concatenate([np.stack([i, i + 1, i + COLS], 1), np.stack([i + 1, i + COLS + 1, i + COLS], 1)])
    return verts, faces


def _write_obj(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    lines = [f"v {a:.6f} {b:.6f} {c:.6f}" for a, b, c in verts]
    lines += ["vt 0.5 0.5"]
    lines += [f"f {a + 1}/1 {b + 1}/1 {c + 1}/1" for a, b, c in faces]
    path.write_text("# rigid scan\n" + "\n".join(lines) + "\n")


def _reference_normalise(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Independent: rotation matrix from cos/sin, centring, total triangle area from cross products."""
    t = np.pi
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    w = (rot @ np.asarray(v, np.float64).T).T
    w = w - w.mean(axis=0)
    tri = w[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    return w / np.sqrt(area)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    rng = np.random.default_rng(0)
    src = tmp_path_factory.mktemp("biwi_raw")
    base, faces = _grid_mesh(rng)
    (src / "rigid_scans").mkdir()
    seqs = {}
    for subject, sentence, n, kind in (("F2", "e01", 3, "dir"), ("M3", "e37", 4, "tar")):
        template = base + rng.normal(scale=0.5, size=base.shape)
        _write_obj(src / "rigid_scans" / f"{subject}.obj", template, faces)
        frames = [(template + rng.normal(scale=0.3, size=base.shape) + [0, 0, 800.0]).astype(np.float32)
                  for _ in range(n)]
        folder = src / "faces" / subject / (sentence if kind == "dir" else "tmp")
        folder.mkdir(parents=True)
        numbers = [2, 10, 100, 7][:n]  # numeric, not alphabetical, order: frame_2 < frame_7 < frame_10
        order = np.argsort(numbers)
        for k, num in enumerate(numbers):
            write_vl(folder / f"frame_{num}.vl", frames[k])
        if kind == "tar":
            with tarfile.open(src / "faces" / subject / f"{sentence[1:]}.tar", "w") as tar:
                for p in sorted(folder.iterdir()):
                    tar.add(p, arcname=f"{sentence}/{p.name}")
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()
        audio = rng.integers(-20000, 20000, size=int(round(n / 25 * SR))).astype(np.int16)
        if kind == "dir":
            (src / "audio").mkdir(exist_ok=True)
            sf.write(src / "audio" / f"{subject}_{sentence}.wav", audio, SR, subtype="PCM_16")
        else:
            (src / "audio" / subject).mkdir(parents=True)
            sf.write(src / "audio" / subject / f"{sentence}.wav", audio, SR, subtype="PCM_16")
        seqs[f"{subject}_{sentence}"] = {"frames": [frames[k] for k in order], "audio": audio, "template": template}
    (src / "regions").mkdir()
    (src / "regions" / "lve.txt").write_text("1, 5, 9")
    (src / "regions" / "fdd.txt").write_text("2, 4")
    return {"src": src, "faces": faces, "seqs": seqs}


@pytest.fixture(scope="module")
def processed(raw, tmp_path_factory):
    dst = tmp_path_factory.mktemp("biwi_out") / "biwi"
    # the raw frames are numbered 2, 7, 10 (and 100): gaps, which the report names
    with pytest.warns(PreprocessWarning, match=r"2 sequences have frames missing inside them.*F2_e01 \(96 frames: "
                      r"numbers 3-9, 11-99\); M3_e37 \(95 frames: numbers 3-6, 8-9, 11-99\)"):
        report = preprocess_biwi(raw["src"], dst, show_progress=False)
    return dst, report


def test_normalisation_matches_an_independent_computation(raw, processed):
    dst, report = processed
    assert sorted(report.written) == ["F2_e01", "M3_e37"]
    obj_verts, faces = read_obj(raw["src"] / "rigid_scans" / "F2.obj")
    for name, seq in raw["seqs"].items():
        got = np.load(dst / "vertices_npy" / f"{name}.npy")
        assert got.dtype == np.float32 and got.shape == (len(seq["frames"]), 3 * V)
        want = np.stack([_reference_normalise(f, raw["faces"]) for f in seq["frames"]]).reshape(len(got), -1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        wav, rate = sf.read(dst / "wav" / f"{name}.wav", dtype="int16")
        assert rate == SR
        np.testing.assert_array_equal(wav, seq["audio"])
    with open(dst / "templates.pkl", "rb") as f:
        templates = pickle.load(f)
    assert sorted(templates) == ["F2", "M3"]
    for subject in ("F2", "M3"):
        verts, _ = read_obj(raw["src"] / "rigid_scans" / f"{subject}.obj")
        np.testing.assert_allclose(templates[subject], _reference_normalise(verts, raw["faces"]), rtol=1e-5,
                                   atol=1e-7)
    # each normalised mesh is centred with unit surface area
    t = templates["F2"].astype(np.float64)
    np.testing.assert_allclose(t.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(surface_area(t, faces), 1.0, rtol=1e-5)


def test_region_files_are_carried_into_the_processed_folder(processed):
    dst, _ = processed
    spec = get_spec("biwi")
    assert spec.lip_indices(dst).tolist() == [1, 5, 9]
    assert spec.upper_indices(dst).tolist() == [2, 4]


def test_restart_skips_finished_sequences(raw, processed):
    dst, _ = processed
    before = (dst / "vertices_npy" / "F2_e01.npy").stat().st_mtime_ns
    report = preprocess_biwi(raw["src"], dst, show_progress=False)
    assert report.written == [] and sorted(report.skipped) == ["F2_e01", "M3_e37"]
    assert (dst / "vertices_npy" / "F2_e01.npy").stat().st_mtime_ns == before


def test_a_file_as_source_is_named_as_a_file(raw, tmp_path):
    some_file = next(p for p in raw["src"].rglob("*") if p.is_file())
    with pytest.raises(DatasetError, match="is a file, not the corpus' folder"):
        preprocess_biwi(some_file, tmp_path / "out", show_progress=False)


def test_the_source_folder_as_dst_is_refused(raw):
    with pytest.raises(DatasetError, match="is the BIWI source folder itself"):
        preprocess_biwi(raw["src"], raw["src"], overwrite=True, show_progress=False)


def test_mixed_voronoi_areas_on_known_triangles():
    faces = np.array([[0, 1, 2]])
    equi = np.array([[0, 0, 0], [1, 0, 0], [0.5, np.sqrt(3) / 2, 0]])
    np.testing.assert_allclose(mixed_voronoi_areas(equi, faces), np.full(3, np.sqrt(3) / 4 / 3))
    obtuse = np.array([[0, 0, 0], [4, 0, 0], [1, 0.5, 0]])  # obtuse at vertex 2
    area = 1.0
    np.testing.assert_allclose(mixed_voronoi_areas(obtuse, faces), [area / 4, area / 4, area / 2])
    # an acute triangle: Voronoi cell of vertex 0 = quad (p0, mid01, circumcentre, mid02), by shoelace
    p = np.array([[0.0, 0.0], [3.0, 0.0], [1.2, 2.0]])
    ax, ay = p[1]
    bx, by = p[2]
    d = 2 * (ax * by - ay * bx)
    cc = np.array([(by * (ax**2 + ay**2) - ay * (bx**2 + by**2)) / d, (ax * (bx**2 + by**2) - bx * (ax**2 + ay**2)) / d])
    quad = np.array([p[0], (p[0] + p[1]) / 2, cc, (p[0] + p[2]) / 2])
    shoelace = 0.5 * abs(np.dot(quad[:, 0], np.roll(quad[:, 1], -1)) - np.dot(quad[:, 1], np.roll(quad[:, 0], -1)))
    got = mixed_voronoi_areas(np.c_[p, np.zeros(3)], faces)
    np.testing.assert_allclose(got[0], shoelace)
    np.testing.assert_allclose(got.sum(), 3.0)  # base 3, height 2
    # a degenerate triangle adds nothing
    np.testing.assert_allclose(mixed_voronoi_areas(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0.0]]), faces), 0)


def test_total_mixed_voronoi_area_equals_triangle_area(rng):
    verts, faces = _grid_mesh(rng)
    tri = verts[faces]
    total = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    areas = mixed_voronoi_areas(verts, faces)
    assert (areas > 0).all()
    np.testing.assert_allclose(areas.sum(), total, rtol=1e-10)


def test_vl_reader_checks_the_header(tmp_path):
    v = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_vl(tmp_path / "a.vl", v)
    raw_bytes = (tmp_path / "a.vl").read_bytes()
    assert raw_bytes[:4] == (4).to_bytes(4, "little") and len(raw_bytes) == 4 + 48
    np.testing.assert_array_equal(read_vl(tmp_path / "a.vl"), v)
    (tmp_path / "b.vl").write_bytes(raw_bytes[:-5])
    with pytest.raises(DatasetError, match="announces 4 vertices"):
        read_vl(tmp_path / "b.vl")


def test_truncated_frame_fails_its_sequence_without_partial_files(raw, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(raw["src"], src)
    frame = src / "faces" / "F2" / "e01" / "frame_10.vl"
    frame.write_bytes(frame.read_bytes()[:1000])
    dst = tmp_path / "out"
    with pytest.raises(DatasetError) as err, pytest.warns(PreprocessWarning, match="frames missing inside"):
        preprocess_biwi(src, dst, show_progress=False)
    assert "F2_e01" in str(err.value) and "frame_10.vl" in str(err.value)
    files = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert "vertices_npy/M3_e37.npy" in files
    assert not any("F2_e01" in f for f in files) and not any(".part" in f for f in files)


def test_missing_template_is_refused_before_writing(raw, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(raw["src"], src)
    (src / "rigid_scans" / "M3.obj").unlink()
    dst = tmp_path / "out"
    with pytest.raises(DatasetError) as err:
        preprocess_biwi(src, dst, show_progress=False)
    assert "M3" in str(err.value) and "rigid_scans" in str(err.value) and "BIWI/README.md" in err.value.fix
    assert not dst.exists()


def test_missing_faces_folder_is_explained(tmp_path):
    with pytest.raises(DatasetError, match="no faces/ folder"):
        preprocess_biwi(tmp_path, tmp_path / "out", show_progress=False)


@pytest.mark.parametrize("others", [["01.tar"], ["01"], ["01", "01.tar"]])
def test_the_emotional_take_is_found_before_a_bare_numbered_one(tmp_path, others):
    """faces/F2/01.tar (or an extracted 01/) beside e01.tar was written as F2_e01 with e01's audio: both names mean
    sentence 1, and the bare number won. e01 is the take jambatalk uses; an extracted e01/ is read before its .tar."""
    from jambatalk.data.biwi import find_sequences

    subject = tmp_path / "faces" / "F2"
    subject.mkdir(parents=True)
    frame = np.zeros((3, 3), np.float32)
    for name in ["e01.tar", *others]:
        folder = subject / (name[:-4] + "_tmp" if name.endswith(".tar") else name)
        folder.mkdir()
        write_vl(folder / "frame_1.vl", frame)
        if name.endswith(".tar"):
            with tarfile.open(subject / name, "w") as tar:
                tar.add(folder / "frame_1.vl", arcname="frame_1.vl")
            (folder / "frame_1.vl").unlink()
            folder.rmdir()
    (seq,) = find_sequences(tmp_path)
    assert seq.sentence == "e01" and seq.archive == subject / "e01.tar"
    (subject / "e01").mkdir()
    write_vl(subject / "e01" / "frame_1.vl", frame)
    (seq,) = find_sequences(tmp_path)
    assert seq.archive is None and seq.frames == [subject / "e01" / "frame_1.vl"]
