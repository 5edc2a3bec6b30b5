"""The one audio loader: files of any format / rate / channel count and arrays -> 16 kHz mono float32."""

import subprocess

import numpy as np
import pytest
import soundfile as sf
from conftest import real_file

from jambatalk.audio import SAMPLE_RATE, load_audio, to_mono_float
from jambatalk.errors import InputError


@pytest.mark.parametrize("name,sr,channels,seconds", [
    ("voca_test_sentence_22k.wav", 22000, 1, 5.1),
    ("faceformer_test_44k.wav", 44100, 1, 11.5),
    ("codetalker_man_44k_stereo.wav", 44100, 2, 12.7),
    ("selftalk_test_16k_21s.wav", 16000, 1, 21.4),
])
def test_real_files_load_as_16k_mono(name, sr, channels, seconds):
    path = real_file(name)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels) == (sr, channels)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - info.frames * SAMPLE_RATE / sr) <= 2
    assert abs(len(audio) / SAMPLE_RATE - seconds) < 0.1
    assert 0.01 < np.abs(audio).max() <= 1.0


def _tone(sr, seconds=0.5, freq=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _ffmpeg(src, dst):
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), str(dst)], check=True)


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3", "wav8", "wavfloat", "wav32"])
def test_format_variants(tmp_path, fmt):
    sr = 24000
    tone = _tone(sr)
    wav = tmp_path / "ref.wav"
    sf.write(wav, tone, sr, subtype="PCM_16")
    if fmt == "mp3":
        path = tmp_path / "x.mp3"
        _ffmpeg(wav, path)
    elif fmt in ("flac", "ogg"):
        path = tmp_path / f"x.{fmt}"
        sf.write(path, tone, sr)
    else:
        subtype = {"wav8": "PCM_U8", "wavfloat": "FLOAT", "wav32": "PCM_32"}[fmt]
        path = tmp_path / "x.wav"
        sf.write(path, tone, sr, subtype=subtype)
    audio = load_audio(path)
    ref = load_audio(tone, sample_rate=sr)
    n = min(len(audio), len(ref))
    assert abs(len(audio) - len(ref)) < 0.05 * SAMPLE_RATE  # mp3 adds codec padding
    if fmt == "mp3":  # lossy and delayed: compare energy
        assert abs(np.sqrt(np.mean(audio**2)) - np.sqrt(np.mean(ref**2))) < 0.05
    else:
        tol = 0.02 if fmt in ("wav8", "ogg") else 1e-3
        assert np.max(np.abs(audio[:n] - ref[:n])) < tol


def test_arrays_int_and_channel_layouts():
    tone = _tone(16000)
    as_int16 = (tone * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(as_int16, sample_rate=16000), tone, atol=1e-4)
    stereo_nc = np.stack([tone, tone], axis=1)  # (N, C)
    stereo_cn = stereo_nc.T  # (C, N)
    np.testing.assert_allclose(load_audio(stereo_nc, sample_rate=16000), tone, atol=1e-6)
    np.testing.assert_allclose(load_audio(stereo_cn, sample_rate=16000), tone, atol=1e-6)
    u8 = np.array([0, 128, 255], dtype=np.uint8)
    np.testing.assert_allclose(to_mono_float(u8), [-1.0, 0.0, 127 / 128], atol=1e-6)


def test_channels_that_cancel_when_mixed_give_their_loudest_channel_with_a_warning(tmp_path):
    """A pair wired out of phase (right = -left) mixed to silence: a still face, without a word."""
    import warnings

    import soundfile as sf

    tone = _tone(16000)
    inverted = np.stack([tone, -0.98 * tone], axis=1)  # the mix is 40 dB under the left channel
    sf.write(tmp_path / "inverted.wav", inverted, 16000, subtype="FLOAT")
    for audio, rate in ((inverted, 16000), (inverted.T, 16000), (tmp_path / "inverted.wav", None)):
        with pytest.warns(UserWarning, match=r"the 2 channels of .* cancel out when mixed to mono .* 40 dB under.*"
                                             r"using channel 1 alone"):
            np.testing.assert_allclose(load_audio(audio, sample_rate=rate), tone, atol=1e-6)
    independent = np.stack([tone, -_tone(16000, freq=660.0)], axis=1)  # other sounds: mixed, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(load_audio(independent, sample_rate=16000), independent.mean(axis=1), atol=1e-6)
        assert not load_audio(np.zeros((800, 2), np.float32), sample_rate=16000).any()  # silence is silence


def test_resampling_keeps_duration_and_pitch():
    sr = 44100
    audio = load_audio(_tone(sr, 1.0, 440.0), sample_rate=sr)
    assert len(audio) == SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(audio) - 440.0) < 2.0


def test_silence_is_valid():
    assert np.all(load_audio(np.zeros(8000, np.float32), sample_rate=16000) == 0)


@pytest.mark.parametrize("bad,match", [
    (np.zeros(0, np.float32), "empty"),
    (np.zeros((0, 2), np.float32), "empty"),  # soundfile's (samples, channels) with no samples
    (np.zeros((1, 0), np.float32), "empty"),
    (np.array([0.1, np.nan, 0.2], np.float32), "non-finite"),
    (np.zeros((2, 3, 4), np.float32), "shape"),
    (np.array(["a", "b"]), "dtype"),
])
def test_bad_arrays(bad, match):
    with pytest.raises(InputError, match=match):
        load_audio(bad, sample_rate=16000)


def test_empty_wav_file_is_refused_as_empty(tmp_path):
    import soundfile as sf

    path = tmp_path / "no_samples.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(InputError, match="is empty"):
        load_audio(path)


def test_array_without_rate():
    with pytest.raises(InputError, match="sample_rate"):
        load_audio(np.zeros(100, np.float32))


def test_missing_and_non_audio_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_audio(tmp_path / "nope.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(InputError, match="could not be read as audio") as err:
        load_audio(junk)
    assert "(soundfile: " in str(err.value) and "; ffmpeg: " in str(err.value)  # both decoders, by name
    with pytest.raises(InputError, match="folder"):
        load_audio(tmp_path)


def test_integer_samples_stored_as_floats_are_read_at_their_level(tmp_path):
    """A float wav (or array) holding int16-range values was kept at that scale: its video's AAC track clipped at
    0 dBFS. It is read as 16-bit PCM, with a warning; floats within [-1, 1] (a little over, too) are untouched."""
    rng = np.random.default_rng(0)
    speech = (rng.normal(size=16000) * 0.1).clip(-0.9, 0.9).astype(np.float32)
    sf.write(str(tmp_path / "i.wav"), speech * 32768, SAMPLE_RATE, subtype="FLOAT")
    with pytest.warns(UserWarning, match=r"i.wav' holds float samples as large as \d+\.?\d*, far outside \[-1, 1\]: "
                      r"integer samples stored as floats, read as 16-bit PCM"):
        loaded = load_audio(tmp_path / "i.wav")
    np.testing.assert_allclose(loaded, speech, atol=1e-6)
    with pytest.warns(UserWarning, match="read as 32-bit PCM"):
        np.testing.assert_allclose(load_audio(speech * 2.0**31, sample_rate=SAMPLE_RATE), speech, atol=1e-6)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_audio(speech * 1.5, sample_rate=SAMPLE_RATE), speech * 1.5)
