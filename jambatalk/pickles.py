"""Reading data pickles (templates, region masks, VOCASET's raw tables) without running code from them.

A pickle names the callables that rebuild its objects, and :func:`pickle.load` calls whatever it names:
a ``templates.pkl`` downloaded from anywhere could run a shell command. The data files of this field hold
dicts, lists, numbers, strings and NumPy arrays only, so :func:`load_data` rebuilds those and refuses any
other callable, naming it, before it runs.
"""

from __future__ import annotations

import pickle
import warnings
from typing import BinaryIO

__all__ = ["load_data", "RefusedPickle", "REFUSED_FIX"]

#: the fix a refused pickle's error gives
REFUSED_FIX = ("use the file from the dataset's own source; if you trust this one, save its data again as plain "
               "dicts, lists and arrays (or as .npy / .npz)")

#: (module, name) pairs a data pickle may use: containers, scalars and NumPy arrays, dtypes and scalars under
#: NumPy 1's and 2's module names, and the byte-string helper of protocol-2 pickles written by Python 3
_ALLOWED = frozenset(
    [("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str",
                               "bytes", "bytearray", "bool", "slice", "range")]
    + [("__builtin__", n) for n in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex",
                                    "str", "unicode", "long", "bool", "slice")]
    + [("collections", "OrderedDict"), ("collections", "defaultdict"), ("_codecs", "encode"), ("numpy", "ndarray"),
       ("numpy", "dtype")]
    + [(f"{core}.multiarray", n) for core in ("numpy.core", "numpy._core") for n in ("_reconstruct", "scalar")]
    + [(f"{core}.numeric", "_frombuffer") for core in ("numpy.core", "numpy._core")]
)


class RefusedPickle(pickle.UnpicklingError):
    """A pickle asked for a callable that data files do not need."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise RefusedPickle(f"it asks to call {module}.{name}, which a data file has no need of, and jambatalk "
                                "does not run code from pickles")
        return super().find_class(module, name)


def load_data(file: BinaryIO, *, encoding: str = "latin1"):
    """:func:`pickle.load` for data files: containers, numbers, strings and NumPy arrays only.

    ``encoding="latin1"`` reads the NumPy arrays of pickles written by Python 2. Raises
    :class:`RefusedPickle` (a :class:`pickle.UnpicklingError`) when the pickle names any other callable.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pickles written under NumPy 1 name numpy.core
        return _DataUnpickler(file, encoding=encoding).load()
