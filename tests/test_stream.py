"""Streaming: pushing audio in chunks gives exactly the one-pass output of the same configuration."""

import numpy as np
import pytest
import torch

from jambatalk.config import model_preset
from jambatalk.errors import ConfigError, InputError
from jambatalk.model import JambaTalk
from jambatalk.stream import Stream


def _model(span="window", seed=0):
    torch.manual_seed(seed)
    cfg = model_preset("tiny")
    cfg.audio.feat_extract_norm = "layer"
    cfg.decoder.attention_span = span
    cfg.decoder.window, cfg.decoder.lookahead = 12, 2
    model = JambaTalk(cfg).eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.05)
    return model


def _speechlike(seconds, seed):
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = np.repeat(rng.uniform(0, 1, n // 1600 + 1), 1600)[:n]  # 100 ms loudness steps, some near silent
    return (rng.normal(size=n) * env * 0.2).astype(np.float32)


def _push_all(stream, audio, sizes):
    out, pos, i = [], 0, 0
    while pos < len(audio):
        n = sizes[i % len(sizes)]
        out.append(stream.push(audio[pos: pos + n]))
        pos, i = pos + n, i + 1
    out.append(stream.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("sizes", [[1600], [320, 2000, 17, 4800, 0, 999]])
def test_stream_equals_offline_for_any_chunking(sizes):
    model = _model()
    audio = _speechlike(7.3, 0)
    stream = Stream(model, lookahead=0.2, block=0.4, context=0.6, norm_seconds=3.0)
    streamed = _push_all(stream, audio, sizes)
    offline = stream.offline(audio)
    assert streamed.shape == offline.shape == (int(7.3 * 25), 64, 3)
    diff = float(np.abs(streamed - offline).max())
    print(f"max vertex difference, streamed vs offline: {diff:.2e}")
    assert diff <= 1e-5
    # the output moves: a test on a constant output would prove nothing
    assert float(np.abs(np.diff(offline, axis=0)).max()) > 1e-3


def test_stream_causal_decoder_and_reset():
    model = _model("causal", seed=1)
    audio = _speechlike(3.0, 1)
    stream = Stream(model, lookahead=0.0, block=0.2, context=1.0)
    first = _push_all(stream, audio, [800])
    stream.reset()
    again = _push_all(stream, audio, [3000])
    assert np.abs(first - again).max() <= 1e-5
    assert np.abs(first - stream.offline(audio)).max() <= 1e-5


def test_frames_arrive_within_the_stated_latency():
    model = _model()
    stream = Stream(model, lookahead=0.2, block=0.4, context=0.6)
    audio = _speechlike(6.0, 2)
    chunk, got, lags = 1600, 0, []
    for pos in range(0, len(audio), chunk):
        got += len(stream.push(audio[pos: pos + chunk]))
        heard = (pos + chunk) / 16000  # seconds of audio pushed so far
        # every frame whose time is older than the latency has been emitted
        lags.append(heard - got / stream.fps)
    assert max(lags) <= stream.latency + 1e-6
    assert got > 0 and max(lags) > 0.3  # it does wait for the block and the lookahead


def test_stream_memory_stays_bounded():
    model = _model()
    stream = Stream(model, lookahead=0.2, block=0.4, context=0.6, norm_seconds=2.0)
    audio = _speechlike(30.0, 3)
    sizes = []
    for pos in range(0, len(audio), 1600):
        stream.push(audio[pos: pos + 1600])
        sizes.append((len(stream._buf), stream._feats.shape[0] if stream._feats is not None else 0,
                      sum(getattr(c.mixer, "k", torch.zeros(0, 0, 0)).shape[2] if hasattr(c, "mixer") else 0
                          for c in stream._cache)))
    late = sizes[len(sizes) // 2:]
    assert max(s[0] for s in late) <= 2.0 * 16000 + 16000  # norm window + one block of slack
    assert max(s[1] for s in late) <= 50
    assert max(s[2] for s in late) <= 12 + 2 + 20  # attention keys: window + lookahead + one block of frames
    assert min(s[2] for s in late) > 0


def test_bidirectional_model_refuses_to_stream():
    with pytest.raises(ConfigError, match="bidirectional"):
        Stream(_model("bidirectional"))


def test_bad_pushes_are_refused():
    stream = Stream(_model(), lookahead=0.1)
    with pytest.raises(InputError, match="1-D"):
        stream.push(np.zeros((10, 2), np.float32))
    with pytest.raises(InputError, match="NaN"):
        stream.push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(InputError, match="lookahead"):
        Stream(_model(), lookahead=-1)
    stream.push(np.zeros(4000, np.float32))
    stream.flush()
    with pytest.raises(InputError, match="reset"):
        stream.push(np.zeros(10, np.float32))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((800, 2), np.float32), "1-D.*shape \\(800, 2\\)"),  # stereo: offline read it as one signal twice as long
    (np.zeros((2, 800), np.float32), "1-D"),
    (np.zeros(800, bool), "dtype bool"),
    (np.zeros(800, np.complex64), "dtype complex64"),
    (None, "not None"),
])
def test_push_and_offline_refuse_what_is_not_one_channel_of_samples(bad, match):
    stream = Stream(_model(), lookahead=0.1)
    for take in (stream.push, stream.offline):
        with pytest.raises(InputError, match=match):
            take(bad)


@pytest.mark.filterwarnings("ignore:the speech is quiet")
def test_integer_pcm_is_scaled_into_the_float_range_as_load_audio_scales_it():
    """int16 chunks were taken unscaled (+-32768), so the gate's -60 dBFS floor and the decoder saw other audio."""
    stream = Stream(_model(), lookahead=0.1, silence_gate=True)
    audio = _speechlike(1.5, 3) * 0.003  # quiet speech, under the gate's -60 dBFS floor: a still face
    pcm = np.round(audio * 32767).astype(np.int16)
    want = stream.offline(pcm.astype(np.float32) / 32768)
    np.testing.assert_allclose(stream.offline(pcm), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(_push_all(stream, pcm, [700]), want, rtol=0, atol=1e-5)
    assert np.abs(want - want[:1]).max() == 0


@pytest.mark.filterwarnings("ignore:the speech is quiet")
def test_float_samples_out_of_audio_range():
    """Samples that animate refuses were taken, and their squares overflowed with numpy warnings."""
    stream = Stream(_model(), lookahead=0.1, silence_gate=True)
    for take in (stream.push, stream.offline):
        with pytest.raises(InputError, match="as large as 1e\\+20"):
            take(np.full(800, 1e20, np.float32))
    # integer PCM stored as floats: scaled as animate scales it where the whole audio is known
    audio = _speechlike(1.5, 3) * 0.3
    with pytest.warns(UserWarning, match="read as 16-bit PCM"):
        scaled = stream.offline(audio * 32768)
    np.testing.assert_allclose(scaled, stream.offline(audio), rtol=0, atol=1e-5)
    # ... and refused in a stream, whose chunks' scale would depend on the chunking
    with pytest.raises(InputError, match="far outside \\[-1, 1\\].*divide 16-bit values by 32768"):
        stream.push(audio * 32768)
    np.testing.assert_allclose(_push_all(stream, audio, [8000]), stream.offline(audio), rtol=0, atol=1e-5)


def test_cli_animate_stream_reports_latency_and_matches_offline(tmp_path, capsys):
    import soundfile as sf

    from jambatalk.cli import main

    model = _model()
    model.set_template(np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * 0.1)
    model.save_pretrained(tmp_path / "model")
    audio = _speechlike(4.0, 4)
    sf.write(str(tmp_path / "a.wav"), audio, 16000, subtype="FLOAT")
    out = tmp_path / "out.npy"
    assert main(["animate", str(tmp_path / "a.wav"), "--checkpoint", str(tmp_path / "model"), "--stream",
                 "--chunk-ms", "50", "--device", "cpu", "--out", str(out)]) == 0  # (the default: a GPU where one is)
    text = capsys.readouterr().out
    assert "latency bound" in text and "p99" in text and "delay behind live audio" in text
    assert ("keeps up with live audio" in text) != ("FALLS BEHIND live audio" in text)
    ref = Stream(JambaTalk.from_pretrained(tmp_path / "model"), lookahead=0.3).offline(audio)
    assert np.abs(np.load(out) - ref).max() <= 1e-5


def test_live_delays_queue_a_slow_chunk_behind_the_ones_after_it():
    from jambatalk.api import live_delays

    # chunks end at 0.1, 0.2, 0.3, 0.4 s; the second takes 0.3 s, so the next two wait for it
    delays = live_delays([0.05, 0.3, 0.05, 0.05], [0.1, 0.2, 0.3, 0.4])
    assert np.allclose(delays, [0.05, 0.3, 0.25, 0.2])
    # compute shorter than every chunk: each delay is that chunk's own compute
    assert np.allclose(live_delays([0.01, 0.02, 0.03], [0.1, 0.2, 0.3]), [0.01, 0.02, 0.03])


def test_stream_verdict_advises_one_thread_when_the_stream_lags_on_several():
    from jambatalk.api import stream_verdict

    steady, jittery = np.full(100, 5.0), np.r_[np.full(95, 5.0), np.full(5, 600.0)]  # delays behind live audio, ms
    assert stream_verdict(0.2, steady, 100.0, 2) == "keeps up with live audio (compute 20% of the audio's duration)"
    lagging = stream_verdict(0.5, jittery, 100.0, 2)
    assert lagging.startswith("keeps up with live audio (compute 50%") and "1% of its chunks come over 600 ms late, " \
        "more than a chunk; on a machine that other work keeps busy, 2 threads wait on each other: try " \
        "OMP_NUM_THREADS=1" in lagging
    assert "OMP_NUM_THREADS" not in stream_verdict(0.5, jittery, 100.0, 1)  # one thread already
    behind = stream_verdict(1.3, steady, 100.0, 2)
    assert behind.startswith("FALLS BEHIND live audio (compute 130%") and "late" not in behind
    assert behind.endswith("try OMP_NUM_THREADS=1")


def test_cli_stream_refuses_a_bidirectional_model(tmp_path, capsys):
    import soundfile as sf

    from jambatalk.cli import main

    _model("bidirectional").save_pretrained(tmp_path / "model")
    sf.write(str(tmp_path / "a.wav"), _speechlike(1.0, 5), 16000, subtype="FLOAT")
    out = tmp_path / "out.npy"
    code = main(["animate", str(tmp_path / "a.wav"), "--checkpoint", str(tmp_path / "model"), "--stream",
                 "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "cannot stream" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["too_short", "nan_weights"])
def test_cli_stream_refuses_audio_shorter_than_a_frame_and_a_model_predicting_nan(case, tmp_path, capsys):
    """As without --stream: audio shorter than one frame, and a model whose output is not finite, are refused
    with one clear line and exit status 2, and no output is written."""
    import soundfile as sf

    from jambatalk.cli import main

    model = _model()
    if case == "nan_weights":
        with torch.no_grad():
            model.head.bias.fill_(float("nan"))
    model.save_pretrained(tmp_path / "model")
    sf.write(str(tmp_path / "a.wav"), _speechlike(0.03 if case == "too_short" else 1.0, 6), 16000, subtype="FLOAT")
    out = tmp_path / "out.npy"
    code = main(["animate", str(tmp_path / "a.wav"), "--checkpoint", str(tmp_path / "model"), "--stream",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and "Traceback" not in err
    assert ("shorter than one video frame" if case == "too_short" else "non-finite vertices") in err


@pytest.mark.parametrize("kwargs", [{"block": float("inf")}, {"norm_seconds": float("nan")}, {"block": 0.0}])
def test_stream_durations_must_be_positive_and_finite(kwargs):
    with pytest.raises(InputError, match="must be positive"):
        Stream(_model(), **kwargs)
