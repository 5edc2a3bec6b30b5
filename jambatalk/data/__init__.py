"""Datasets: the spec registry, raw-data preprocessing and one generic loader.

    >>> from jambatalk.data import get_spec, SequenceDataset, collate
    >>> spec = get_spec("vocaset")
    >>> ds = SequenceDataset(spec, "data/vocaset", "train")

The loader (torch) and the preprocessors load on first use, so importing this package is light.
"""

from .specs import (
    DatasetSpec,
    IndexSource,
    MeshSource,
    SplitDef,
    get_spec,
    list_specs,
    load_flame_masks,
    load_indices,
    load_pickle,
    load_region_txt,
    register_spec,
    split_name,
)

__all__ = [
    "DatasetSpec",
    "IndexSource",
    "MeshSource",
    "SplitDef",
    "get_spec",
    "list_specs",
    "register_spec",
    "load_flame_masks",
    "load_region_txt",
    "load_indices",
    "load_pickle",
    "split_name",
    "SequenceDataset",
    "collate",
    "load_labels",
    "preprocess_vocaset",
    "preprocess_biwi",
    "PreprocessReport",
]

_LAZY = {
    "SequenceDataset": "jambatalk.data.dataset",
    "collate": "jambatalk.data.dataset",
    "load_labels": "jambatalk.data.dataset",
    "preprocess_vocaset": "jambatalk.data.vocaset",
    "preprocess_biwi": "jambatalk.data.biwi",
    "PreprocessReport": "jambatalk.data.preprocess",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jambatalk.data' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(__all__))
