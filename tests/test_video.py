"""MP4 writing: frames, frame rate and audio read back; audio fitting; grids; CLI; eval script."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from jambatalk.cli import main
from jambatalk.errors import InputError, MissingDependencyError
from jambatalk.render import fit_audio, render_grid, render_video
from jambatalk.render.shapes import dome_mesh
from jambatalk.render.video import label_alpha

av = pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


@pytest.fixture(scope="module")
def mesh():
    return dome_mesh(600)


def _motion(vertices: np.ndarray, n_frames: int) -> np.ndarray:
    seq = np.repeat(vertices[None], n_frames, axis=0)
    seq[:, :, 1] -= 0.01 * np.sin(np.arange(n_frames) * 0.5)[:, None] * (vertices[:, 1] < 0)[None]
    return seq


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"rate": float(v.average_rate), "width": v.codec_context.width, "height": v.codec_context.height,
                "codec": v.codec_context.name, "audio": [s for s in c.streams if s.type == "audio"]}
        info["audio_codec"] = info["audio"][0].codec_context.name if info["audio"] else None
        info["audio_seconds"] = (float(info["audio"][0].duration * info["audio"][0].time_base)
                                 if info["audio"] and info["audio"][0].duration else None)
        info["frames"] = sum(1 for _ in c.decode(video=0))
    return info


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


def test_mp4_has_every_frame_the_fps_and_audio(tmp_path, mesh):
    vertices, faces = mesh
    seq = _motion(vertices, 15)
    out = tmp_path / "clip.mp4"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matching audio: no warning
        assert render_video(out, seq, faces, fps=25, audio=_tone(15 / 25), size=96, progress=False) == out
    info = _probe(out)
    assert info["frames"] == 15
    assert info["rate"] == pytest.approx(25)
    assert (info["width"], info["height"], info["codec"]) == (96, 96, "h264")
    assert info["audio_codec"] == "aac"
    assert info["audio_seconds"] == pytest.approx(0.6, abs=0.06)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary left behind


def test_flat_sequence_odd_size_no_audio(tmp_path, mesh):
    vertices, faces = mesh
    seq = _motion(vertices, 7).reshape(7, -1)  # (T, 3V)
    out = tmp_path / "flat.mp4"
    render_video(out, seq, faces, fps=12.5, size=(75, 51), progress=False)
    info = _probe(out)
    assert (info["width"], info["height"]) == (76, 52)  # rounded up to even for yuv420p
    assert info["frames"] == 7 and info["rate"] == pytest.approx(12.5)
    assert info["audio"] == []


def test_fit_audio_pads_and_trims_with_a_warning():
    with pytest.warns(UserWarning, match=r"8000 samples .* 10 frames at 10 fps .* padded with 8000 samples"):
        padded = fit_audio(_tone(0.5), 10, 10.0)
    assert len(padded) == SR and np.array_equal(padded[:8000], _tone(0.5)) and not padded[8000:].any()
    with pytest.warns(UserWarning, match="trimmed by 16000 samples"):
        trimmed = fit_audio(_tone(2.0), 10, 10.0)
    assert np.array_equal(trimmed, _tone(2.0)[:SR])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # less than a frame off: fitted silently
        assert len(fit_audio(_tone(1.0)[:-100], 10, 10.0)) == SR
    # other sample rates are resampled to 16 kHz first
    assert len(fit_audio(np.zeros(44100, np.float32), 30, 30.0, sample_rate=44100)) == SR


def test_long_audio_is_trimmed_in_the_video(tmp_path, mesh):
    vertices, faces = mesh
    out = tmp_path / "long.mp4"
    with pytest.warns(UserWarning, match="trimmed"):
        render_video(out, _motion(vertices, 10), faces, fps=20, audio=_tone(3.0), size=64, progress=False)
    info = _probe(out)
    assert info["frames"] == 10
    assert info["audio_seconds"] == pytest.approx(0.5, abs=0.06)


@pytest.mark.parametrize("case, match", [
    ("faces", "faces index vertex 599 but the mesh has only 300 vertices"),
    ("nan", r"non-finite values .* in 1 of 5 frames \(first: frame 2\)"),
    ("empty", "empty"),
    ("shape", r"shape \(5, 600, 2\)"),
    ("fps", "fps"),
    ("colors", "colors have shape"),
    ("lone_frame", r"only 1 vertices; .* pass a lone frame as \(1, V, 3\)"),
])
def test_bad_input_leaves_no_file(tmp_path, mesh, case, match):
    vertices, faces = mesh
    seq = _motion(vertices, 5)
    kwargs = {"fps": 30}
    if case == "faces":
        seq = seq[:, :300]
    elif case == "nan":
        seq[2, 10, 0] = np.inf
    elif case == "empty":
        seq = seq[:0]
    elif case == "shape":
        seq = seq[..., :2]
    elif case == "fps":
        kwargs["fps"] = 0
    elif case == "colors":
        kwargs["colors"] = np.zeros((4, 600, 3))
    elif case == "lone_frame":  # (V, 3), read as V frames of one vertex
        seq = seq[0]
    with pytest.raises(InputError, match=match):
        render_video(tmp_path / "bad.mp4", seq, faces, size=32, progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_video_named_other_than_mp4_is_refused(tmp_path, mesh):
    """render_video wrote MP4 data under any name (x.avi, a name without extension)."""
    vertices, faces = mesh
    for name in ("x.avi", "noext"):
        with pytest.raises(InputError, match=f"cannot write a video as .*{name}.*written as .mp4 files"):
            render_video(tmp_path / name, _motion(vertices, 2), faces, fps=30, size=32, progress=False)
    assert list(tmp_path.iterdir()) == []
    render_video(tmp_path / "UPPER.MP4", _motion(vertices, 2), faces, fps=30, size=32, progress=False)


def _fake_ffmpeg(tmp_path, monkeypatch, said: str, status: int):
    """An ffmpeg that reads nothing, says ``said`` and exits with ``status`` (a full disk, a crash)."""
    import imageio_ffmpeg

    exe = tmp_path / "fake-ffmpeg"
    exe.write_text(f"#!/bin/sh\necho 'first line of the log' >&2\necho '{said}' >&2\nexit {status}\n")
    exe.chmod(0o755)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(exe))


@pytest.mark.parametrize("said, status, error, match", [
    ("Error writing trailer: No space left on device", 228, InputError,
     r"cannot write the video '.*out.mp4': the disk is full \(ffmpeg: .*No space left on device\); free space"),
    ("Conversion failed!", 1, None, r"ffmpeg failed \(exit status 1\) while encoding the video '.*out.mp4' "
     r"\(first line of the log / Conversion failed!\); run it again.*-version"),
])
def test_ffmpeg_failing_is_an_error_that_names_the_video_and_the_fix(tmp_path, mesh, monkeypatch, capsys, said,
                                                                      status, error, match):
    """ffmpeg's failures (a full disk, a crash) were RuntimeErrors carrying its whole log: 'internal error' from
    the command line, exit 1. They keep an existing video and leave no temporary file."""
    from jambatalk.errors import JambaTalkError

    vertices, faces = mesh
    folder = tmp_path / "videos"
    folder.mkdir()
    out = folder / "out.mp4"
    out.write_bytes(b"an earlier video")
    _fake_ffmpeg(tmp_path, monkeypatch, said, status)
    with pytest.raises(error or JambaTalkError, match=match):
        render_video(out, _motion(vertices, 40), faces, fps=30, size=32, progress=False)
    template = _write_template(tmp_path / "template.ply", vertices, faces)
    np.save(tmp_path / "seq.npy", _motion(vertices, 40))
    assert main(["render", str(tmp_path / "seq.npy"), "--template", str(template), "--out", str(out),
                 "--size", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error" not in err and "out.mp4" in err
    assert out.read_bytes() == b"an earlier video" and sorted(folder.iterdir()) == [out]


def test_missing_output_folder_is_refused(tmp_path, mesh):
    vertices, faces = mesh
    with pytest.raises(InputError, match="does not exist"):
        render_video(tmp_path / "nope" / "a.mp4", _motion(vertices, 2), faces, fps=30, size=32, progress=False)


def test_grid_panels_labels_and_lengths(tmp_path, mesh):
    vertices, faces = mesh
    gt, pred = _motion(vertices, 8), _motion(vertices, 9) * 1.02
    out = tmp_path / "grid.mp4"
    with pytest.warns(UserWarning, match=r"different lengths \[8, 9, 9\]"):
        render_grid(out, [gt, pred, pred], faces, ["gt", "pred", "err"], fps=30, size=64, progress=False,
                    colors=[None, None, np.full((600, 3), 0.5)], audio=_tone(8 / 30))
    info = _probe(out)
    assert (info["width"], info["height"], info["frames"]) == (192, 64, 8)
    with pytest.raises(InputError, match="2 labels for 3 sequences"):
        render_grid(tmp_path / "x.mp4", [gt, gt, gt], faces, ["a", "b"], fps=30, size=32, progress=False)
    with pytest.raises(InputError, match="sequence 1 has 300 vertices"):
        render_grid(tmp_path / "x.mp4", [gt, gt[:, :300]], faces, None, fps=30, size=32, progress=False)
    assert not (tmp_path / "x.mp4").exists()


def test_labels_are_drawn():
    a, b = label_alpha("prediction", 120, 16), label_alpha("ground truth", 120, 16)
    assert a.shape == (16, 120) and 0.02 < (a > 0.5).mean() < 0.6
    assert not np.array_equal(a, b)
    assert not label_alpha("", 120, 16).any()


def _write_template(path: Path, vertices, faces) -> Path:
    from jambatalk.mesh import save_mesh

    save_mesh(path, vertices, faces)
    return path


def test_cli_render(tmp_path, mesh):
    import soundfile as sf

    vertices, faces = mesh
    template = _write_template(tmp_path / "template.ply", vertices, faces)
    np.save(tmp_path / "seq.npy", _motion(vertices, 6).reshape(6, -1))
    sf.write(tmp_path / "speech.wav", _tone(6 / 24), SR)
    out = tmp_path / "out.mp4"
    assert main(["render", str(tmp_path / "seq.npy"), "--template", str(template), "--audio",
                 str(tmp_path / "speech.wav"), "--fps", "24", "--out", str(out), "--size", "48"]) == 0
    info = _probe(out)
    assert info["frames"] == 6 and info["rate"] == pytest.approx(24) and info["audio_codec"] == "aac"
    # .npz with its own fps
    np.savez(tmp_path / "seq.npz", vertices=_motion(vertices, 4), fps=np.array(15.0))
    assert main(["render", str(tmp_path / "seq.npz"), "--template", str(template), "--out", str(out),
                 "--size", "32", "--camera", "fit"]) == 0
    assert _probe(out)["rate"] == pytest.approx(15) and _probe(out)["frames"] == 4
    assert _probe(out)["audio"] == []


def test_cli_render_takes_the_audio_an_animation_saved_with_its_motion(tmp_path, mesh, capsys):
    from jambatalk import Animation

    vertices, faces = mesh
    template = _write_template(tmp_path / "template.ply", vertices, faces)
    anim = Animation(vertices=_motion(vertices, 8), template=vertices, faces=faces, fps=20.0, audio=_tone(8 / 20))
    anim.save(tmp_path / "anim.npz")
    out = tmp_path / "out.mp4"
    assert main(["render", str(tmp_path / "anim.npz"), "--template", str(template), "--out", str(out),
                 "--size", "32"]) == 0
    assert "with the audio stored in anim.npz" in capsys.readouterr().out
    info = _probe(out)
    assert info["frames"] == 8 and info["rate"] == pytest.approx(20) and info["audio_codec"] == "aac"
    assert info["audio_seconds"] == pytest.approx(8 / 20, abs=0.05)
    # stored audio without its sample rate: refused, nothing written
    np.savez(tmp_path / "norate.npz", vertices=_motion(vertices, 4), audio=_tone(0.2))
    out.unlink()
    assert main(["render", str(tmp_path / "norate.npz"), "--template", str(template), "--out", str(out)]) == 2
    assert "sample_rate" in capsys.readouterr().err and not out.exists()


def test_cli_render_needs_no_template_for_an_npz_that_keeps_its_faces(tmp_path, mesh, capsys):
    from jambatalk import Animation

    vertices, faces = mesh
    Animation(vertices=_motion(vertices, 5), template=vertices, faces=faces, fps=10.0, audio=_tone(0.5)).save(
        tmp_path / "anim.npz")
    out = tmp_path / "out.mp4"
    assert main(["render", str(tmp_path / "anim.npz"), "--out", str(out), "--size", "32"]) == 0
    info = _probe(out)
    assert info["frames"] == 5 and info["rate"] == pytest.approx(10) and info["audio_codec"] == "aac"
    out.unlink()
    np.save(tmp_path / "seq.npy", _motion(vertices, 5))
    assert main(["render", str(tmp_path / "seq.npy"), "--out", str(out)]) == 2
    assert "'" + str(tmp_path / "seq.npy") + "' holds vertices only and no --template was given; pass --template" \
        in capsys.readouterr().err
    np.savez(tmp_path / "bare.npz", vertices=_motion(vertices, 5))
    assert main(["render", str(tmp_path / "bare.npz"), "--out", str(out)]) == 2
    assert "stores no faces and no --template was given" in capsys.readouterr().err and not out.exists()
    # a template: its faces may list the stored triangles in another order and winding, not other triangles
    shuffled = _write_template(tmp_path / "shuffled.ply", vertices, faces[::-1][:, [1, 2, 0]])
    assert main(["render", str(tmp_path / "anim.npz"), "--template", str(shuffled), "--out", str(out),
                 "--size", "32"]) == 0
    out.unlink()
    other = _write_template(tmp_path / "other.ply", vertices, (faces + 1) % len(vertices))
    assert main(["render", str(tmp_path / "anim.npz"), "--template", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has other triangles than the faces stored in" in err and "leave out --template" in err
    assert not out.exists()


def test_audio_and_motion_of_different_lengths_warn_with_the_frame_rate_that_would_fit(mesh):
    with pytest.warns(UserWarning, match=r"padded with .* at 60 fps"):
        fit_audio(_tone(1.0), 60, 30.0)  # 2 s of motion at 30 fps; 1 s of audio


def test_cli_render_errors(tmp_path, mesh, capsys):
    vertices, faces = mesh
    template = _write_template(tmp_path / "template.ply", vertices, faces)
    np.save(tmp_path / "short.npy", _motion(vertices, 3)[:, :500])
    out = tmp_path / "out.mp4"
    assert main(["render", str(tmp_path / "short.npy"), "--template", str(template), "--out", str(out)]) == 2
    assert "has 500 vertices but template" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "missing.npy"), "--template", str(template), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    np.savez(tmp_path / "novert.npz", positions=np.zeros((2, 600, 3)))
    assert main(["render", str(tmp_path / "novert.npz"), "--template", str(template), "--out", str(out)]) == 2
    assert "no 'vertices' array" in capsys.readouterr().err
    np.save(tmp_path / "ok.npy", _motion(vertices, 3))
    for fps in ("0.001", "2000"):  # 0.001 fps padded the speech to a 37-hour video
        capsys.readouterr()
        assert main(["render", str(tmp_path / "ok.npy"), "--template", str(template), "--fps", fps, "--out",
                     str(out)]) == 2
        assert f"fps {float(fps)!r} is outside [1, 1000]" in capsys.readouterr().err and not out.exists()
    assert main(["render", str(tmp_path / "short.npy"), "--template", str(template), "--out",
                 str(tmp_path / "out.gif")]) == 2
    assert "not an .mp4" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "short.npy"), "--template", str(template), "--camera", "moon",
                 "--out", str(out)]) == 2
    assert not out.exists()


def test_render_eval_script(tmp_path, mesh):
    spec = importlib.util.spec_from_file_location("render_eval", ROOT / "render" / "render_eval.py")
    render_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_eval)
    vertices, faces = mesh
    template = _write_template(tmp_path / "template.ply", vertices, faces)
    ev = tmp_path / "eval"
    for sub in ("pred", "gt", "wav"):
        (ev / sub).mkdir(parents=True)
    np.save(ev / "pred" / "a.npy", _motion(vertices, 5).reshape(5, -1) * 1.01)
    np.save(ev / "gt" / "a.npy", _motion(vertices, 5))
    np.save(ev / "pred" / "b.npy", _motion(vertices, 4))  # no ground truth: a single panel
    (ev / "report.json").write_text(json.dumps({"fps": 20, "dataset": "no-such-dataset", "data_root": str(ev)}))
    import soundfile as sf

    sf.write(ev / "wav" / "a.wav", _tone(0.25), SR)
    assert render_eval.main([str(ev), "--template", str(template), "--size", "40"]) == 0  # audio: data_root/wav
    a, b = _probe(ev / "videos" / "a.mp4"), _probe(ev / "videos" / "b.mp4")
    assert (a["width"], a["frames"], a["rate"], a["audio_codec"]) == (120, 5, 20, "aac")
    assert (b["width"], b["frames"], b["audio"]) == (40, 4, [])
    assert render_eval.main([str(ev), "--template", str(template), "--names", "zzz"]) == 2
    # a --gt-dir holding none of the predictions' ground truth rendered them alone, without a word
    (tmp_path / "elsewhere").mkdir()
    assert render_eval.main([str(ev), "--template", str(template), "--gt-dir", str(tmp_path / "elsewhere"), "--out",
                             str(tmp_path / "v2")]) == 2
    assert not (tmp_path / "v2").exists()


def test_render_eval_takes_the_faces_of_the_evaluated_data(tmp_path, mesh, capsys):
    spec = importlib.util.spec_from_file_location("render_eval", ROOT / "render" / "render_eval.py")
    render_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_eval)
    vertices, faces = mesh
    ev = tmp_path / "eval"
    (ev / "pred").mkdir(parents=True)
    np.save(ev / "pred" / "a.npy", _motion(vertices, 3))
    (ev / "report.json").write_text(json.dumps({"fps": 10, "dataset": "no-such-dataset", "data_root": str(ev)}))
    assert render_eval.main([str(ev), "--size", "32"]) == 2
    assert ("no --template was given, and the faces of dataset 'no-such-dataset' were not found" in
            capsys.readouterr().err) and not (ev / "videos").exists()
    _write_template(ev / "template.ply", vertices, faces)  # as jambatalk synth writes into a corpus
    assert render_eval.main([str(ev), "--size", "32"]) == 0
    assert _probe(ev / "videos" / "a.mp4")["frames"] == 3


def test_render_eval_shows_the_datasets_ground_truth_and_refuses_bad_arguments_in_one_line(tmp_path, mesh, capsys):
    """jambatalk test writes no gt/: the processed dataset's vertices_npy/ (report.json's data_root) gives the
    ground truth | prediction | error panels. An --out that is a file and an unreadable prediction were tracebacks;
    --limit 0, --fps 0 and a missing --audio-dir were misread or ignored; none leaves an output folder."""
    spec = importlib.util.spec_from_file_location("render_eval", ROOT / "render" / "render_eval.py")
    render_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_eval)
    vertices, faces = mesh
    template = _write_template(tmp_path / "template.ply", vertices, faces)
    data, ev = tmp_path / "data", tmp_path / "eval"
    (data / "vertices_npy").mkdir(parents=True)
    (ev / "pred").mkdir(parents=True)
    np.save(data / "vertices_npy" / "a.npy", _motion(vertices, 6).reshape(6, -1))  # (T, 3V), as datasets keep it
    np.save(ev / "pred" / "a.npy", _motion(vertices, 6) * 1.01)
    (ev / "report.json").write_text(json.dumps({"fps": 20, "dataset": "no-such-dataset", "data_root": str(data)}))
    args = [str(ev), "--template", str(template), "--size", "40"]
    (tmp_path / "file").write_text("in the way")
    for extra, match in ((["--out", str(tmp_path / "file")], "it is a file, not a folder"),
                         (["--limit", "0"], "--limit is 0"), (["--fps", "0"], "--fps is 0"),
                         (["--audio-dir", str(tmp_path / "none")], "--audio-dir '"),
                         # checked at the first video, after the output folder was made
                         (["--camera", "moon"], "unknown camera preset 'moon'"),
                         (["--backend", "vulkan"], "unknown render backend 'vulkan'"),
                         (["--vmax", "0"], "--vmax is 0"), (["--size", "0"], "image size 0x0")):
        capsys.readouterr()
        assert render_eval.main(args + extra) == 2
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err, extra
    assert not (ev / "videos").exists()

    def no_renderer(*args, **kwargs):
        raise MissingDependencyError("no render backend could be opened", "install moderngl")

    render_eval.render_comparison = no_renderer  # a first video that fails leaves no empty folder
    assert render_eval.main(args) == 2
    assert "no render backend could be opened" in capsys.readouterr().err and not (ev / "videos").exists()
    (ev / "videos").mkdir()  # nor does it remove a folder the user made
    assert render_eval.main(args) == 2 and (ev / "videos").is_dir()
    spec.loader.exec_module(render_eval)
    assert render_eval.main(args) == 0
    assert _probe(ev / "videos" / "a.mp4")["width"] == 120  # three panels
    (ev / "pred" / "a.npy").write_bytes(b"\x93NUMPY garbage")
    capsys.readouterr()
    assert render_eval.main(args + ["--out", str(tmp_path / "v2")]) == 2
    assert "is not a readable .npy array" in capsys.readouterr().err and not (tmp_path / "v2").exists()
