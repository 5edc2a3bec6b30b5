"""jambatalk: speech-driven 3D facial animation with a hybrid Mamba / Transformer decoder.

    >>> import jambatalk
    >>> anim = jambatalk.animate("speech.wav")          # the built-in head and model
    >>> anim.save("talk.mp4")

Heavy modules (torch, transformers, the renderer) load on first use, so ``import jambatalk``
is fast and needs no optional extras.
"""

__version__ = "0.1.0"

__all__ = [
    "animate",
    "Animation",
    "load_model",
    "load_audio",
    "load_template",
    "Stream",
    "JambaTalkError",
    "__version__",
]

from .errors import JambaTalkError

_LAZY = {
    "animate": "jambatalk.api",
    "Animation": "jambatalk.api",
    "load_model": "jambatalk.api",
    "load_audio": "jambatalk.audio",
    "load_template": "jambatalk.mesh",
    "Stream": "jambatalk.stream",
}


#: modules of the public API reached as attributes of the package (imported on first use)
_SUBMODULES = ("metrics", "plots", "render", "data", "model", "evaluate", "train", "stream", "silence", "mesh", "audio")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:  # jambatalk.metrics without 'import jambatalk.metrics' first
        import importlib

        return importlib.import_module(f"jambatalk.{name}")
    raise AttributeError(f"module 'jambatalk' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(__all__))
