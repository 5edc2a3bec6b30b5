"""The silence gate: per-frame gains from the speech energy, the same streamed and in one pass."""

import numpy as np
import pytest
import torch

from jambatalk.config import ModelConfig, SilenceGateConfig, model_preset
from jambatalk.errors import ConfigError
from jambatalk.model import JambaTalk
from jambatalk.silence import SilenceGate, silence_gains
from jambatalk.stream import Stream

SR, FPS = 16000, 30.0


def _tone(seconds, db=-20.0, seed=0):
    """A 200 Hz tone whose mean square is ``db`` dB re full scale."""
    t = np.arange(int(round(seconds * SR))) / SR
    return (np.sqrt(2 * 10 ** (db / 10)) * np.sin(2 * np.pi * 200 * t)).astype(np.float32)


def _noise(seconds, db, seed=0):
    n = int(round(seconds * SR))
    return (np.random.default_rng(seed).normal(size=n) * np.sqrt(10 ** (db / 10))).astype(np.float32)


def _frames(seconds):
    return int(round(seconds * FPS))


def test_the_mouth_closes_in_a_long_pause_and_short_gaps_pass():
    # speech 1 s | room noise 1 s | speech 1 s | gap 0.1 s | speech 0.5 s
    audio = np.concatenate([_tone(1.0), _noise(1.0, -70.0), _tone(1.0), np.zeros(1600, np.float32), _tone(0.5)])
    n = int(len(audio) * FPS / SR)
    g = silence_gains(audio, FPS, n)
    assert g.shape == (n,) and g.dtype == np.float32
    assert np.all(g[:30] == 1.0) and np.all(g[60:90] == 1.0) and np.all(g[93:] == 1.0)
    assert np.all(g[90:93] == 1.0), "a 0.1 s gap (within the hold) must not move the mouth"
    # after speech: held for 0.1 s (3 frames), then a linear release over 3 frames to 0
    np.testing.assert_allclose(g[30:36], [1, 1, 1, 2 / 3, 1 / 3, 0], atol=1e-6)
    assert np.all(g[35:57] == 0.0), "the mouth is closed in the pause"
    # the attack: it opens over the 3 frames before the next speech frame
    np.testing.assert_allclose(g[57:60], [1 / 3, 2 / 3, 1], atol=1e-6)


def test_silent_start_digital_silence_and_the_absolute_floor():
    assert not silence_gains(np.zeros(SR, np.float32), FPS, 30).any()
    # quiet noise alone is below the floor (-60 dB): never speech, even though it is its own loudest frame
    assert not silence_gains(_noise(1.0, -70.0), FPS, 30).any()
    audio = np.concatenate([_noise(0.5, -70.0), _tone(0.5)])
    g = silence_gains(audio, FPS, 30)
    assert np.all(g[:12] == 0.0) and g[12] > 0 and np.all(g[15:] == 1.0)


def test_the_threshold_is_relative_to_the_loudest_frame_so_far():
    cfg = SilenceGateConfig(enabled=True, threshold_db=35.0, floor_db=-80.0)
    loud_then_soft = np.concatenate([_tone(0.5, -10.0), _tone(1.0, -40.0, seed=1)])  # 30 dB down: speech
    assert np.all(silence_gains(loud_then_soft, FPS, 45, cfg) == 1.0)
    loud_then_softer = np.concatenate([_tone(0.5, -10.0), _tone(1.0, -50.0, seed=1)])  # 40 dB down: silence
    g = silence_gains(loud_then_softer, FPS, 45, cfg)
    assert np.all(g[:15] == 1.0) and np.all(g[21:] == 0.0)
    # the same soft tone before anything louder was heard counts as speech once it rose from something quieter
    rising = np.concatenate([_tone(0.2, -58.0), _tone(1.0, -50.0)])  # the steady -58 dB tone alone is not
    assert np.all(silence_gains(rising, FPS, 36, cfg)[6:] == 1.0)


def test_room_noise_before_the_first_word_is_no_speech():
    """Before speech the noise of the room was the loudest frame so far, so it counted as speech: a stream
    (normalised with the audio heard so far) moved the mouth as wide as in speech until the first word. Speech
    begins with a frame onset_db above the quietest before it, or one as loud as onset_level_db."""
    words = _speech_with_pauses()
    lead = _noise(2.0, -50.0, 7)
    audio = np.concatenate([lead, words + _noise(len(words) / SR, -50.0, 8)])
    n = int(len(audio) * FPS / SR)
    g = silence_gains(audio, FPS, n)
    old = silence_gains(audio, FPS, n, SilenceGateConfig(enabled=True, onset_db=0.0))
    assert np.all(old[:57] == 1.0)  # the rule before: the noise was speech
    assert np.all(g[:57] == 0.0) and np.all(g[60:78] == 1.0)  # closed until the attack before the first word
    # speech from the first sample (a clip cut from a longer recording) is speech at once: loud ...
    assert np.all(silence_gains(words, FPS, 30)[:18] == 1.0)
    # ... or quiet but rising from quieter frames, and speech in loud noise still moves the mouth
    quiet_words = np.concatenate([_noise(0.1, -55.0, 9), _noise(1.0, -40.0, 10)])
    assert np.all(silence_gains(quiet_words, FPS, 33)[3:] == 1.0)
    noisy = words[: SR] + _noise(1.0, -22.0, 11)  # about 0 dB signal-to-noise, from the first sample
    assert np.all(silence_gains(noisy, FPS, 30) == 1.0)


def test_a_stream_keeps_the_face_still_in_room_noise_before_the_first_word():
    model = _model(gate=True)
    words = _speech_with_pauses()
    audio = np.concatenate([_noise(1.5, -50.0, 7), words + _noise(len(words) / SR, -50.0, 8)])
    stream = Stream(model, lookahead=0.0, block=0.2, context=0.6, norm_seconds=3.0)
    out = np.concatenate([stream.push(audio[pos: pos + 1600]) for pos in range(0, len(audio), 1600)]
                         + [stream.flush()])
    tpl = model.template.numpy()
    fps = stream.fps
    assert np.abs(out[: int(1.35 * fps)] - tpl).max() == 0.0  # still in the noise (1.5 s, less the attack)
    assert np.abs(out[int(1.6 * fps): int(2.0 * fps)] - tpl).max() > 1e-3  # and moving in the first word


@pytest.mark.parametrize("sizes", [[533], [1, 7000, 160, 0, 2999]])
def test_streamed_gains_equal_one_pass(sizes):
    rng = np.random.default_rng(3)
    levels = np.repeat(rng.choice([-70.0, -35.0, -15.0], size=40), 1600)  # 100 ms steps of speech and pauses
    audio = (rng.normal(size=len(levels)) * np.sqrt(10 ** (levels / 10))).astype(np.float32)
    n = int(len(audio) * FPS / SR)
    gate = SilenceGate(SilenceGateConfig(enabled=True), FPS)
    out, pos, i = [], 0, 0
    while pos < len(audio):
        size = sizes[i % len(sizes)]
        gate.push(audio[pos: pos + size])
        out.append(gate.gains())
        pos, i = pos + size, i + 1
    out.append(gate.gains(final=True, n_frames=n))
    streamed = np.concatenate(out)
    one_pass = silence_gains(audio, FPS, n)
    np.testing.assert_array_equal(streamed, one_pass)
    assert 0.0 in one_pass and 1.0 in one_pass and ((one_pass > 0) & (one_pass < 1)).any()


def test_config_is_validated_and_round_trips():
    with pytest.raises(ConfigError, match="silence_gate.hold"):
        SilenceGateConfig(hold=-0.1)
    with pytest.raises(ConfigError, match="unknown config key"):
        ModelConfig(silence_gate={"enable": True})
    cfg = ModelConfig(silence_gate={"enabled": True, "attack": 0.2})
    assert isinstance(cfg.silence_gate, SilenceGateConfig) and cfg.silence_gate.attack == 0.2
    assert not ModelConfig().silence_gate.enabled  # off unless a model asks for it


def _model(gate: bool):
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    cfg.audio.feat_extract_norm = "layer"
    cfg.decoder.attention_span = "window"
    cfg.decoder.window, cfg.decoder.lookahead = 12, 2
    cfg.silence_gate.enabled = gate
    model = JambaTalk(cfg).eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.05)
    model.set_template(np.random.default_rng(0).normal(size=(cfg.n_vertices, 3)).astype(np.float32) * 0.1)
    return model


def _speech_with_pauses():
    return np.concatenate([_noise(0.6, -20.0, 1), _noise(1.0, -75.0, 2), _noise(0.8, -25.0, 3),
                           _noise(0.5, -75.0, 4)])


def test_predict_scales_the_motion_by_the_gains():
    model = _model(gate=True)
    audio = _speech_with_pauses()
    tpl = model.template.numpy()
    gated, raw = model.predict(audio), model.predict(audio, silence_gate=False)
    g = model.silence_gains(audio, len(raw))
    np.testing.assert_allclose(gated, tpl + g[:, None, None] * (raw - tpl), atol=1e-6)
    assert np.abs(raw[g == 0] - tpl).max() > 1e-3  # the raw motion in the pause is not still ...
    assert np.abs(gated[g == 0] - tpl).max() == 0.0  # ... and the gated face rests there
    assert (g == 0).sum() >= 20
    # the model's setting is the default; the argument overrides it both ways
    off = _model(gate=False)
    np.testing.assert_array_equal(off.predict(audio), raw)
    np.testing.assert_allclose(off.predict(audio, silence_gate=True), gated, atol=1e-6)


def test_quiet_speech_that_the_floor_silences_is_warned_about():
    """A quiet recording (peak -43 dBFS): its speech frames under the absolute floor closed the mouth without a
    word. predict now says so, with the loudest level and the share closed; the same speech at full level, with
    its pauses, gets no warning."""
    import warnings

    model = _model(gate=True)
    loud = _speech_with_pauses()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(loud)
    quiet = np.concatenate([_noise(0.2, -75.0, 0), _noise(0.6, -45.0, 1), _noise(0.8, -62.0, 3),
                            _noise(0.6, -45.0, 5)])
    with pytest.warns(UserWarning, match=r"the speech is quiet \(its loudest frame is at -4\d dBFS\).*closed the "
                      r"mouth on speech in (2\d|3\d|4\d)% of the animation \(pauses aside\).*silence_gate=False") \
            as caught:
        gated = model.predict(quiet)
    assert caught[0].filename == __file__  # the caller's line, not torch's no_grad wrapper
    with pytest.warns(UserWarning, match="the speech is quiet") as caught:
        import jambatalk

        jambatalk.animate(quiet, model=model, sample_rate=16000)
    assert caught[0].filename == __file__
    tpl = model.template.numpy()
    still = np.abs(gated - tpl).reshape(len(gated), -1).max(axis=1) == 0
    assert 0.25 < still.mean() < 0.5  # the -62 dBFS middle, speech to the level rule, rests


def test_a_stream_of_quiet_speech_is_warned_about_at_its_flush():
    """Stream warns as predict does, once, over the whole utterance, when it is flushed."""
    import warnings

    model = _model(gate=True)
    quiet = np.concatenate([_noise(0.2, -75.0, 0), _noise(0.6, -45.0, 1), _noise(0.8, -62.0, 3),
                            _noise(0.6, -45.0, 5)])
    for audio, warned in ((_speech_with_pauses(), False), (quiet, True)):
        stream = Stream(model, lookahead=0.0, block=0.2, context=0.6, norm_seconds=3.0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for pos in range(0, len(audio), 1600):
                stream.push(audio[pos: pos + 1600])
            assert not caught  # nothing while the utterance goes on
            stream.flush()
        messages = [str(w.message) for w in caught]
        assert len(messages) == int(warned), messages
        if warned:
            assert "the speech is quiet (its loudest frame is at -4" in messages[0]
            with pytest.warns(UserWarning) as one_pass:
                model.predict(quiet)
            assert str(one_pass[0].message) == messages[0]  # the same share as in one pass
            assert caught[0].filename == __file__  # blames the caller's line
            with pytest.warns(UserWarning) as offline:
                stream.offline(quiet)
            assert offline[0].filename == __file__


def test_gated_stream_equals_its_one_pass_and_states_its_latency():
    model = _model(gate=True)
    audio = _speech_with_pauses()
    stream = Stream(model, lookahead=0.0, block=0.2, context=0.6, norm_seconds=3.0)
    out, pos = [], 0
    for size in [1000, 317, 2400] * 100:
        if pos >= len(audio):
            break
        out.append(stream.push(audio[pos: pos + size]))
        pos += size
    out.append(stream.flush())
    streamed = np.concatenate(out)
    offline = stream.offline(audio)
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() <= 1e-5
    raw = Stream(model, lookahead=0.0, block=0.2, context=0.6, norm_seconds=3.0, silence_gate=False).offline(audio)
    g = model.silence_gains(audio, len(raw))
    tpl = model.template.numpy()
    np.testing.assert_allclose(offline, tpl + g[:, None, None] * (raw - tpl), atol=1e-6)
    assert stream.latency >= (stream.gate.delay + 1) / stream.fps


def test_cli_and_animate_follow_the_model_setting_unless_told(tmp_path):
    import soundfile as sf

    from jambatalk.api import animate
    from jambatalk.cli import main

    model = _model(gate=True)
    model.save_pretrained(tmp_path / "model")
    audio = _speech_with_pauses()
    sf.write(str(tmp_path / "a.wav"), audio, SR, subtype="FLOAT")
    gated, raw = model.predict(audio), model.predict(audio, silence_gate=False)
    assert np.abs(gated - raw).max() > 1e-3
    outs = {}
    for flag in (None, "off", "on"):
        out = tmp_path / f"{flag}.npy"
        extra = [] if flag is None else ["--silence-gate", flag]
        assert main(["animate", str(tmp_path / "a.wav"), "--checkpoint", str(tmp_path / "model"), "--out", str(out),
                     "--device", "cpu", *extra]) == 0  # (the default is a GPU where there is one)
        outs[flag] = np.load(out)
    np.testing.assert_allclose(outs[None], gated, atol=1e-5)
    np.testing.assert_allclose(outs["on"], gated, atol=1e-5)
    np.testing.assert_allclose(outs["off"], raw, atol=1e-5)
    np.testing.assert_allclose(animate(audio, sample_rate=SR, model=model, silence_gate=False).vertices, raw, atol=1e-5)
