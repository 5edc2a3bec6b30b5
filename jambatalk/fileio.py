"""Atomic file output: a file appears whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError, JambaTalkError

__all__ = ["atomic_path", "atomic_dir", "check_output_path", "check_output_folder", "check_not_input"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_in(folder: Path, problem: str, *, prefix: str, suffix: str, directory: bool = False):
    """tempfile.mkstemp (or mkdtemp) in ``folder``; where the folder takes no new files (permissions, a read-only
    or immutable folder, /proc), an InputError beginning with ``problem``."""
    make = tempfile.mkdtemp if directory else tempfile.mkstemp
    try:
        return make(prefix=prefix, suffix=suffix, dir=folder)
    except OSError as exc:
        raise InputError(f"{problem}: the folder '{folder}' takes no new files ({exc.strerror})",
                         "choose an output path in a folder you can write to") from exc


def _probe(folder: Path, problem: str) -> None:
    """Make a file in ``folder`` and remove it: an InputError beginning with ``problem`` where that fails."""
    fd, probe = _temp_in(folder, problem, prefix=".jambatalk.", suffix=".probe")
    os.close(fd)
    os.unlink(probe)


def check_output_path(path: str | os.PathLike, *, file: bool = False, folder: bool = False,
                      probe: bool = True, suffix: str | None = None) -> Path:
    """Refuse an output path that cannot be written, before the work that makes the output: its parent folder
    does not exist or takes no new files (a file is made there and removed to find out: permissions, a
    read-only or immutable folder); with ``file`` (the output is one file) the path is a folder or something
    other than a regular file (a device such as /dev/null would be replaced by the output); with ``folder``
    (the output is a folder) something other than a folder has its name; with ``suffix`` (such as ".json") the
    name ends otherwise (a mistyped option value, such as an input's name, would be written over).
    ``probe=False`` skips making the file, for callers that make their own there next (the atomic writers)."""
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise InputError(f"cannot write '{path}': the output is a {suffix} file and the name ends otherwise",
                         f"name it NAME{suffix}, e.g. {path.with_suffix(suffix).name}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(
            f"cannot write '{path}': the folder '{parent}' does not exist",
            f"create it first (mkdir -p {parent}) or choose another output path",
        )
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"cannot write the folder '{path}': a file of that name exists",
                         "choose a folder name that is not taken by a file")
    if file and path.is_dir():
        raise InputError(f"cannot write '{path}': it is a folder", "choose a file name that is not a folder")
    if file and path.exists() and not path.is_file():
        raise InputError(f"cannot write '{path}': it is not a regular file (a device, a pipe or a socket)",
                         "choose a file name in a folder you can write to")
    if probe:
        _probe(parent, f"cannot write '{path}'")
    return path


def check_output_folder(path: str | os.PathLike) -> Path:
    """Refuse an output folder that could not be made or written, before the work: a file in its place or on
    its way, or a nearest existing folder (the folder itself, when it exists) that takes no new files (a file
    is made there and removed to find out: permissions, a read-only or immutable folder, /proc)."""
    path = Path(path)
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise InputError(f"cannot make the folder '{path}': '{where}' is a file" if where != path
                         else f"cannot write into '{path}': it is a file, not a folder", "choose another folder")
    _probe(where, f"cannot write into '{path}'")
    return path


def check_not_input(output: str | os.PathLike, *inputs) -> None:
    """Refuse an output path that names one of the command's inputs (writing it would destroy the input)."""
    out = Path(output)
    for given in inputs:
        if given is None or not isinstance(given, (str, os.PathLike)):
            continue
        source = Path(given)
        if source.exists() and out.exists() and os.path.samefile(out, source):
            raise InputError(f"the output '{out}' is the input '{source}': writing it would destroy the input",
                             "choose another output path")


def _output_error(exc: OSError, path: Path, tmp: Path) -> InputError | None:
    """An InputError naming ``path`` for an OSError about writing its temporary ``tmp`` (a file or a folder:
    anything in it), or ``path`` itself; None for any other OSError."""
    if exc.filename is None:  # numpy's and ffmpeg pipes' errors name no file: only a full disk is the output's
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return None
    else:
        named = Path(os.fsdecode(exc.filename))
        if named not in (tmp, path) and tmp not in named.parents:
            return None
    return InputError(f"cannot write '{path}': {exc.strerror or exc}",
                      "free space on that disk, or choose an output path in a folder you can write to")


#: what writers that raise no OSError (safetensors, a Rust library) say of a full disk
_NO_SPACE = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122", "File too large")


def _write_failure(exc: BaseException, path: Path, tmp: Path) -> InputError | None:
    """An InputError naming ``path`` for a failure to write its temporary ``tmp``: an OSError about it
    (:func:`_output_error`), or another library's error where the disk is full (safetensors names it; torch.save
    says 'unexpected pos', so the disk's free space tells, the partial file still on it); None for any other."""
    if isinstance(exc, OSError):
        return _output_error(exc, path, tmp)
    if isinstance(exc, JambaTalkError):  # the writer's own account of its input
        return None
    text = str(exc)
    try:
        full = any(m in text for m in _NO_SPACE) or shutil.disk_usage(tmp if tmp.exists() else tmp.parent).free < 2 ** 20
    except OSError:
        full = False
    if not full:
        return None
    return InputError(f"cannot write '{path}': no space left on the disk ({type(exc).__name__}: "
                      f"{text.splitlines()[0][:160] if text else ''})",
                      "free space on that disk, or choose an output path in a folder you can write to")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary name keeps the final extension so that writers choosing a format by suffix
    (numpy, imageio, soundfile) behave as for the real path.
    """
    path = check_output_path(path, file=True, probe=False)
    suffix = suffix if suffix is not None else "".join(path.suffixes[-1:])
    fd, tmp = _temp_in(path.parent, f"cannot write '{path}'", prefix=f".{path.name}.", suffix=f".part{suffix}")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except Exception as exc:
        error = _write_failure(exc, path, tmp)
        if error is None:
            raise
        raise error from exc
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = check_output_path(path, folder=True, probe=False)
    tmp = Path(_temp_in(path.parent, f"cannot write '{path}'", prefix=f".{path.name}.", suffix=".part",
                        directory=True))
    try:
        try:
            yield tmp
        except Exception as exc:
            error = _write_failure(exc, path, tmp)
            if error is None:
                raise
            raise error from exc
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)
        for f in tmp.rglob("*"):  # some writers (safetensors) create 0600 files
            if f.is_file():
                os.chmod(f, 0o666 & ~mask)
        if path.is_dir():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
