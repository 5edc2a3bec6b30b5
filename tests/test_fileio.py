"""Output paths: refused before the work when they cannot be written; files appear whole or not at all;
SIGTERM cleans up as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import tempfile

import numpy as np
import pytest

from jambatalk import cli
from jambatalk.errors import InputError
from jambatalk.fileio import atomic_dir, atomic_path, check_not_input, check_output_path


def _no_new_files_in(monkeypatch, folder):
    """mkstemp/mkdtemp in ``folder`` fail as in a read-only or immutable folder (whoever runs the tests)."""
    real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

    def refuse(real):
        def make(*args, dir=None, **kwargs):
            if dir is not None and os.path.abspath(dir) == os.path.abspath(folder):
                raise PermissionError(1, "Operation not permitted", os.path.join(str(dir), "x"))
            return real(*args, dir=dir, **kwargs)
        return make

    monkeypatch.setattr(tempfile, "mkstemp", refuse(real_mkstemp))
    monkeypatch.setattr(tempfile, "mkdtemp", refuse(real_mkdtemp))


def test_an_output_folder_that_takes_no_new_files_is_refused(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    _no_new_files_in(monkeypatch, locked)
    for path in (locked / "a.npy", locked / "frames"):
        with pytest.raises(InputError, match="takes no new files.*Operation not permitted"):
            check_output_path(path)
    check_output_path(tmp_path / "a.npy")  # its parent is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]  # the probe leaves nothing


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into any folder")
def test_a_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="takes no new files"):
            check_output_path(ro / "a.npy")
    finally:
        ro.chmod(0o700)


def test_a_file_output_is_not_a_folder_or_a_device_and_a_folder_output_is_not_a_file(tmp_path):
    (tmp_path / "d.mp4").mkdir()
    with pytest.raises(InputError, match="it is a folder"):
        check_output_path(tmp_path / "d.mp4", file=True)
    if os.path.exists(os.devnull) and os.access(os.path.dirname(os.devnull), os.W_OK):
        with pytest.raises(InputError, match="not a regular file"):
            check_output_path(os.devnull, file=True)
    (tmp_path / "taken").write_text("x")
    with pytest.raises(InputError, match="a file of that name exists"):
        check_output_path(tmp_path / "taken", folder=True)
    with pytest.raises(InputError, match="it is a folder"):
        with atomic_path(tmp_path / "d.mp4"):
            pass
    with pytest.raises(InputError, match="a file of that name exists"):
        with atomic_dir(tmp_path / "taken"):
            pass
    assert (tmp_path / "taken").read_text() == "x"


def test_a_write_that_fails_names_the_output_and_leaves_nothing(tmp_path):
    out = tmp_path / "a.npy"
    with pytest.raises(InputError, match=r"cannot write '.*a\.npy': No space left on device"):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(28, "No space left on device", str(tmp))
    with pytest.raises(InputError, match=r"cannot write '.*frames': No space left on device"):
        with atomic_dir(tmp_path / "frames") as tmp:
            raise OSError(28, "No space left on device", str(tmp / "frame_0001.obj"))
    with pytest.raises(FileNotFoundError):  # an error about another file is not the output's
        with atomic_path(out):
            open(tmp_path / "missing-input.wav", "rb")
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_names_an_input_is_refused(tmp_path):
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"video")
    with pytest.raises(InputError, match="writing it would destroy the input"):
        check_not_input(tmp_path / "." / "clip.mp4", None, np.zeros(3), src)
    check_not_input(tmp_path / "other.mp4", src)
    assert src.read_bytes() == b"video"


def test_cli_animate_refuses_its_output_before_any_inference(tmp_path, monkeypatch, capsys):
    import jambatalk.api as api

    def no_inference(*args, **kwargs):
        raise AssertionError("inference ran before the output was checked")

    monkeypatch.setattr(api, "animate", no_inference)
    monkeypatch.setattr(api, "stream_file", no_inference)
    wav = tmp_path / "speech.wav"
    wav.write_bytes(b"not read")
    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "taken").write_text("x")
    (tmp_path / "notes").mkdir()  # a frame folder's place holding other files: refused after the inference
    (tmp_path / "notes" / "todo.txt").write_text("x")
    template = tmp_path / "t.npy"
    np.save(template, np.zeros((4, 3), np.float32))
    _no_new_files_in(monkeypatch, locked)
    for out, message in ((locked / "a.npy", "takes no new files"), (tmp_path / "a.gif", "cannot save an animation as"),
                         (tmp_path / "taken", "a file of that name exists"), (template, "destroy the input"),
                         (tmp_path / "notes", "is a folder holding other files (1, e.g. 'todo.txt')")):
        assert cli.main(["animate", str(wav), "--template", str(template), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err


def test_cli_bench_refuses_a_json_path_before_running_benchmarks(tmp_path, monkeypatch, capsys):
    import jambatalk.bench as bench

    monkeypatch.setattr(bench, "run_benchmarks", lambda *a, **k: pytest.fail("benchmarks ran"))
    (tmp_path / "out.json").mkdir()
    assert cli.main(["bench", "scan", "--json", str(tmp_path / "out.json")]) == 2
    assert "it is a folder" in capsys.readouterr().err


def test_sigterm_stops_a_command_and_removes_its_partial_output(tmp_path, monkeypatch, capsys):
    def command(args):
        with atomic_path(tmp_path / "out.npy") as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the signal arrives at the next bytecode boundaries
                pass
        return 0

    monkeypatch.setattr(cli, "_handler", lambda name: command)
    outside = []  # a SIGTERM that the command line did not take over lands here (instead of ending pytest)

    def guard(signum, frame):
        outside.append(signum)

    previous = signal.signal(signal.SIGTERM, guard)
    try:
        status = cli.main(["animate", "a.wav", "--out", str(tmp_path / "out.npy")])
        assert signal.getsignal(signal.SIGTERM) is guard  # put back as it was
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert status == 128 + signal.SIGTERM and outside == []
    assert "terminated" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_render_and_demo_refuse_to_write_over_the_video_they_take_their_speech_from(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"a video with speech")
    seq = tmp_path / "seq.npy"
    np.save(seq, np.zeros((2, 3, 3), np.float32))
    assert cli.main(["render", str(seq), "--template", str(seq), "--audio", str(clip), "--out", str(clip)]) == 2
    assert "destroy the input" in capsys.readouterr().err
    assert cli.main(["demo", "--audio", str(clip), "--out", str(clip)]) == 2
    assert "destroy the input" in capsys.readouterr().err
    assert clip.read_bytes() == b"a video with speech"


def test_an_output_folder_that_could_not_be_made_or_written_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from jambatalk.fileio import check_output_folder

    locked = tmp_path / "locked"
    locked.mkdir()
    _no_new_files_in(monkeypatch, locked)
    for path in (locked, locked / "new" / "deeper"):  # itself, or the nearest folder that exists
        with pytest.raises(InputError, match="takes no new files"):
            check_output_folder(path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_output_folder(tmp_path / "afile" / "sub")
    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "locked"]  # nothing made, no probe left
    root = Path(__file__).resolve().parents[1]
    for argv in (["synth", "--dst", str(locked / "corpus"), "--sentences", "3"],
                 ["train", "--config", str(root / "configs" / "debug.yaml"), "--out", str(locked / "run")],
                 ["test", "--config", str(root / "configs" / "debug.yaml"), "--checkpoint",
                  str(root / "jambatalk" / "assets" / "default"), "--out", str(locked / "eval")]):
        assert cli.main(argv) == 2, argv
        assert "takes no new files" in capsys.readouterr().err, argv
    from jambatalk.data.preprocess import prepare_dst  # what preprocess makes its --dst with

    with pytest.raises(InputError, match="takes no new files"):
        prepare_dst(locked / "vocaset")
    assert list(locked.iterdir()) == []


def test_sigterm_ends_a_forked_worker_as_without_the_handler(monkeypatch):
    """A process forked by a command (synth's pool workers) inherits the SIGTERM handler; a pool stopping it
    must see it end by the signal, not raise Terminated there and print a traceback."""
    import multiprocessing as mp
    import time

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork start method on this platform")
    codes = []
    fork = mp.get_context("fork")
    running = fork.Event()

    def work():
        running.set()
        time.sleep(30)

    def command(args):
        worker = fork.Process(target=work)
        worker.start()
        assert running.wait(10)  # a signal sent before the child is set up after the fork would be dropped
        worker.terminate()  # SIGTERM, as Pool.terminate() sends its workers
        worker.join(10)
        codes.append(worker.exitcode)
        return 0

    monkeypatch.setattr(cli, "_handler", lambda name: command)
    assert cli.main(["synth", "--dst", "unused"]) == 0
    assert codes == [-signal.SIGTERM]


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_full_disk_named_by_no_file_is_the_outputs_error(tmp_path, kind):
    """numpy's writes raise ENOSPC without a file name: it passed through as an OSError ('internal error' from the
    command line); another nameless OSError still passes through."""
    import errno

    from jambatalk.fileio import atomic_dir, atomic_path

    out = tmp_path / ("x.npy" if kind == "file" else "frames")
    writer = atomic_path if kind == "file" else atomic_dir
    with pytest.raises(InputError, match=r"cannot write '.*(x.npy|frames)': No space left on device; free space"):
        with writer(out):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="Interrupted") as info:
        with writer(out):
            raise OSError(errno.EINTR, "Interrupted system call")
    assert not isinstance(info.value, InputError)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_full_disk_reported_by_a_writer_raising_no_oserror_is_the_outputs_error(tmp_path, kind, monkeypatch):
    """safetensors raises its own SafetensorError ('No space left on device (os error 28)') and torch.save a
    RuntimeError ('unexpected pos') on a full disk: both ended a training run as 'internal error', exit 1.
    torch's is known by the disk's free space; with room on the disk it passes through."""
    import shutil
    from collections import namedtuple

    out = tmp_path / ("x.pt" if kind == "file" else "last")
    writer = atomic_path if kind == "file" else atomic_dir

    class SafetensorError(Exception):
        pass

    with pytest.raises(InputError, match=r"cannot write '.*(x.pt|last)': no space left on the disk \(SafetensorError"):
        with writer(out):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    torch_full = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"
    with pytest.raises(RuntimeError, match="unexpected pos") as info:  # room on the disk: not a full disk
        with writer(out):
            raise RuntimeError(torch_full)
    assert not isinstance(info.value, InputError)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 ** 9, 10 ** 9, 4096))
    with pytest.raises(InputError, match=r"no space left on the disk \(RuntimeError: \[enforce fail"):
        with writer(out):
            raise RuntimeError(torch_full)
    with pytest.raises(InputError, match="the writer's own"):  # a JambaTalkError is never rewritten
        with writer(out):
            raise InputError("the writer's own", "fix")
    assert list(tmp_path.iterdir()) == []
