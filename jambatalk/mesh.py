"""Mesh and template I/O.

Templates follow FLAME's convention: metres, y up, the face looking along +z. Meshes are read
with ``process=False`` so that vertex order, which every mask and model output depends on, is
kept exactly as in the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .errors import InputError
from .pickles import REFUSED_FIX, RefusedPickle, load_data

__all__ = ["load_mesh", "load_template", "load_templates_pkl", "save_mesh", "check_vertices", "same_triangles"]

MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf")

#: an OBJ face line with a vertex index 0 (OBJ counts from 1; trimesh reads 0 as the last vertex, a degenerate face)
_OBJ_INDEX_ZERO = re.compile(rb"(?m)^f[ \t][^\n]*?(?<=[ \t])0(?=[/ \t\r\n]|$)")


def check_vertices(vertices, name: str = "template", n_vertices: int | None = None) -> np.ndarray:
    """Validate a (V, 3) array (a flat (3V,) one is reshaped) and return it as float32."""
    if hasattr(vertices, "detach"):
        vertices = vertices.detach().cpu()
        vertices = vertices.float() if vertices.is_floating_point() else vertices  # numpy has no bfloat16
    try:
        v = np.asarray(vertices)
    except (TypeError, ValueError):  # rows of different lengths
        raise InputError(f"{name} is not a (V, 3) array: its rows differ in length or are not all numbers",
                         "pass a (V, 3) float array") from None
    if v.dtype.kind not in "iuf":
        raise InputError(f"{name} has dtype {v.dtype}; expected numbers", "pass a (V, 3) float array")
    if v.ndim == 1 and v.size % 3 == 0:
        v = v.reshape(-1, 3)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] == 0:
        raise InputError(f"{name} has shape {tuple(v.shape)}; expected (V, 3) vertex positions", "pass a (V, 3) array")
    if not np.isfinite(v).all():
        raise InputError(f"{name} has non-finite vertex coordinates (NaN or inf)", "repair or re-export the mesh")
    if n_vertices is not None and v.shape[0] != n_vertices:
        raise InputError(
            f"{name} has {v.shape[0]} vertices but the model animates meshes of {n_vertices} vertices",
            "use a template with the model's topology, or a model trained for this mesh",
        )
    return np.ascontiguousarray(v, dtype=np.float32)


def load_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a mesh file; returns float32 vertices (V, 3) and int64 faces (F, 3)."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise InputError(f"mesh file '{path}' does not exist", "check the path")
    if path.suffix.lower() == ".obj" and _OBJ_INDEX_ZERO.search(path.read_bytes()):
        raise InputError(f"mesh '{path}' has a face with vertex index 0, but OBJ counts vertices from 1",
                         "re-export it, or add 1 to every face index if a writer counted from 0")
    try:
        mesh = trimesh.load(str(path), process=False, force="mesh", maintain_order=True)
        vertices = np.asarray(mesh.vertices)
        faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
        if vertices.size == 0:  # vertices without faces (as save_mesh writes them for a bare array): a point cloud
            cloud = trimesh.load(str(path), process=False, maintain_order=True)
            vertices = np.asarray(getattr(cloud, "vertices", np.zeros((0, 3))))
            faces = np.zeros((0, 3), np.int64)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"'{path}' could not be read as a mesh ({type(exc).__name__}: {exc})",
                         "pass a .ply or .obj triangle mesh") from exc
    if vertices.size == 0:
        raise InputError(f"'{path}' is not a mesh (no vertices found)", "pass a .ply or .obj triangle mesh")
    vertices = check_vertices(vertices, f"mesh '{path}'")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InputError(f"mesh '{path}' has faces indexing past its {len(vertices)} vertices", "repair the mesh")
    return vertices, faces


def _read_pickle_dict(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"templates file '{path}' does not exist", "check the path")
    try:
        with open(path, "rb") as f:
            data = load_data(f)
    except RefusedPickle as exc:
        raise InputError(f"'{path}' was not read: {exc}", REFUSED_FIX) from None
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"'{path}' is not a readable templates pickle ({exc})", "pass a templates.pkl") from exc
    if not isinstance(data, dict) or not data:
        raise InputError(f"'{path}' holds {type(data).__name__}, not a dict of subject -> (V, 3) template",
                         "pass a templates.pkl")
    return data


def load_templates_pkl(path: str | os.PathLike, subject: str | None = None) -> dict[str, np.ndarray]:
    """Read a templates.pkl (dict subject -> (V, 3)), as written by VOCASET, BIWI and jambatalk.

    With ``subject``, only that entry is checked and returned (``{subject: template}``), so that a bad
    entry elsewhere in the file neither blocks it nor is blamed in its place.
    """
    path = Path(path)
    data = {str(k): v for k, v in _read_pickle_dict(path).items()}
    if subject is not None:
        if subject not in data:
            raise InputError(f"subject '{subject}' is not in '{path}'", f"choose one of: {', '.join(sorted(data))}")
        data = {subject: data[subject]}
    return {k: check_vertices(v, f"template '{k}' in '{path}'") for k, v in data.items()}


def _pickle_contents(path: Path) -> tuple[str, str]:
    """(problem, fix) saying what a .pkl passed without ``:SUBJECT`` holds, for the error that asks for one."""
    data = _read_pickle_dict(path)
    shapes = [np.shape(v) if isinstance(v, np.ndarray) else None for v in data.values()]
    names = ", ".join(sorted(map(str, data))[:8]) + (", ..." if len(data) > 8 else "")
    if all(s is not None and len(s) == 1 for s in shapes) and all(
            np.asarray(v).dtype.kind in "iu" for v in data.values()):
        return (f"'{path}' holds vertex index lists ({names}), as a mask or region file does, not templates",
                "pass a mesh, a .npy, or a templates.pkl as 'templates.pkl:SUBJECT'")
    return (f"'{path}' holds {len(data)} entries ({names}), one template per subject",
            f"pick one as '{path}:SUBJECT'")


def load_template(template, n_vertices: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a template from a mesh file, a .npy file, ``templates.pkl:SUBJECT`` or an array.

    Returns float32 vertices (V, 3) and faces (F, 3) when the source has them, else None.
    """
    if isinstance(template, (str, os.PathLike)):
        text = str(template)
        if ".pkl:" in text:
            pkl, subject = text.rsplit(":", 1)
            table = load_templates_pkl(pkl, subject)
            return check_vertices(table[subject], f"template '{text}'", n_vertices), None
        path = Path(text)
        if path.is_dir():
            raise InputError(f"template '{path}' is a folder, not a mesh or array file", "pass a .ply/.obj/.npy file")
        if not path.is_file():
            raise InputError(f"template file '{path}' does not exist", "check the path")
        if path.suffix.lower() == ".npy":
            try:
                arr = np.load(path, allow_pickle=False)
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"'{path}' is not a readable .npy array ({exc})", "pass a (V, 3) .npy file") from exc
            return check_vertices(arr, f"template '{path}'", n_vertices), None
        if path.suffix.lower() == ".pkl":
            raise InputError(*_pickle_contents(path))
        vertices, faces = load_mesh(path)
        return check_vertices(vertices, f"template '{path}'", n_vertices), faces if faces.size else None
    return check_vertices(template, "template", n_vertices), None


def extent(vertices) -> float:
    """A mesh's size: its bounding box's diagonal (the head's size that fit and offset checks compare against)."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    return float(np.linalg.norm(v.max(axis=0) - v.min(axis=0)))


def _triangles(faces) -> np.ndarray:
    """A face list as a set: each triangle's corners sorted, the rows sorted (winding and order ignored)."""
    return np.unique(np.sort(np.asarray(faces, dtype=np.int64).reshape(-1, 3), axis=1), axis=0)


def same_triangles(faces, other_faces) -> bool:
    """Whether two face lists hold the same triangles, in any order and winding."""
    return np.array_equal(_triangles(faces), _triangles(other_faces))


def _edges(faces) -> np.ndarray:
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    return np.unique(np.sort(f[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2), axis=1), axis=0)


def _shared_edges(faces, model_faces) -> float:
    """The share of ``faces``' edges that are edges of ``model_faces``."""
    a, b = _edges(faces), _edges(model_faces)
    key = max(int(a.max(initial=0)), int(b.max(initial=0))) + 1
    return float(np.isin(a[:, 0] * key + a[:, 1], b[:, 0] * key + b[:, 1]).mean()) if len(a) else 0.0


#: the share of a template's edges that must be the model's where its triangles differ: quads split along their
#: other diagonals keep two thirds (the quads' own edges), a mesh of the same vertices in another order next to none
SAME_ORDER_EDGES = 0.5

#: how far, as a share of the head's extent, a template's vertices may lie (median, centroids aligned) from the
#: model's own template: other identities of one dataset lie within 3.5% (BIWI's 14 subjects), a shuffled vertex
#: order 31% apart
TEMPLATE_DRIFT = 0.15


#: how many times as far from its neighbours (median over the six nearest in the model's template, the size taken
#: out) a template's vertex may lie: the 13 other subjects of BIWI reach 2.9 against the first; a vertex of another
#: order 4 to 75 (two vertices swapped, twenty lip vertices reversed, the lips shuffled)
NEIGHBOUR_STRETCH = 4.0

#: how many times larger or smaller than the model's own template a template may be: heads of one dataset differ
#: by a few percent, a mesh in other units by 100 or 1000 times
TEMPLATE_SCALE = 1.5


def check_template_fits(vertices, faces, model_vertices, model_faces, what: str = "template") -> None:
    """An InputError when a template has the model's vertex count but cannot be animated by it: its faces differ
    from the model's (another vertex order or topology), it is of another size (millimetres against metres, or
    more than TEMPLATE_SCALE times larger or smaller), its vertices lie far from the model template's, or some
    of them lie far from their neighbours there (a part of the mesh in another order). Each gave a shredded or
    frozen face without a word."""
    ref = np.asarray(model_vertices, dtype=np.float64)
    v = np.asarray(vertices, dtype=np.float64)
    if not np.any(ref) or ref.shape != v.shape:
        return
    fix_order = "use a mesh with the model's topology and vertex order (e.g. one from the dataset it was trained on)"
    if faces is not None and model_faces is not None and len(model_faces) and len(faces):
        if not same_triangles(faces, model_faces):
            shared = _shared_edges(faces, model_faces)
            if shared < SAME_ORDER_EDGES:  # a polygon mesh split into other triangles keeps its polygons' edges
                raise InputError(f"{what} has the model's {len(v)} vertices but other faces ({shared:.0%} of its "
                                 "edges are the model's): its vertices are in another order, or it is another mesh",
                                 fix_order)
    size, ref_size = extent(v), max(extent(ref), 1e-12)
    if size == 0:  # nothing to scale: the size check below would divide by it
        raise InputError(f"{what} has all its {len(v)} vertices at one point ({', '.join(f'{x:g}' for x in v[0])})",
                         "pass the face's neutral mesh (an all-zero array holds none)")
    ratio = size / ref_size
    if not 1 / TEMPLATE_SCALE <= ratio <= TEMPLATE_SCALE:
        unit = next((f" (in {name}, where the model's is in metres?)" for name, k in (("millimetres", 1000.0),
                     ("centimetres", 100.0)) if 0.5 * k <= ratio <= 2 * k), "")
        raise InputError(f"{what} is {ratio:.3g} times the size of the model's own ({size:.3g} against "
                         f"{ref_size:.3g} corner to corner){unit}; the model's offsets would move it "
                         f"{'too little' if ratio > 1 else 'too much'}",
                         f"scale the mesh to the model's units and size (by {1 / ratio:.3g}; metres for FLAME, "
                         "VOCASET and the built-in model)")
    # the shape, the size taken out: a grown head of the right order is refused for its size alone
    shape = (v - v.mean(axis=0)) / ratio
    drift = float(np.median(np.linalg.norm(shape - (ref - ref.mean(axis=0)), axis=1))) / ref_size
    if drift > TEMPLATE_DRIFT:
        raise InputError(f"{what}'s vertices lie far from where the model's template has them (median {drift:.0%} "
                         "of the head's size apart, where faces of other people lie within 4%): its vertices are in "
                         "another order, or it is turned", f"{fix_order}, facing the way the model's template does")
    stretch = _neighbour_stretch(shape, ref)
    apart = np.flatnonzero(stretch > NEIGHBOUR_STRETCH)
    if len(apart):
        raise InputError(f"{what} has {len(apart)} vertices far from their neighbours on the model's mesh (up to "
                         f"{stretch.max():.3g} times as far as in the model's template, where the faces of other "
                         f"people stay within 3; vertices {', '.join(str(int(i)) for i in apart[:5])}"
                         f"{', ...' if len(apart) > 5 else ''}): some of its vertices are in another order, or the "
                         "mesh is damaged", fix_order)


def _neighbour_stretch(vertices: np.ndarray, ref: np.ndarray, k: int = 6) -> np.ndarray:
    """Per vertex: the median, over its ``k`` nearest neighbours in the model's template ``ref``, of how many times
    as far from them it lies in ``vertices`` (same size and order); near 1 for another face of the same mesh."""
    from scipy.spatial import cKDTree

    k = min(k, len(ref) - 1)
    if k < 1:
        return np.zeros(len(ref))
    _, near = cKDTree(ref).query(ref, k + 1)
    near = near[:, 1:]
    before = np.linalg.norm(ref[:, None] - ref[near], axis=2)
    after = np.linalg.norm(vertices[:, None] - vertices[near], axis=2)
    return np.median(after / np.maximum(before, 1e-12 * max(extent(ref), 1e-12)), axis=1)


def load_template_for(template, model) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`load_template` for a :class:`~jambatalk.model.JambaTalk`: its vertex count, and the fit to its own mesh
    (:func:`check_template_fits`) checked."""
    vertices, faces = load_template(template, n_vertices=model.cfg.n_vertices)
    what = f"template '{template}'" if isinstance(template, (str, os.PathLike)) else "template"
    check_template_fits(vertices, faces, model.template.detach().cpu().numpy(), model.faces.cpu().numpy(), what)
    return vertices, faces


def save_mesh(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray | None) -> None:
    """Write one mesh as .obj or .ply, keeping every vertex in order (unreferenced ones included)."""
    path = Path(path)
    v = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
    f = np.zeros((0, 3), dtype=np.int64) if faces is None else np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    suffix = path.suffix.lower()
    if suffix == ".obj":
        lines = ["v %.7g %.7g %.7g" % tuple(p) for p in v] + ["f %d %d %d" % tuple(t) for t in f + 1]
        path.write_text("\n".join(lines) + "\n")
    elif suffix == ".ply":
        header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(v)}\n"
                  "property float x\nproperty float y\nproperty float z\n"
                  f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
        tri = np.zeros(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
        tri["n"], tri["i"] = 3, f
        with open(path, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(v.astype("<f4").tobytes())
            fh.write(tri.tobytes())
    else:
        raise InputError(f"cannot write a mesh as '{suffix}' ({path})", "use .obj or .ply")
