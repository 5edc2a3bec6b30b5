"""Bad input to the Python API, the stream, the renderer's command and model loading: an error of jambatalk's
own (naming the problem and the fix), not a hang, a bare Python exception or silently wrong output."""

import re

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import grid_mesh

from jambatalk.api import Animation, animate, load_model
from jambatalk.audio import load_audio
from jambatalk.cli import main
from jambatalk.config import model_preset
from jambatalk.errors import CheckpointError, InputError
from jambatalk.mesh import load_template, save_mesh
from jambatalk.model import JambaTalk
from jambatalk.render.cli import load_sequence
from jambatalk.stream import Stream
from jambatalk.synth import espeak


@pytest.fixture(scope="module")
def speech():
    t = np.arange(16000) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_implausible_sample_rates_are_refused(tmp_path, speech):
    path = tmp_path / "one_hertz.wav"
    sf.write(path, speech[:1600], 1)  # 1600 samples at 1 Hz: 27 minutes, 100 MB once resampled
    with pytest.raises(InputError, match=r"sampling rate 1 Hz is outside.*header is damaged"):
        load_audio(path)
    for rate in (100, 10_000_000):
        with pytest.raises(InputError, match=rf"sampling rate {rate} Hz is outside.*sample_rate=16000"):
            load_audio(speech, rate)
    assert len(load_audio(speech, 8000)) == 32000 and len(load_audio(speech[:4800], 48000)) == 1600


def test_absurd_frame_rates_are_refused(model_dir, speech):
    with pytest.raises(InputError, match=r"fps 1e\+06 is above the 1000 frames per second.*e\.g\. 30"):
        animate(speech[:1600], model=model_dir, sample_rate=16000, fps=1e6)
    assert len(animate(speech, model=model_dir, sample_rate=16000, fps=1000)) == 1000


@pytest.mark.parametrize("device", ["mps", "xla", "meta", "hip", "vulkan", "cpu:5"])
def test_unavailable_devices_are_refused(model_dir, device):
    with pytest.raises(InputError, match=rf"device '{device}' is not available here; use cpu \(or cuda"):
        load_model(model_dir, device=device)
    assert load_model(model_dir, device="cpu:0").device.type == "cpu"


@pytest.mark.parametrize("faces, message", [
    (torch.tensor([[0, 1, 999999]]), r"faces indexing vertex 999999, but its meshes have 64 vertices \(0 to 63\)"),
    (torch.tensor([[-1, 1, 2]]), r"faces indexing vertex -1"),
    (torch.zeros(10, 3), r"faces of dtype float32 and shape \(10, 3\), not \(F, 3\) integer vertex indices"),
    (torch.zeros(10, 4, dtype=torch.long), r"faces of dtype int64 and shape \(10, 4\)"),
])
def test_checkpoint_faces_are_checked_against_its_vertices(model_dir, tmp_path, faces, message):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "bad_faces"
    shutil.copytree(model_dir, folder)
    state = load_file(folder / "model.safetensors")
    state["faces"] = faces
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "jambatalk-model"})
    with pytest.raises(CheckpointError, match=message + ".*re-export it"):
        load_model(folder)


@pytest.fixture(scope="module")
def stream_model():
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    cfg.decoder.attention_span = "window"
    cfg.decoder.window, cfg.decoder.lookahead = 12, 2
    return JambaTalk(cfg).eval()


def test_stream_takes_samples_and_refuses_what_is_not(stream_model, speech):
    stream = Stream(stream_model)
    for bad in ("abc", "speech.wav"):
        with pytest.raises(InputError, match=r"Stream.push takes audio samples .*not a file name.*load_audio"):
            stream.push(bad)
    with pytest.raises(InputError, match=r"Stream.push takes audio samples .*not dict"):
        stream.push({"a": 1})
    half = torch.tensor(speech).bfloat16()  # numpy has no bfloat16: taken as float32
    np.testing.assert_array_equal(stream.push(half), Stream(stream_model).push(half.float().numpy()))
    with pytest.raises(InputError, match=r"Stream.offline contains NaN or infinite samples"):
        stream.offline(np.where(np.arange(16000) == 5, np.nan, speech))
    assert stream.offline(half).shape == (25, 64, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"lookahead": "0.3"}, r"Stream lookahead is '0.3', not a number; pass lookahead in seconds, e.g. 0.3"),
    ({"block": None}, r"Stream block is None, not a number"),
    ({"subject": 5}, r"subject=5 was given, but this model was trained without subjects.*leave subject out"),
])
def test_stream_settings_are_checked(stream_model, kwargs, message):
    with pytest.raises(InputError, match=message):
        Stream(stream_model, **kwargs)


def test_stream_subject_must_be_one_of_the_models(speech):
    cfg = model_preset("tiny")
    cfg.decoder.attention_span, cfg.n_subjects = "causal", 3
    model = JambaTalk(cfg).eval()
    for bad in (3, -1, 1.0, True):
        with pytest.raises(InputError, match=r"is not one of this model's 3 speaking styles.*from 0 to 2"):
            Stream(model, subject=bad)
    assert Stream(model, subject=2).offline(speech).shape == (25, 64, 3)


def test_a_list_of_clips_and_a_rate_given_for_a_file(speech, tmp_path):
    """Three clips in a list were read as three channels and mixed into one; clips of unequal length raised
    numpy's ValueError (inhomogeneous shape); sample_rate given with a file was dropped without a word."""
    for clips in ([speech, speech, speech], (speech[:800], speech[:400]), [list(speech[:10]), list(speech[:10])]):
        with pytest.raises(InputError, match=r"the audio is a (list|tuple) of \d arrays: it would be mixed into one "
                                             r"clip; animate one clip per call.*np\.stack\(channels\)"):
            load_audio(clips, 16000)
    np.testing.assert_array_equal(load_audio(list(speech[:800]), 16000), speech[:800])  # a list of samples: a clip
    path = tmp_path / "speech.wav"
    sf.write(path, speech, 16000)
    with pytest.warns(UserWarning, match=r"sample_rate=8000 was given for audio file '.*', which is read at its "
                                         r"own rate, 16000 Hz"):
        np.testing.assert_array_equal(load_audio(path, 8000), load_audio(path))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(path, 16000)  # the file's own rate: nothing to say


def test_predict_checks_its_arguments_as_animate_and_stream_do(speech):
    """predict read stereo as one interleaved clip twice as long, took int16 unscaled and NaN samples, and raised
    torch's IndexError / RuntimeError for a subject or frame count out of range; audio shorter than a frame gave
    no frames or torch's RuntimeError, and empty audio with n_frames gave motion from nothing."""
    cfg = model_preset("tiny")
    cfg.n_subjects = 2
    model = JambaTalk(cfg).eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.1)
    pcm = np.round(speech * 32767).astype(np.int16)
    np.testing.assert_allclose(model.predict(pcm), model.predict(pcm / np.float32(32768)), rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="as large as 1e\\+20"):
        model.predict(np.full(1600, 1e20, np.float32))
    for bad, message in [
        (np.stack([speech, speech], 1), r"predict takes a 1-D array of 16 kHz mono samples, got shape \(16000, 2\)"),
        (np.full(1600, np.nan, np.float32), "the audio given to predict contains NaN"),
        ("speech.wav", r"predict takes audio samples .* not a file name.*jambatalk.load_audio\(path\)"),
        # less than a frame gave 0 frames, or torch's 'Input and output sizes should be greater than 0' at 639 samples
        (speech[:639], r"the audio lasts 39.9 ms, shorter than one frame \(40.0 ms at 25 fps\).*or n_frames"),
        (speech[:100], "the audio lasts 6.2 ms, shorter than one frame"),
        (speech[:0], "the audio is empty"),
    ]:
        with pytest.raises(InputError, match=message):
            model.predict(bad)
    with pytest.raises(InputError, match="the audio is empty"):  # n_frames of motion from no speech at all
        model.predict(speech[:0], n_frames=5)
    assert model.predict(speech[:640]).shape == (1, 64, 3) and model.predict(speech[:100], n_frames=2).shape[0] == 2
    for kwargs, message in [
        ({"n_frames": 0}, "n_frames is 0; pass a whole number of frames >= 1"),
        ({"n_frames": 2.5}, "n_frames is 2.5"),
        ({"subject": 2}, r"subject 2 is not one of this model's 2 speaking styles.*from 0 to 1"),
        ({"subject": 1.0}, r"subject 1.0 is not one of this model's 2 speaking styles"),
        ({"window_seconds": 0}, r"window_seconds \(0\) must be at least 1 s and 0.5 s more than twice context_seconds"),
        ({"window_seconds": 4, "context_seconds": 2}, r"window_seconds \(4\) must be at least 1 s"),
        ({"context_seconds": -1}, r"context_seconds is -1; pass context_seconds as a number of seconds >= 0"),
    ]:
        with pytest.raises(InputError, match=message):
            model.predict(speech, **kwargs)
    assert model.predict(speech, n_frames=np.int64(7), subject=np.int64(1)).shape == (7, 64, 3)
    cfg.n_subjects = 0
    with pytest.raises(InputError, match=r"subject=0 was given, but this model was trained without subjects"):
        JambaTalk(cfg).predict(speech, subject=0)


def test_predict_in_one_thread_does_not_change_predict_in_another():
    """predict's attention limit for long audio was set on the model's shared layers, reaching other threads."""
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(0)
    model = JambaTalk(model_preset("tiny")).eval()  # bidirectional attention
    with torch.no_grad():
        model.head.weight.normal_(std=0.1)
    audio = torch.randn(1, 3 * 16000, generator=torch.Generator().manual_seed(1)) * 0.1  # 75 frames

    def run():
        with torch.no_grad():
            return model(audio).vertices

    alone = run()
    with model.long_context(5), ThreadPoolExecutor(1) as pool:  # as a long predict() in this thread sets it
        other = pool.submit(run).result()
        limited = run()
    torch.testing.assert_close(other, alone, rtol=0, atol=0)
    assert (limited - alone).abs().max() > 1e-4  # the limit does apply in its own thread
    torch.testing.assert_close(run(), alone, rtol=0, atol=0)  # and ends with the block


def test_bfloat16_tensors_and_open_files_are_taken(model_dir, speech, tmp_path):
    base = animate(speech, model=model_dir, sample_rate=16000)
    half = torch.tensor(speech).bfloat16()  # numpy has no bfloat16: taken as float32
    np.testing.assert_array_equal(load_audio(half, 16000), load_audio(half.float(), 16000))
    tpl = animate(half, torch.tensor(base.template).bfloat16(), model=model_dir, sample_rate=16000)
    assert tpl.vertices.shape == base.vertices.shape and np.isfinite(tpl.vertices).all()
    path = tmp_path / "speech.wav"
    sf.write(path, speech, 16000)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(animate(f, model=model_dir).vertices, animate(path, model=model_dir).vertices)
    with open(path) as f, pytest.raises(InputError, match=r"was opened in text mode.*open\(path, 'rb'\)"):
        load_audio(f)
    with open(path, "rb") as f:  # past the header: no longer an audio file
        f.seek(100)
        with pytest.raises(InputError, match="could not be read as audio"):
            load_audio(f)
    # a file's bytes (they were taken for an array, then refused for its missing sampling rate)
    data = path.read_bytes()
    for raw in (data, bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(load_audio(raw), load_audio(path))
    with pytest.raises(InputError, match=r"audio bytes \(7 bytes\) could not be read as audio"):
        load_audio(b"RIFF...")
    for empty in ("", " "):  # "" was read as ".", then refused as a folder
        with pytest.raises(InputError, match="the audio file name is empty"):
            load_audio(empty)


def test_a_ragged_template_is_refused(model_dir, speech):
    with pytest.raises(InputError, match=r"template is not a \(V, 3\) array: its rows differ in length"):
        animate(speech, [[0.0, 0.0, 0.0], [1.0, 2.0]], model=model_dir, sample_rate=16000)


def test_animation_load_refuses_what_save_did_not_write(model_dir, speech, tmp_path):
    anim = animate(speech, model=model_dir, sample_rate=16000)
    anim.save(tmp_path / "motion.npy")
    np.savez(tmp_path / "other.npz", vertices=anim.vertices)
    (tmp_path / "notes.txt").write_text("hello")
    np.savez(tmp_path / "fps.npz", vertices=anim.vertices, template=anim.template, faces=anim.faces,
             fps=np.array("fast"), audio=anim.audio)
    for name, message in [("motion.npy", r"holds one array \(a \.npy\), not an animation"),
                          ("missing.npz", r"animation file '.*missing.npz' does not exist; check the path"),
                          ("notes.txt", r"'.*notes.txt' is not a readable \.npz file"),
                          ("other.npz", r"has no template, faces, fps, audio \(it has: vertices\)"),
                          ("fps.npz", r"stores fps 'fast', not a positive frame rate"),
                          (".", r"is a folder, not an animation file")]:
        with pytest.raises(InputError, match=message) as info:
            Animation.load(tmp_path / name)
        assert "allow_pickle" not in str(info.value)  # numpy's advice about pickles does not apply
    anim.save(tmp_path / "whole.npz")
    back = Animation.load(str(tmp_path / "whole.npz"))
    assert back.fps == anim.fps and np.array_equal(back.vertices, anim.vertices)
    with open(tmp_path / "whole.npz", "rb") as f:
        assert np.array_equal(Animation.load(f).audio, anim.audio)


def test_save_and_load_model_refuse_arguments_of_the_wrong_kind(model_dir, speech, tmp_path):
    anim = animate(speech, model=model_dir, sample_rate=16000)
    with pytest.raises(InputError, match=r"mesh_format is 123; pass '\.obj' or '\.ply'"):
        anim.save(tmp_path / "frames", mesh_format=123)
    for name in ("one.npy", "one.npz"):  # the format was ignored: one file written, not the meshes asked for
        with pytest.raises(InputError, match=r"mesh_format='ply' was given, but '.*' is one \.np. file.*leave "
                                             r"mesh_format out, or save to a folder name without extension"):
            anim.save(tmp_path / name, mesh_format="ply")
        assert not (tmp_path / name).exists()
    with pytest.raises(InputError, match=r"the path to save to is None, not a file or folder name; pass a str or Path"):
        anim.save(None)
    with pytest.raises(InputError, match=r"the path to load is 5, not a file name"):
        Animation.load(5)
    with pytest.raises(InputError, match=r"the model path is 123, not a folder name; pass a model folder"):
        load_model(123)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fps, shown", [("30", "'30'"), (0.0, "0.0"), (-5, "-5"), ([24, 25], r"\[24, 25\]")])
def test_render_refuses_a_stored_fps_that_is_not_a_frame_rate(tmp_path, capsys, fps, shown):
    v, f = grid_mesh()
    np.savez(tmp_path / "seq.npz", vertices=np.stack([v, v]), faces=f, fps=np.array(fps))
    with pytest.raises(InputError, match=rf"stores fps {shown}, not a positive frame rate; store one, e\.g\."):
        load_sequence(tmp_path / "seq.npz")
    args = ["render", str(tmp_path / "seq.npz"), "--template", str(tmp_path / "t.npy"),
            "--out", str(tmp_path / "a.mp4")]
    assert main(args) == 2
    assert "error: " in capsys.readouterr().err and not (tmp_path / "a.mp4").exists()


def test_render_says_a_folder_is_a_folder(tmp_path, capsys):
    assert main(["render", str(tmp_path), "--template", "t.ply", "--out", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err
    assert f"jambatalk render: error: sequence '{tmp_path}' is a folder, not a .npy or .npz file" in err


def test_samples_out_of_audio_range_blame_the_audio(model_dir, speech, tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(path, np.full(16000, 3e38, np.float32) * np.sign(speech + 1e-9), 16000, subtype="FLOAT")
    with pytest.raises(InputError, match=rf"audio file '{path}' has samples as large as 3e\+38, out of range for "
                                         r"audio.*scale it into \[-1, 1\]"):
        animate(path, model=model_dir)
    with pytest.raises(InputError, match=r"audio array has samples as large as 1e\+20"):
        load_audio(speech / np.abs(speech).max() * 1e20, 16000)
    with pytest.warns(UserWarning, match="integer samples stored as floats, read as 16-bit PCM"):
        anim = animate(speech * 32768, model=model_dir, sample_rate=16000)  # int16 PCM held as floats
    assert len(anim) == 25 and np.abs(anim.audio).max() <= 1.0


@pytest.mark.parametrize("argv, message", [
    (["--text", ""], r"--text is empty; pass a sentence to synthesise, or leave --text out"),
    (["--text", "   "], r"--text is empty"),
    (["--audio", "speech.wav", "--text", "Hello."], r"--audio and --text were both given"),
])
def test_demo_refuses_empty_or_competing_speech(tmp_path, capsys, argv, message):
    assert main(["demo", "--out", str(tmp_path / "demo.mp4"), *argv]) == 2
    assert re.search(r"^jambatalk demo: error: " + message, capsys.readouterr().err)
    assert not list(tmp_path.iterdir())


def test_demo_refuses_a_bad_size_or_name_before_it_makes_speech(tmp_path, capsys, monkeypatch):
    """--size 0 was refused after the speech was synthesised and animated; --out without an extension said 'not
    ""'."""
    import jambatalk.synth

    def speak(*args, **kwargs):
        raise AssertionError("the speech was made before the arguments were checked")

    monkeypatch.setattr(jambatalk.synth, "speak", speak)
    assert main(["demo", "--out", str(tmp_path / "demo.mp4"), "--size", "0"]) == 2
    assert "image size 0x0 is outside" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "demo_noext")]) == 2
    assert f"--out '{tmp_path / 'demo_noext'}' is not an .mp4 file; pass --out NAME.mp4" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_render_names_one_mesh_given_as_a_sequence(tmp_path, capsys):
    v, f = grid_mesh()
    save_mesh(tmp_path / "grid.ply", v, f)
    np.save(tmp_path / "one.npy", v.astype(np.float32))
    assert main(["render", str(tmp_path / "one.npy"), "--template", str(tmp_path / "grid.ply"),
                 "--out", str(tmp_path / "one.mp4")]) == 2
    err = capsys.readouterr().err
    assert f"holds one mesh of shape ({len(v)}, 3), which reads as {len(v)} frames of one vertex" in err
    assert f"one frame alone as shape (1, {len(v)}, 3)" in err


@pytest.mark.skipif(not espeak.available(), reason="libespeak-ng is not installed")
def test_demo_says_a_sentence_without_words_synthesised_to_almost_nothing(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo.mp4"), "--text", "..."]) == 2
    assert "--text '...' synthesised to almost nothing" in capsys.readouterr().err


def test_rendering_a_mesh_without_extent_says_so(tmp_path, capsys):
    v, f = grid_mesh()
    save_mesh(tmp_path / "grid.ply", v, f)
    np.save(tmp_path / "zeros.npy", np.zeros((3, len(v), 3), np.float32))
    out = tmp_path / "zeros.mp4"
    assert main(["render", str(tmp_path / "zeros.npy"), "--template", str(tmp_path / "grid.ply"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot fit a camera to the mesh: all its 64 vertices are at one point (0, 0, 0)" in err
    assert "znear" not in err and not out.exists()


def test_a_training_run_folder_names_its_checkpoints(model_dir, speech, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "best")
    shutil.copytree(model_dir, run / "last")
    sf.write(tmp_path / "speech.wav", speech, 16000)
    out = tmp_path / "motion.npy"
    assert main(["animate", str(tmp_path / "speech.wav"), "--checkpoint", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"'{run}' is a training run folder, not a model folder; pass one of its checkpoints: '{run / 'best'}' " \
           f"(or '{run / 'last'}', the latest)" in err and not out.exists()
    shutil.rmtree(run / "best")
    with pytest.raises(CheckpointError, match=rf"pass one of its checkpoints: '{run / 'last'}'$"):
        load_model(run)


@pytest.mark.parametrize("name", ["/nonexistent/w2v", "./no/such/w2v", "no/such/w2v"])
def test_a_missing_pretrained_encoder_folder_is_named_missing(name):
    from jambatalk.model.audio_encoder import AudioEncoder

    cfg = model_preset("tiny").audio
    cfg.pretrained = name
    with pytest.raises(CheckpointError, match=rf"pretrained audio encoder folder '{name}' does not exist; check "
                                              r"model.audio.pretrained") as info:
        AudioEncoder(cfg)
    assert "huggingface-cli download" not in str(info.value)


def test_an_obj_face_with_vertex_index_0_is_refused(tmp_path):
    v, f = grid_mesh()
    save_mesh(tmp_path / "grid.obj", v, f)
    assert np.array_equal(load_template(tmp_path / "grid.obj")[1], f)
    lines = (tmp_path / "grid.obj").read_text().splitlines()
    for i, face in enumerate(["f 0 2 9", "f 1/1 2/2 0/3"]):
        path = tmp_path / f"zero{i}.obj"
        path.write_text("\n".join(lines[:-1] + [face]) + "\n")
        with pytest.raises(InputError, match=rf"mesh '{path}' has a face with vertex index 0, but OBJ counts "
                                             r"vertices from 1"):
            load_template(path)


def test_a_wav_file_cut_short_is_warned_about(speech, tmp_path):
    import warnings

    path = tmp_path / "whole.wav"
    sf.write(path, np.concatenate([speech, speech]), 16000, subtype="PCM_16")  # 2 s
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_audio(path)) == 32000
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[:44 + 32000])  # the header and 1 s of 16-bit samples
    with pytest.warns(UserWarning, match=rf"audio file '{cut}' is cut short: its header announces 2.00 s of audio "
                                         r"but the file holds 1.00 s; animating what is there"):
        assert len(load_audio(cut)) == 16000


@pytest.mark.parametrize("mono", [True, False], ids=["mono", "stereo"])
def test_an_mp3_file_cut_short_is_warned_about_in_one_line(speech, tmp_path, capfd, mono):
    import subprocess
    import warnings

    import imageio_ffmpeg

    wav = tmp_path / "whole.wav"
    samples = np.tile(speech, 3)  # 3 s
    sf.write(wav, samples if mono else np.stack([samples, samples], 1), 16000, subtype="PCM_16")
    path = tmp_path / "whole.mp3"  # an ID3 tag, then a frame with the Info header LAME writes (frame and byte counts)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(wav), str(path)], check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole = load_audio(path)
    cut = tmp_path / "cut.mp3"
    data = path.read_bytes()
    cut.write_bytes(data[:len(data) // 3])
    capfd.readouterr()
    with pytest.warns(UserWarning, match=rf"audio file '{cut}' is cut short: its header announces 3.\d\d s of audio "
                                         r"but the file holds about (\d.\d\d) s; animating what is there") as caught:
        part = load_audio(cut)
    held = float(re.search(r"about (\d.\d\d) s", str(caught[0].message)).group(1))
    assert abs(held - len(part) / 16000) < 0.15 and len(part) < 0.5 * len(whole)
    assert capfd.readouterr().err == ""  # no line of the decoder's own about it


def test_templates_the_model_cannot_animate_are_refused_and_other_faces_of_its_mesh_are_not(tmp_path, speech,
                                                                                            capsys):
    """A template with the model's vertex count but another vertex order, or in millimetres, gave a shredded or
    frozen face with exit 0; another person's face on the model's mesh still animates."""
    from jambatalk.synth.corpus import _speaker_template
    from jambatalk.synth.head import default_head
    from jambatalk.synth.speakers import SPEAKERS

    head = default_head()
    perm = np.random.default_rng(0).permutation(head.n_vertices)
    save_mesh(tmp_path / "shuffled.ply", head.vertices[perm], np.argsort(perm)[head.faces])
    np.save(tmp_path / "shuffled.npy", head.vertices[perm])
    save_mesh(tmp_path / "mm.ply", head.vertices * 1000, head.faces)
    save_mesh(tmp_path / "turned.ply", head.vertices * [-1, 1, -1], head.faces)
    save_mesh(tmp_path / "grown.ply", head.vertices * 1.8, head.faces)  # was refused as 'another order'
    save_mesh(tmp_path / "shrunk.ply", head.vertices * 0.5, head.faces)  # was animated, its lips moving twice as far
    np.save(tmp_path / "zeros.npy", np.zeros_like(head.vertices))  # was a ZeroDivisionError
    lips = np.asarray(head.regions["lips"])  # some vertices in another order: lips torn, exit 0
    part = np.arange(head.n_vertices)
    part[lips] = np.random.default_rng(1).permutation(lips)
    save_mesh(tmp_path / "lips_shuffled.ply", head.vertices[part], np.argsort(part)[head.faces])
    two = np.arange(head.n_vertices)
    two[[lips[0], lips[-1]]] = two[[lips[-1], lips[0]]]
    np.save(tmp_path / "two_swapped.npy", head.vertices[two])
    cases = {"shuffled.ply": r"shuffled.ply' has the model's \d+ vertices but other faces \(\d% of its edges are the "
                             r"model's\): its vertices are in another order", "shuffled.npy": "lie far from where",
             "mm.ply": "in millimetres, where the model's is in metres", "turned.ply": "or it is turned",
             "grown.ply": r"1.8 times the size of the model's own .*would move it too little",
             "shrunk.ply": r"0.5 times the size of the model's own .*would move it too much",
             "zeros.npy": r"has all its \d+ vertices at one point \(0, 0, 0\)",
             "lips_shuffled.ply": r"has \d{3} vertices far from their neighbours on the model's mesh",
             "two_swapped.npy": rf"has 2 vertices far from their neighbours .*vertices {min(lips[0], lips[-1])}, "
                                rf"{max(lips[0], lips[-1])}\): some of its vertices are in another order"}
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech, 16000)
    for name, match in cases.items():
        with pytest.raises(InputError, match=match):
            animate(speech, tmp_path / name, sample_rate=16000)
        with pytest.raises(InputError, match=match):
            Stream(template=tmp_path / name)
        out = tmp_path / f"{name}.npy"
        assert main(["animate", str(wav), "--template", str(tmp_path / name), "--out", str(out)]) == 2
        assert re.search(match, capsys.readouterr().err) and not out.exists()
    other = _speaker_template(head, SPEAKERS["spk02"])
    save_mesh(tmp_path / "other.ply", other, head.faces)
    anim = animate(speech, tmp_path / "other.ply", sample_rate=16000)
    assert np.array_equal(anim.template, other) and np.abs(anim.vertices - other).max() > 1e-3


def test_a_template_whose_polygons_are_split_into_other_triangles_is_the_same_mesh(tmp_path, speech):
    """A quad mesh exported with its quads split along the other diagonal was refused as 'another vertex order'."""
    from jambatalk.synth.head import default_head

    head = default_head()
    faces = head.faces.copy()
    seen, flipped = set(), 0
    edge_to_face = {}
    for i, f in enumerate(faces):
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            edge_to_face.setdefault((min(a, b), max(a, b)), []).append(i)
    for (a, b), pair in edge_to_face.items():  # flip the shared edge of disjoint pairs of triangles
        if len(pair) != 2 or seen & set(pair) or flipped >= len(faces) // 4:
            continue
        (i, j), seen = pair, seen | set(pair)
        c = next(int(x) for x in faces[i] if x not in (a, b))
        d = next(int(x) for x in faces[j] if x not in (a, b))
        ca, cb = list(faces[i]).index(a), list(faces[i]).index(b)
        first, second = (a, b) if (cb - ca) % 3 == 1 else (b, a)  # keep the winding of triangle i
        faces[i], faces[j] = [first, d, c], [d, second, c]
        flipped += 1
    save_mesh(tmp_path / "resplit.ply", head.vertices, faces)
    anim = animate(speech, tmp_path / "resplit.ply", sample_rate=16000)
    assert flipped > 500 and np.array_equal(anim.faces, faces)


def test_arguments_that_would_be_ignored_or_misread_are_refused(tmp_path, speech, capsys):
    """--chunk-ms without --stream and --mesh-format with a one-file --out were ignored; a chunk shorter than a
    sample was reported as that length; animate(None) asked for a sampling rate; synth took --workers -2."""
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech, 16000)
    for args, match in ((["--chunk-ms", "50"], "--chunk-ms sets the chunks of --stream, which was not given"),
                        (["--mesh-format", "ply"], "--mesh-format sets the files of a folder"),
                        (["--stream", "--chunk-ms", "0.001"], "--chunk-ms 0.001 is shorter than one sample (0.0625 ms")):
        capsys.readouterr()
        assert main(["animate", str(wav), "--out", str(tmp_path / "a.npy"), *args]) == 2
        assert match in capsys.readouterr().err, args
    assert not (tmp_path / "a.npy").exists()
    for audio in (None, 5):
        with pytest.raises(InputError, match=f"the audio is {audio}; pass a speech file's path"):
            animate(audio)
    assert main(["synth", "--dst", str(tmp_path / "c"), "--workers", "-2"]) == 2
    assert "workers is -2" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_a_mistyped_option_is_named_with_the_commands_usage_and_the_option_meant(capsys):
    """An option a command does not take was reported under the top-level usage, which lists no command's options."""
    for argv, usage, hint in ((["animate", "x.wav", "--out", "a.npy", "--tempalte", "t.ply"], "jambatalk animate",
                               "(did you mean --template?)"),
                              (["train", "--config", "c.yaml", "--reusme"], "jambatalk train", "(did you mean --resume?)"),
                              (["render", "s.npy", "--out", "v.mp4", "--zzz"], "jambatalk render", None),
                              (["--zzz"], "jambatalk", None)):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"usage: {usage} " in err, argv
        assert f"{usage}: error: unrecognized arguments:" in err and (hint in err if hint else "did you mean" not in err)
