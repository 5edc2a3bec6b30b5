"""Dataset specs: every fact about a dataset (frame rate, vertex count, splits, masks, topology,
camera) as named, typed data in one registry.

Code elsewhere asks a spec for numbers and index arrays and never branches on a dataset's name.
Files a spec needs (masks, topology) are looked up in the folders the caller gives (the processed
root, the raw ``--src`` folder) or taken from an explicit path; a missing file raises a
:class:`~jambatalk.errors.DatasetError` naming the file and the README that says where to get it.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Optional, Union

import numpy as np

from ..errors import DatasetError
from ..pickles import REFUSED_FIX, RefusedPickle, load_data

__all__ = [
    "SplitDef",
    "IndexSource",
    "MeshSource",
    "DatasetSpec",
    "get_spec",
    "list_specs",
    "register_spec",
    "load_pickle",
    "load_flame_masks",
    "load_region_txt",
    "load_indices",
    "split_name",
    "Folders",
]

#: One folder, or several searched in order.
Folders = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], None]

INDEX_FORMATS = ("pkl", "json", "txt", "npy", "npz")
COMBINE_MODES = ("concat", "union")


def split_name(name: str) -> tuple[str, str]:
    """``"<subject>_<sentence>"`` -> (subject, sentence); the sentence is the part after the last ``_``."""
    subject, sep, sentence = name.rpartition("_")
    if not sep or not subject or not sentence:
        raise DatasetError(f"sequence name '{name}' is not of the form <subject>_<sentence>",
                           "name sequences like FaceTalk_170728_03272_TA_sentence01 or F2_e01")
    return subject, sentence


@dataclass(frozen=True)
class SplitDef:
    """A split as subjects x sentences; its sequences are ``<subject>_<sentence>`` in this order."""

    subjects: tuple[str, ...]
    sentences: tuple[str, ...]

    def names(self) -> list[str]:
        return [f"{s}_{t}" for s in self.subjects for t in self.sentences]


@dataclass(frozen=True)
class IndexSource:
    """Where a vertex index list (a region mask) comes from.

    Attributes:
        files: relative paths tried in each search folder, in order; the first that exists is read.
        format: ``"pkl"`` (a pickled dict of arrays, or a pickled list/array when ``keys`` is empty),
            ``"json"`` (the same as JSON), ``"txt"`` (integers separated by commas and/or whitespace), ``"npy"`` or ``"npz"``.
        keys: dict / npz entries to read; empty means the file holds the list itself.
        combine: ``"concat"`` keeps the entries exactly as given (order and duplicates), key after
            key; ``"union"`` returns the sorted unique union.
        provider: ``"module:function"`` returning an object with a ``regions`` dict, used when no
            file is found (the built-in procedural head).
    """

    files: tuple[str, ...] = ()
    format: str = "pkl"
    keys: tuple[str, ...] = ()
    combine: str = "concat"
    provider: Optional[str] = None

    def __post_init__(self):
        if self.format not in INDEX_FORMATS:
            raise DatasetError(f"index source format {self.format!r} is unknown", f"use one of {INDEX_FORMATS}")
        if self.combine not in COMBINE_MODES:
            raise DatasetError(f"index source combine mode {self.combine!r} is unknown", f"use one of {COMBINE_MODES}")
        if not self.files and not self.provider:
            raise DatasetError("an index source needs files or a provider", "give at least one of them")
        if self.provider and not self.keys:
            raise DatasetError("an index source with a provider needs the region keys", "give keys=(...)")


@dataclass(frozen=True)
class MeshSource:
    """Where a dataset's face list (topology) comes from: mesh files, else a provider with ``.faces``."""

    files: tuple[str, ...] = ()
    provider: Optional[str] = None


def _frozen_splits(splits) -> Mapping[str, SplitDef]:
    return MappingProxyType(dict(splits or {}))


@dataclass(frozen=True)
class DatasetSpec:
    """Everything jambatalk needs to know about one dataset.

    Attributes:
        name: registry name (``jambatalk preprocess NAME``, ``data.dataset`` in configs).
        fps: frame rate of the processed vertex sequences.
        vertex_count: vertices per mesh, or None when each dataset folder says (its ``faces_source``
            mesh file, else ``head_provider``'s head): see :meth:`vertex_count_at`.
        camera: render camera preset name (the renderer owns the presets).
        splits: split name -> :class:`SplitDef`. Empty when the splits live in ``split_file``.
        source_fps: frame rate of the raw recordings (the preprocessor's input), if it differs.
        lips / upper: lip and upper-face vertex masks (LVE, FDD, the lip reader).
        faces_source: the face list (rendering, BIWI normalisation).
        split_file: a JSON file in the processed root, {"train": [names], "val": [...], ...}.
        head_provider: ``"module:function"`` returning a head with ``.vertices`` (vertex count).
        preprocessor: ``"module:function(src, dst, overwrite=...)"`` for ``jambatalk preprocess``.
        readme: where the user reads how to obtain the files.
        train_split: the split whose subjects define the subject (style) index.
        metres: whether vertices are in metres (plots show millimetres); False for meshes in normalised units
            (the 23370-vertex BIWI meshes, divided by the square root of their surface area).
    """

    name: str
    fps: float
    vertex_count: Optional[int]
    camera: str
    splits: Mapping[str, SplitDef] = field(default_factory=dict, hash=False, compare=False)
    source_fps: Optional[float] = None
    lips: Optional[IndexSource] = None
    upper: Optional[IndexSource] = None
    faces_source: Optional[MeshSource] = None
    split_file: Optional[str] = None
    head_provider: Optional[str] = None
    preprocessor: Optional[str] = None
    readme: str = "README.md"
    description: str = ""
    train_split: str = "train"
    metres: bool = True

    def __post_init__(self):
        object.__setattr__(self, "splits", _frozen_splits(self.splits))
        if not self.name or not isinstance(self.name, str):
            raise DatasetError(f"dataset spec name {self.name!r} is not a non-empty string", "name the spec")
        if not (self.fps > 0):
            raise DatasetError(f"dataset '{self.name}': fps {self.fps} is not positive", "give the frame rate")
        if self.vertex_count is None and self.head_provider is None:
            raise DatasetError(f"dataset '{self.name}' has neither vertex_count nor head_provider",
                               "give the vertex count")
        if not self.splits and not self.split_file:
            raise DatasetError(f"dataset '{self.name}' defines no splits", "give splits or split_file")
        if self.source_fps is not None and self.source_fps < self.fps:
            raise DatasetError(f"dataset '{self.name}': source_fps {self.source_fps} < fps {self.fps}",
                               "the source frame rate must be at least the processed one")

    # ----------------------------------------------------------------- numbers
    @property
    def n_vertices(self) -> int:
        """Vertices per mesh: the fixed count, else that of the head provider's head (see
        :meth:`vertex_count_at` for a dataset folder's own mesh)."""
        if self.vertex_count is not None:
            return int(self.vertex_count)
        return int(np.asarray(_provide(self.head_provider).vertices).shape[0])

    def vertex_count_at(self, root: Folders = None) -> int:
        """Vertices per mesh of the dataset in ``root``: the fixed count; else that of the folder's own
        mesh (the ``faces_source`` file, e.g. the ``template.ply`` of a corpus made by ``jambatalk synth
        --template``); else the head provider's."""
        if self.vertex_count is not None:
            return int(self.vertex_count)
        found = _first_existing(self.faces_source.files, root) if self.faces_source else None
        if found is None:
            return self.n_vertices
        stat = found.stat()
        return _mesh_vertex_count(str(found.resolve()), stat.st_mtime_ns, stat.st_size)

    def _checked_count(self, root: Folders) -> Optional[int]:
        """The vertex count masks and templates are checked against: fixed, or the folder's when one is given."""
        if self.vertex_count is None and root is None:
            return None
        return self.vertex_count_at(root)

    @property
    def frame_step(self) -> int:
        """Raw frames per processed frame (2 for VOCASET's 60 -> 30 fps), 1 when no decimation."""
        if self.source_fps is None:
            return 1
        step = self.source_fps / self.fps
        if abs(step - round(step)) > 1e-9:
            raise DatasetError(f"dataset '{self.name}': source_fps {self.source_fps} is not a whole multiple of "
                               f"fps {self.fps}", "fix the spec")
        return int(round(step))

    # ----------------------------------------------------------------- splits
    def split_names(self, root: Folders = None) -> list[str]:
        """Names of the splits this dataset defines."""
        if self.splits:
            return list(self.splits)
        return list(self._split_table(root))

    def _split_table(self, root: Folders) -> dict[str, list[str]]:
        path = _find(self, self.split_file, (self.split_file,), root, "split file")
        try:
            table = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"split file '{path}' is not readable JSON ({exc})",
                               "regenerate it (e.g. jambatalk synth --dst ...)") from exc
        if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
            raise DatasetError(f"split file '{path}' is not a dict of split -> list of names",
                               "regenerate it (e.g. jambatalk synth --dst ...)")
        return {str(k): [str(n) for n in v] for k, v in table.items()}

    def expected_names(self, split: str, root: Folders = None) -> list[str]:
        """All sequence names of a split, in spec order, whether or not they exist on disk."""
        if self.splits:
            if split not in self.splits:
                raise DatasetError(f"dataset '{self.name}' has no split '{split}'",
                                   f"choose one of: {', '.join(self.splits)}")
            return self.splits[split].names()
        table = self._split_table(root)
        if split not in table:
            raise DatasetError(f"dataset '{self.name}' has no split '{split}' in its split file",
                               f"choose one of: {', '.join(table)}")
        return list(table[split])

    def train_subjects(self, root: Folders = None) -> tuple[str, ...]:
        """Subjects of the training split, in order: the subject (style) index table."""
        if self.splits:
            split = self.splits.get(self.train_split)
            return tuple(split.subjects) if split else ()
        names = self._split_table(root).get(self.train_split, [])
        return tuple(dict.fromkeys(split_name(n)[0] for n in names))

    def subject_index(self, subject: str, root: Folders = None) -> int:
        """Index of a subject among the training subjects, or -1."""
        subjects = self.train_subjects(root)
        return subjects.index(subject) if subject in subjects else -1

    def sequences(self, split: str, root: str | os.PathLike, *, strict: bool = False) -> list[str]:
        """Sequence names of ``split`` present in the processed ``root`` (both .npy and .wav), in spec order.

        Missing sequences are reported in a warning (or a DatasetError when ``strict``); a split with
        no sequence at all on disk is an error.
        """
        root = Path(root)
        if not (root / "vertices_npy").is_dir():
            raise DatasetError(f"'{root}' is not a processed {self.name} folder (no vertices_npy/ in it)",
                               f"create it with 'jambatalk preprocess {self.name} --src RAW --dst {root}' "
                               f"(see {self.readme})" if self.preprocessor else f"see {self.readme}")
        names = self.expected_names(split, root)
        present, missing = [], []
        for name in names:
            has_v = (root / "vertices_npy" / f"{name}.npy").is_file()
            has_a = (root / "wav" / f"{name}.wav").is_file()
            if has_v and has_a:
                present.append(name)
            else:
                what = "vertices and audio" if not (has_v or has_a) else ("audio" if has_v else "vertices")
                missing.append(f"{name} ({what})")
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            problem = (f"{len(missing)} of {len(names)} sequences of {self.name} split '{split}' are missing "
                       f"from '{root}': {shown}")
            if strict or not present:
                raise DatasetError(problem, f"run the preprocessing again (see {self.readme})")
            warnings.warn(problem, stacklevel=2)
        return present

    # ----------------------------------------------------------------- files
    def templates(self, root: Folders = None, *, path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
        """The subject templates (float32 (V, 3)) from ``templates.pkl``."""
        from ..mesh import load_templates_pkl

        found = _find(self, "templates", ("templates.pkl",), root, "templates file", path)
        table = load_templates_pkl(found)
        count = self._checked_count(root)
        if count is not None:
            bad = {k: v.shape[0] for k, v in table.items() if v.shape[0] != count}
            if bad:
                raise DatasetError(f"templates in '{found}' do not have {count} vertices "
                                   f"({dict(list(bad.items())[:3])})",
                                   f"use templates made for the {self.name} mesh (see {self.readme})")
        return table

    def lip_indices(self, root: Folders = None, *, path: str | os.PathLike | None = None) -> np.ndarray:
        """Lip vertex indices (int64), exactly as the source gives them (duplicates kept)."""
        return self._indices(self.lips, "lip mask", root, path)

    def upper_indices(self, root: Folders = None, *, path: str | os.PathLike | None = None) -> np.ndarray:
        """Upper-face vertex indices (int64) used by FDD."""
        return self._indices(self.upper, "upper-face mask", root, path)

    def _indices(self, source: Optional[IndexSource], what: str, root: Folders, path) -> np.ndarray:
        if source is None:
            raise DatasetError(f"dataset '{self.name}' defines no {what}",
                               f"metrics needing it cannot be computed on {self.name}; see {self.readme}")
        if path is None and source.provider and not _first_existing(source.files, root):
            regions = _provide(source.provider).regions
            missing = [k for k in source.keys if k not in regions]
            if missing:
                raise DatasetError(f"the head from {source.provider} has no region(s) {missing}",
                                   f"its regions are: {', '.join(regions)}")
            idx = _combine([np.asarray(regions[k]) for k in source.keys], source.combine, source.provider)
        else:
            found = _find(self, what, source.files, root, what, path)
            idx = load_indices(source, found)
        return _check_indices(idx, self._checked_count(root), f"{self.name} {what}")

    def faces(self, root: Folders = None, *, path: str | os.PathLike | None = None) -> np.ndarray:
        """Triangle list (F, 3) int64 of the dataset's mesh."""
        source = self.faces_source
        if source is None:
            raise DatasetError(f"dataset '{self.name}' has no face list (topology file)",
                               f"pass a mesh with faces explicitly; see {self.readme}")
        if path is None and source.provider and not _first_existing(source.files, root):
            faces = np.asarray(_provide(source.provider).faces, dtype=np.int64)
        else:
            from ..mesh import load_mesh

            found = _find(self, "topology", source.files, root, "mesh file", path)
            vertices, faces = load_mesh(found)
            if self.vertex_count is not None and len(vertices) != self.vertex_count:
                raise DatasetError(f"mesh '{found}' has {len(vertices)} vertices, not {self.vertex_count}",
                                   f"use the {self.name} topology file (see {self.readme})")
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
            raise DatasetError(f"the {self.name} face list has shape {faces.shape}", "use a triangle mesh")
        return faces


# --------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=16)
def _mesh_vertex_count(path: str, mtime_ns: int, size: int) -> int:
    """The vertex count of the mesh file at ``path``, read once per version of the file (masks, templates and the
    model config each ask for it)."""
    from ..mesh import load_mesh

    return int(load_mesh(path)[0].shape[0])


@functools.lru_cache(maxsize=8)
def _provide(provider: str):
    module_name, _, func = provider.partition(":")
    try:
        return getattr(importlib.import_module(module_name), func)()
    except (ImportError, AttributeError) as exc:
        raise DatasetError(f"cannot load '{provider}' ({type(exc).__name__}: {exc})",
                           "check that jambatalk is fully installed") from exc


def _folders(root: Folders) -> list[Path]:
    if root is None:
        return []
    if isinstance(root, (str, os.PathLike)):
        return [Path(root)]
    return [Path(r) for r in root]


def _first_existing(files: Sequence[str], root: Folders) -> Optional[Path]:
    for folder in _folders(root):
        for rel in files:
            if (folder / rel).is_file():
                return folder / rel
    return None


def _find(spec: DatasetSpec, what: str, files, root: Folders, label: str, path=None) -> Path:
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{label} '{path}' for dataset '{spec.name}' does not exist",
                               f"check the path (see {spec.readme})")
        return path
    found = _first_existing(files, root)
    if found is not None:
        return found
    folders = _folders(root)
    where = ", ".join(f"'{f}'" for f in folders) if folders else "no folder (none was given)"
    raise DatasetError(f"{label} for dataset '{spec.name}' not found: looked for {' or '.join(files)} in {where}",
                       f"get it as described in {spec.readme} and put it in the processed folder, "
                       "or pass its path explicitly")


def load_pickle(path: str | os.PathLike):
    """Read a pickle written by Python 2 or 3 (latin1 for the NumPy arrays of Python 2 pickles)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return load_data(f)
    except FileNotFoundError as exc:
        raise DatasetError(f"pickle '{path}' does not exist", "check the path") from exc
    except RefusedPickle as exc:
        raise DatasetError(f"'{path}' was not read: {exc}", REFUSED_FIX) from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise DatasetError(f"'{path}' is not a readable pickle ({type(exc).__name__}: {exc})",
                           "re-download the file; it may be truncated") from exc


def load_flame_masks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """FLAME_masks.pkl -> {region name: int64 vertex indices} (entries kept as given)."""
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise DatasetError(f"'{path}' holds {type(data).__name__}, not a dict of FLAME regions",
                           "use FLAME_masks.pkl (see vocaset/README.md)")
    return {str(k): np.asarray(v).astype(np.int64).ravel() for k, v in data.items()}


def load_region_txt(path: str | os.PathLike) -> np.ndarray:
    """A region file (``"2, 6, 21, ..."``: integers separated by commas and/or whitespace) -> int64 indices."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetError(f"region file '{path}' cannot be read ({exc})", "check the path") from exc
    tokens = [t for t in text.replace(",", " ").split() if t]
    try:
        values = [int(t) for t in tokens]
    except ValueError as exc:
        raise DatasetError(f"region file '{path}' holds something other than integers ({exc})",
                           "use the ', '-separated index file (e.g. BIWI regions/lve.txt)") from exc
    if not values:
        raise DatasetError(f"region file '{path}' is empty", "use the ', '-separated index file")
    return np.asarray(values, dtype=np.int64)


def _combine(parts: list[np.ndarray], mode: str, where) -> np.ndarray:
    arrays = []
    for p in parts:
        a = np.asarray(p)
        if a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and a.size and np.all(a == np.round(a))):
            raise DatasetError(f"vertex indices in '{where}' are {a.dtype}, not integers", "use an index list")
        arrays.append(a.astype(np.int64).ravel())
    out = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return np.unique(out) if mode == "union" else out


def load_indices(source: IndexSource, path: str | os.PathLike) -> np.ndarray:
    """Read the vertex indices that ``source`` describes from the file at ``path``."""
    path = Path(path)
    if source.format == "txt":
        return _combine([load_region_txt(path)], source.combine, path)
    if source.format == "pkl":
        data = load_pickle(path)
    elif source.format == "json":
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DatasetError(f"'{path}' is not readable JSON ({type(exc).__name__}: {exc})",
                               "write it again (jambatalk synth writes regions.json)") from None
    elif source.format == "npy":
        data = np.load(path, allow_pickle=False)
    else:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    if source.keys:
        if not isinstance(data, Mapping):
            raise DatasetError(f"'{path}' holds {type(data).__name__}, not a dict with {list(source.keys)}",
                               "use the mask file the dataset README names")
        missing = [k for k in source.keys if k not in data]
        if missing:
            raise DatasetError(f"'{path}' has no entry {missing}", f"its entries are: {', '.join(map(str, data))}")
        return _combine([data[k] for k in source.keys], source.combine, path)
    if isinstance(data, Mapping):
        raise DatasetError(f"'{path}' holds a dict, but a plain index list was expected",
                           "use the mask file the dataset README names")
    return _combine([np.asarray(data)], source.combine, path)


def _check_indices(idx: np.ndarray, n_vertices: Optional[int], what: str) -> np.ndarray:
    if idx.ndim != 1 or idx.size == 0:
        raise DatasetError(f"{what} is empty or not a list", "use the mask file the dataset README names")
    if idx.min() < 0:
        raise DatasetError(f"{what} has negative vertex indices", "use the mask file the dataset README names")
    if n_vertices is not None and idx.max() >= n_vertices:
        raise DatasetError(f"{what} has vertex index {int(idx.max())}, past the mesh's {n_vertices} vertices",
                           "this mask was made for another mesh; use the one for this dataset")
    return idx


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, DatasetSpec] = {}


def register_spec(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add a dataset spec to the registry (``replace=True`` to redefine an existing name)."""
    if not isinstance(spec, DatasetSpec):
        raise DatasetError(f"register_spec() got {type(spec).__name__}, not a DatasetSpec", "pass a DatasetSpec")
    if spec.name in _REGISTRY and not replace:
        raise DatasetError(f"a dataset spec named '{spec.name}' is already registered",
                           "choose another name or pass replace=True")
    _REGISTRY[spec.name] = spec
    return spec


def list_specs() -> list[str]:
    """Names of the registered dataset specs."""
    return sorted(_REGISTRY)


def get_spec(name: Union[str, DatasetSpec]) -> DatasetSpec:
    """The spec registered under ``name`` (a spec passes through unchanged)."""
    if isinstance(name, DatasetSpec):
        return name
    if name not in _REGISTRY:
        raise DatasetError(f"unknown dataset '{name}'", f"choose one of: {', '.join(list_specs())}")
    return _REGISTRY[name]


# --------------------------------------------------------------------------- built-in specs


def _sentences(prefix: str, first: int, last: int, width: int = 2) -> tuple[str, ...]:
    return tuple(f"{prefix}{i:0{width}d}" for i in range(first, last + 1))


VOCASET_TRAIN = ("FaceTalk_170728_03272_TA", "FaceTalk_170904_00128_TA", "FaceTalk_170725_00137_TA",
                 "FaceTalk_170915_00223_TA", "FaceTalk_170811_03274_TA", "FaceTalk_170913_03279_TA",
                 "FaceTalk_170904_03276_TA", "FaceTalk_170912_03278_TA")
VOCASET_VAL = ("FaceTalk_170811_03275_TA", "FaceTalk_170908_03277_TA")
VOCASET_TEST = ("FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA")

BIWI_SEEN = ("F2", "F3", "F4", "M3", "M4", "M5")
BIWI_UNSEEN = ("F1", "F5", "F6", "F7", "F8", "M1", "M2", "M6")

_BIWI_SPLITS = {
    "train": SplitDef(BIWI_SEEN, _sentences("e", 1, 32)),
    "val": SplitDef(BIWI_SEEN, _sentences("e", 33, 36)),
    "test": SplitDef(BIWI_SEEN, _sentences("e", 37, 40)),  # BIWI-Test-A, the published split
    "test_a": SplitDef(BIWI_SEEN, _sentences("e", 37, 40)),
    "test_b": SplitDef(BIWI_UNSEEN, _sentences("e", 37, 40)),
}

_SYNTH_HEAD = "jambatalk.synth.head:default_head"

register_spec(DatasetSpec(
    name="vocaset",
    fps=30.0,
    source_fps=60.0,
    vertex_count=5023,
    camera="flame",
    splits={
        "train": SplitDef(VOCASET_TRAIN, _sentences("sentence", 1, 40)),
        "val": SplitDef(VOCASET_VAL, _sentences("sentence", 21, 40)),
        "test": SplitDef(VOCASET_TEST, _sentences("sentence", 21, 40)),
    },
    lips=IndexSource(files=("FLAME_masks.pkl",), format="pkl", keys=("lips",), combine="concat"),
    upper=IndexSource(files=("FLAME_masks.pkl",), format="pkl", keys=("forehead", "eye_region"), combine="union"),
    faces_source=MeshSource(files=("FLAME_sample.ply",)),
    preprocessor="jambatalk.data.vocaset:preprocess_vocaset",
    readme="vocaset/README.md",
    description="VOCASET: 12 subjects x 40 sentences, FLAME topology, 60 fps captures used at 30 fps",
))

register_spec(DatasetSpec(
    name="biwi",
    fps=25.0,
    vertex_count=23370,
    camera="biwi",
    splits=_BIWI_SPLITS,
    lips=IndexSource(files=("regions/lve.txt", "lve.txt"), format="txt"),
    upper=IndexSource(files=("regions/fdd.txt", "fdd.txt"), format="txt"),
    faces_source=MeshSource(files=("BIWI.ply",)),
    preprocessor="jambatalk.data.biwi:preprocess_biwi",
    readme="BIWI/README.md",
    metres=False,
    description="BIWI 3D Audiovisual Corpus: 14 subjects x 40 emotional sentences, 25 fps, 23370 vertices",
))

register_spec(DatasetSpec(
    name="biwi3895",
    fps=25.0,
    vertex_count=3895,
    camera="fit",  # not normalised like the 23370-vertex BIWI meshes
    splits=_BIWI_SPLITS,
    lips=IndexSource(files=("BIWI_lip.pkl", "BIWI3895_lip.pkl"), format="pkl"),
    upper=None,
    faces_source=None,
    readme="BIWI/README.md",
    description="The reduced 3895-vertex BIWI mesh of the public JambaTalk code (no face list or upper mask)",
))

register_spec(DatasetSpec(
    name="synthetic",
    fps=30.0,
    vertex_count=None,
    head_provider=_SYNTH_HEAD,
    camera="fit",
    split_file="splits.json",
    # a corpus' own head (jambatalk synth --template writes any mesh there), else the procedural one
    lips=IndexSource(files=("regions.json",), format="json", keys=("lips",), provider=_SYNTH_HEAD),
    upper=IndexSource(files=("regions.json",), format="json", keys=("upper_face",), provider=_SYNTH_HEAD),
    faces_source=MeshSource(files=("template.ply",), provider=_SYNTH_HEAD),
    readme="README.md",
    description="The built-in procedural speech-to-face corpus (jambatalk synth)",
))
