"""Errors raised by jambatalk.

Every error a user can cause is a :class:`JambaTalkError`: its message says what was wrong and
how to fix it. The command line prints it on one line and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "JambaTalkError",
    "InputError",
    "ConfigError",
    "CheckpointError",
    "DatasetError",
    "TrainingError",
    "MissingDependencyError",
    "NotAvailableError",
    "script_exit",
]


class JambaTalkError(Exception):
    """Base class for errors caused by the user's input or environment."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}; {fix}")


class InputError(JambaTalkError, ValueError):
    """Bad audio, mesh, array or path given by the user."""


class ConfigError(JambaTalkError, ValueError):
    """An invalid configuration value or file."""


class CheckpointError(JambaTalkError):
    """A model folder or checkpoint that cannot be used."""


class DatasetError(JambaTalkError):
    """A dataset folder or file that is missing, truncated or inconsistent."""


class TrainingError(JambaTalkError):
    """Training that cannot go on (a diverged loss)."""


class MissingDependencyError(JambaTalkError, ImportError):
    """An optional dependency needed for this feature is not installed."""


class NotAvailableError(JambaTalkError):
    """A capability that this version of jambatalk does not provide yet."""


def outside_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised by the function calling this name the first caller outside
    jambatalk and torch (a decorator such as ``torch.no_grad`` adds frames that fixed levels miscount)."""
    import os
    import sys

    skip = tuple(os.path.dirname(m.__file__) + os.sep for m in (sys.modules[__package__], sys.modules.get("torch"))
                 if m is not None and getattr(m, "__file__", None))
    frame, level = sys._getframe(1), 1  # the caller of warnings.warn: stacklevel 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(skip):
        frame, level = frame.f_back, level + 1
    return level


def require(module: str, extra: str | None = None, purpose: str | None = None):
    """Import an optional module at the point of use, or raise a clear error naming the fix."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f"{purpose} needs" if purpose else "this feature needs"
        fix = f"install it with: pip install 'jambatalk[{extra}]'" if extra else f"install it with: pip install {module}"
        raise MissingDependencyError(f"{what} the Python package '{module}', which is not installed ({exc})", fix) from exc


def script_exit(prog: str, main, argv=None) -> int:
    """``main(argv)`` for a script beside the package (tools/, render/): a :class:`JambaTalkError` is printed on one
    line as ``PROG: error: ...`` and gives exit status 2, as the ``jambatalk`` command line does."""
    import sys

    try:
        return main(argv)
    except JambaTalkError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
