"""animate(), Animation and the `jambatalk animate` command: outputs, and refusal of bad input."""

import re

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import grid_mesh

import jambatalk
from jambatalk.api import Animation, animate, resample_frames
from jambatalk.cli import main
from jambatalk.errors import CheckpointError, InputError
from jambatalk.mesh import save_mesh
from jambatalk.model import JambaTalk


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    t = np.arange(22050) / 22050
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) * (t < 0.7)).astype(np.float32), 22050)
    return path


def test_public_api_surface():
    assert set(jambatalk.__all__) >= {"animate", "Animation", "load_model", "load_audio", "load_template"}
    assert jambatalk.animate is animate
    import subprocess
    import sys

    # the API's modules are attributes of the package, as in numpy (jambatalk.metrics raised AttributeError)
    code = "import jambatalk; print(jambatalk.metrics.lve.__name__, jambatalk.render.render_video.__name__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == \
        ["lve", "render_video"]
    with pytest.raises(AttributeError, match="module 'jambatalk' has no attribute 'metrix'"):
        jambatalk.metrix  # noqa: B018


def test_animate_from_file_and_array(model_dir, wav):
    anim = animate(wav, model=model_dir)
    assert anim.vertices.shape == (25, 64, 3) and anim.vertices.dtype == np.float32  # 1 s at 25 fps
    assert anim.fps == 25 and len(anim.audio) == 16000 and anim.faces is not None
    same = animate(jambatalk.load_audio(wav), sample_rate=16000, model=jambatalk.load_model(model_dir))
    np.testing.assert_allclose(same.vertices, anim.vertices, atol=1e-6)


def test_an_animation_owns_its_arrays(model_dir, wav):
    """anim.template and anim.faces were views of the model's own: centring the animation's template in place
    moved the model's, and every later animation with it."""
    model = jambatalk.load_model(model_dir)
    template, faces = model.template.clone(), model.faces.clone()
    audio = jambatalk.load_audio(wav)
    mine = audio.copy() + 0.0
    for anim in (animate(mine, sample_rate=16000, model=model),
                 animate(mine, template.cpu().numpy(), sample_rate=16000, model=model)):
        anim.template += 1.0
        anim.faces[:] = 0
        anim.audio[:] = 0
    assert torch.equal(model.template, template) and torch.equal(model.faces, faces)
    np.testing.assert_array_equal(mine, audio)


def test_custom_template_moves_the_output(model_dir, wav):
    base = animate(wav, model=model_dir)
    shifted = animate(wav, template=base.template + 1.0, model=model_dir)
    np.testing.assert_allclose(shifted.vertices - base.vertices, 1.0, atol=1e-5)


def test_read_only_arrays_are_taken_without_a_warning(model_dir, wav):
    """Audio and templates from read-only memory (np.frombuffer, memory maps) animate as writable ones do,
    without torch's warning about non-writable arrays."""
    import warnings

    base = animate(wav, model=model_dir)
    audio, tpl = base.audio.copy(), base.template.copy()
    audio.flags.writeable = tpl.flags.writeable = False
    was = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch gives this warning once per process otherwise
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            again = animate(audio, template=tpl, sample_rate=16000, model=model_dir)
        finally:
            torch.set_warn_always(was)
    np.testing.assert_allclose(again.vertices, base.vertices, atol=1e-6)


def test_fps_resampling(model_dir, wav):
    anim = animate(wav, model=model_dir, fps=50)
    assert anim.fps == 50 and len(anim) == 50
    seq = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    up = resample_frames(seq, 10, 20)
    assert len(up) == 20 and up[1, 0, 0] == pytest.approx(0.5)
    # at equal rates the duration was ignored: 10 frames came back for 0.5 s or 1.3 s at 10 fps
    assert resample_frames(seq, 10, 10) is seq
    np.testing.assert_array_equal(resample_frames(seq, 10, 10, duration=0.5), seq[:5])
    held = resample_frames(seq, 10, 10, duration=1.3)
    assert len(held) == 13 and (held[10:] == seq[-1]).all() and (held[:10] == seq).all()
    # large meshes are interpolated a few frames at a time (into the output): each frame, blocks' edges included,
    # lies between its two neighbours at its own instant
    big = np.random.default_rng(1).standard_normal((7, 700_000, 3), dtype=np.float32)
    down = resample_frames(big, 30, 25)
    t = np.arange(len(down)) * 30 / 25
    lo = np.floor(t).astype(int)
    w = (t - lo).astype(np.float32)[:, None, None]
    np.testing.assert_array_equal(down, (1 - w) * big[lo] + w * big[np.minimum(lo + 1, 6)])
    # every whole frame the speech holds: 1.03 s at 60 fps is 61 frames, though 30 whole frames at 30 fps span 1.0 s
    speech = np.random.default_rng(0).normal(scale=0.1, size=16480).astype(np.float32)
    for fps, n in ((60, 61), (25, 25), (24, 24), (50, 51)):
        assert len(animate(speech, model=model_dir, sample_rate=16000, fps=fps)) == n, fps
    with pytest.raises(InputError, match=r"shorter than one video frame \(2000.0 ms at 0.5 fps\)"):
        animate(speech, model=model_dir, sample_rate=16000, fps=0.5)


def test_save_formats_round_trip(model_dir, wav, tmp_path):
    anim = animate(wav, model=model_dir)
    np.testing.assert_array_equal(np.load(anim.save(tmp_path / "a.npy")), anim.vertices)
    back = Animation.load(anim.save(tmp_path / "a.npz"))
    np.testing.assert_array_equal(back.vertices, anim.vertices)
    np.testing.assert_array_equal(back.faces, anim.faces)
    assert back.fps == anim.fps and np.array_equal(back.audio, anim.audio)
    folder = anim.save(tmp_path / "frames")
    files = sorted(folder.glob("*.obj"))
    assert len(files) == len(anim)
    v, f = jambatalk.load_template(files[3])
    np.testing.assert_allclose(v, anim.vertices[3], atol=1e-6)
    ply = anim.save(tmp_path / "frames_ply", mesh_format="ply")
    assert len(list(ply.glob("*.ply"))) == len(anim)


def test_save_upper_case_extensions_writes_the_file_itself(model_dir, wav, tmp_path):
    """.NPY / .NPZ: numpy would add a lower-case suffix to a path; the file itself is written, nothing else."""
    anim = animate(wav, model=model_dir)
    np.testing.assert_array_equal(np.load(anim.save(tmp_path / "a.NPY")), anim.vertices)
    np.testing.assert_array_equal(Animation.load(anim.save(tmp_path / "b.NPZ")).vertices, anim.vertices)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.NPY", "b.NPZ"]


def test_save_refuses_what_load_and_render_would_refuse_to_read_back(model_dir, wav, tmp_path):
    """An .npz with fps -1 or NaN vertices was written, then refused by Animation.load and jambatalk render;
    mesh_format is case-insensitive like the extensions."""
    import dataclasses

    anim = animate(wav, model=model_dir)
    nan = anim.vertices.copy()
    nan[3, 0, 0] = np.nan
    for bad, match in ((dataclasses.replace(anim, fps=-1.0), "fps is -1.0"),
                       (dataclasses.replace(anim, fps=float("nan")), "fps is nan"),
                       (dataclasses.replace(anim, vertices=nan), "NaN or infinite in 1 of .* frames \\(first: frame 3\\)"),
                       (dataclasses.replace(anim, template=anim.template[:10]), "template has shape \\(10, 3\\)"),
                       (dataclasses.replace(anim, faces=anim.faces + 5000), "faces index vertices 5000 to .* but its "
                        "frames have"),
                       (dataclasses.replace(anim, faces=anim.faces[:, :2]), "faces have shape \\(\\d+, 2\\)")):
        for name in ("a.npz", "a.npy", "frames"):
            with pytest.raises(InputError, match=match):
                bad.save(tmp_path / name)
    assert not any(tmp_path.iterdir())
    assert sorted(p.suffix for p in anim.save(tmp_path / "frames", mesh_format="PLY").iterdir()) == [".ply"] * len(anim)


def test_an_animation_saved_with_audio_at_another_rate_loads_at_16_khz(model_dir, wav, tmp_path):
    """Animation.load took an .npz's audio as 16 kHz whatever its sample_rate said: 22.05 kHz speech played
    slowed down (5.1 s read as 7 s). It is resampled; a list of frames saves too."""
    import dataclasses

    from jambatalk.audio import resample

    anim = animate(wav, model=model_dir)
    np.savez(tmp_path / "a.npz", vertices=anim.vertices, template=anim.template, faces=anim.faces, fps=anim.fps,
             audio=resample(anim.audio, 16000, 22050), sample_rate=22050)
    back = Animation.load(tmp_path / "a.npz")
    assert abs(len(back.audio) - len(anim.audio)) <= 1
    np.testing.assert_allclose(back.audio[100:-100], anim.audio[100:len(back.audio) - 100], atol=0.02)
    listed = dataclasses.replace(anim, vertices=list(anim.vertices))
    np.testing.assert_array_equal(Animation.load(listed.save(tmp_path / "b.npz")).vertices, anim.vertices)


def test_an_animation_without_speech_renders_a_silent_video(model_dir, wav, tmp_path):
    import dataclasses

    av = pytest.importorskip("av")
    anim = dataclasses.replace(animate(wav, model=model_dir), audio=np.zeros(0, np.float32))
    with av.open(str(anim.save(tmp_path / "silent.mp4", size=64, progress=False))) as c:
        assert not [s for s in c.streams if s.type == "audio"]
        assert sum(1 for _ in c.decode(video=0)) == len(anim)


def test_save_into_a_folder_holding_other_files_is_refused(model_dir, wav, tmp_path, monkeypatch):
    """A frame folder replaces an earlier one whole, but never a folder holding anything else (the input audio,
    notes): those are refused and left as they were, '.' included."""
    anim = animate(wav, model=model_dir)
    frames = anim.save(tmp_path / "frames")
    again = anim.save(tmp_path / "frames")  # an earlier frame folder is replaced
    assert len(list(again.iterdir())) == len(anim)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("keep me")
    (mixed / "frame_0001.obj").write_text("not ours")
    with pytest.raises(InputError, match="holding other files.*notes.txt"):
        anim.save(mixed)
    assert (mixed / "notes.txt").read_text() == "keep me" and (mixed / "frame_0001.obj").read_text() == "not ours"
    monkeypatch.chdir(mixed)
    with pytest.raises(InputError, match="holding other files"):
        anim.save(".")
    assert sorted(f.name for f in mixed.iterdir()) == ["frame_0001.obj", "notes.txt"]
    assert frames.is_dir()


def test_a_model_predicting_non_finite_vertices_is_refused(model_dir, wav, tmp_path, capsys):
    """Damaged weights (NaN) give a CheckpointError naming the model, not a file of NaN reported as written."""
    broken = JambaTalk.from_pretrained(model_dir)
    with torch.no_grad():
        broken.head.weight[0, 0] = float("nan")
    broken.save_pretrained(tmp_path / "broken")
    with pytest.raises(CheckpointError, match="non-finite vertices"):
        animate(wav, model=broken)
    out = tmp_path / "o.npy"
    assert _run("animate", wav, "--checkpoint", tmp_path / "broken", "--out", out) == 2
    err = capsys.readouterr().err
    assert "broken" in err and "non-finite" in err and not out.exists()


def test_silence_gate_and_device_of_the_wrong_kind_are_refused(model_dir, wav):
    with pytest.raises(InputError, match="silence_gate is 'off'"):
        animate(wav, model=model_dir, silence_gate="off")  # bool("off") would switch the gate on
    with pytest.raises(InputError, match="not a torch device"):
        animate(wav, model=model_dir, device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no usable CUDA device.*--device cpu"):
            animate(wav, model=model_dir, device="cuda")


@pytest.mark.parametrize("kwargs,match", [
    ({"fps": "30"}, "fps is '30'"),
    ({"fps": float("inf")}, "fps is inf"),
    ({"fps": True}, "fps is True"),
    ({"sample_rate": True}, "sampling rate True"),
    ({"sample_rate": "16000"}, "sampling rate '16000'"),
    ({"sample_rate": float("inf")}, "sampling rate inf"),
])
def test_rates_of_the_wrong_kind_are_refused(kwargs, match, model_dir):
    """A string, a bool (True would be 1 Hz) or an infinite rate is an InputError, not a TypeError or an
    OverflowError from deep inside."""
    args = {"sample_rate": 16000, **kwargs}
    with pytest.raises(InputError, match=re.escape(match)):
        animate(np.zeros(16000, np.float32), model=model_dir, **args)


def test_stream_chunk_length_and_output_folder_are_checked(model_dir, wav, tmp_path):
    from jambatalk.api import stream_file

    with pytest.raises(InputError, match=r"chunk_ms\) is inf"):
        stream_file(wav, model=model_dir, chunk_ms=float("inf"))
    with pytest.raises(InputError, match=r"\(--chunk-ms, chunk_ms\) is '100'; pass a positive chunk length"):
        stream_file(wav, model=model_dir, chunk_ms="100")  # was a TypeError from a comparison
    # an array with its sampling rate, as animate takes it (the error asked for a sample_rate it had no argument for)
    from jambatalk.config import model_preset

    cfg = model_preset("tiny")
    cfg.decoder.attention_span = "causal"
    net = JambaTalk(cfg, template=np.zeros((cfg.n_vertices, 3), np.float32)).eval()
    anim, _ = stream_file(jambatalk.load_audio(wav), sample_rate=16000, model=net)
    np.testing.assert_array_equal(anim.vertices, stream_file(wav, model=net)[0].vertices)
    (tmp_path / "out.npy").mkdir()
    with pytest.raises(InputError, match="it is a folder"):
        animate(wav, model=model_dir).save(tmp_path / "out.npy")


def test_save_unknown_extension(model_dir, wav, tmp_path):
    anim = animate(wav, model=model_dir)
    with pytest.raises(InputError, match=".gif"):
        anim.save(tmp_path / "a.gif")
    assert not list(tmp_path.iterdir())


def _run(*argv):
    return main(list(map(str, argv)))


def test_cli_animate_writes_npy(model_dir, wav, tmp_path, capsys):
    assert _run("animate", wav, "--checkpoint", model_dir, "--out", tmp_path / "o.npy") == 0
    assert np.load(tmp_path / "o.npy").shape == (25, 64, 3)


def test_cli_stops_quietly_when_its_output_is_no_longer_read(model_dir, wav, tmp_path):
    """`jambatalk animate ... | head`: the reader goes away before the summary line; no internal error is
    reported and the animation is written all the same."""
    import subprocess
    import sys

    out = tmp_path / "piped.npy"
    proc = subprocess.Popen([sys.executable, "-m", "jambatalk", "animate", str(wav), "--checkpoint", str(model_dir),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # nobody reads what it prints
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "internal error" not in err and "BrokenPipeError" not in err, err
    assert np.load(out).shape == (25, 64, 3)


def test_cli_animate_writes_per_frame_meshes_in_the_format_asked(model_dir, wav, tmp_path, capsys):
    for fmt in ("ply", "obj"):
        assert _run("animate", wav, "--checkpoint", model_dir, "--out", tmp_path / fmt, "--mesh-format", fmt) == 0
        assert sorted(p.suffix for p in (tmp_path / fmt).iterdir()) == [f".{fmt}"] * 25


@pytest.mark.parametrize("case,match", [
    ("missing_audio", "does not exist"),
    ("not_audio", "could not be read as audio"),
    ("empty_audio", "empty"),
    ("too_short", "shorter than one video frame"),
    ("nan_audio", "non-finite"),
    ("template_wrong_count", "5 vertices but the model animates meshes of 64"),
    ("template_nan", "non-finite"),
    ("template_not_mesh", "mesh"),
    ("checkpoint_unreadable", "config.json"),
    ("checkpoint_other_mesh", "vertices"),
    ("out_folder_missing", "does not exist"),
])
def test_cli_bad_input(case, match, model_dir, wav, tmp_path, capsys):
    audio, template, ckpt = wav, None, model_dir
    out = tmp_path / "out" / "o.npy"
    out.parent.mkdir()
    if case == "missing_audio":
        audio = tmp_path / "nope.wav"
    elif case == "not_audio":
        audio = tmp_path / "x.wav"
        audio.write_text("hello")
    elif case in ("empty_audio", "too_short", "nan_audio"):
        audio = tmp_path / "x.wav"
        data = {"empty_audio": np.zeros(0), "too_short": np.zeros(300), "nan_audio": np.full(16000, np.nan)}[case]
        sf.write(audio, data.astype(np.float32), 16000, subtype="FLOAT")
    elif case == "template_wrong_count":
        template = tmp_path / "t.npy"
        np.save(template, np.zeros((5, 3)))
    elif case == "template_nan":
        template = tmp_path / "t.npy"
        np.save(template, np.full((64, 3), np.nan))
    elif case == "template_not_mesh":
        template = tmp_path / "t.obj"
        template.write_text("garbage")
    elif case == "checkpoint_unreadable":
        ckpt = tmp_path / "ckpt"
        ckpt.mkdir()
    elif case == "checkpoint_other_mesh":
        template = tmp_path / "t.ply"
        v, f = grid_mesh(9)
        save_mesh(template, v, f)
    elif case == "out_folder_missing":
        out = tmp_path / "missing" / "o.npy"
    args = ["animate", audio, "--checkpoint", ckpt, "--out", out]
    if template is not None:
        args += ["--template", template]
    assert _run(*args) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists() and not list(out.parent.glob("*")) if out.parent.exists() else True


def test_checkpoint_error_type(tmp_path):
    with pytest.raises(CheckpointError):
        jambatalk.load_model(tmp_path)


def test_silence_is_valid_input(model_dir):
    anim = animate(np.zeros(16000, np.float32), sample_rate=16000, model=model_dir)
    assert np.isfinite(anim.vertices).all() and len(anim) == 25


def test_cli_help_for_every_subcommand(capsys):
    from jambatalk.cli import HANDLERS

    for name in HANDLERS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert f"usage: jambatalk {name}" in capsys.readouterr().out


def test_cli_prints_warnings_on_one_line_and_restores_the_format(monkeypatch, tmp_path):
    """While a command runs, warnings are formatted as one line naming the command (no source line); --debug
    keeps Python's format, and the format is restored afterwards."""
    import warnings

    from jambatalk import cli

    seen = []

    def handler(args):
        seen.append(warnings.formatwarning(UserWarning("audio trimmed"), UserWarning, __file__, 1))
        seen.append(warnings.formatwarning(DeprecationWarning("old"), DeprecationWarning, __file__, 1))
        return 0

    monkeypatch.setattr(cli, "_handler", lambda command: handler)
    before = warnings.formatwarning
    assert main(["synth", "--dst", str(tmp_path / "c")]) == 0
    assert seen == ["jambatalk synth: warning: audio trimmed\n", "jambatalk synth: warning: DeprecationWarning: old\n"]
    assert warnings.formatwarning is before
    seen.clear()
    assert main(["--debug", "synth", "--dst", str(tmp_path / "c")]) == 0
    assert __file__ in seen[0] and warnings.formatwarning is before


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_given_before_or_after_the_command(where, tmp_path):
    from jambatalk.errors import InputError

    args = ["animate", str(tmp_path / "nope.wav"), "--out", str(tmp_path / "x.npy")]
    with pytest.raises(InputError, match="does not exist"):  # raised, not turned into one line
        _run(*(["--debug", *args] if where == "before" else [*args, "--debug"]))


def test_a_clip_keeps_its_frames_and_their_speech_in_step(model_dir, wav):
    anim = animate(wav, model=model_dir)
    part = anim.clip(0.5, 1.3)
    times = np.arange(len(anim)) / anim.fps
    first, stop = np.flatnonzero((times >= 0.5) & (times < 1.3))[[0, -1]] + [0, 1]  # the frames in [0.5, 1.3) s
    np.testing.assert_array_equal(part.vertices, anim.vertices[first:stop])
    a, b = (round(i / anim.fps * 16000) for i in (first, stop))
    np.testing.assert_array_equal(part.audio, anim.audio[a:b])
    assert len(part.audio) == round(part.duration * 16000) and part.fps == anim.fps
    part.vertices[:] = 0  # copies: the animation it came from is untouched
    assert np.abs(anim.vertices[first:stop]).max() > 0
    tail = anim.clip(anim.duration - 0.2)  # to the end
    assert len(tail) == round(0.2 * anim.fps) and len(tail.audio) == len(anim.audio) - round(
        (len(anim) - len(tail)) / anim.fps * 16000)
    for args, match in [((1.0, 0.5), "not a span"), ((anim.duration + 1,), "not a span"), (("1",), "not a number"),
                        ((0.0, float("nan")), "not a number"), ((0.001, 0.002), "holds no frame")]:
        with pytest.raises(InputError, match=match):
            anim.clip(*args)
