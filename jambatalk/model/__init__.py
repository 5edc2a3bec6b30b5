"""Model components: the JambaTalk network and its building blocks."""

from .jambatalk import JambaTalk, ModelOutput

__all__ = ["JambaTalk", "ModelOutput"]
