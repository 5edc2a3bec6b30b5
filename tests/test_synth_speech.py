"""espeak-ng speech, the sentence generator, visemes for every phoneme, and audio augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from jambatalk.errors import InputError, MissingDependencyError
from jambatalk.synth import augment, espeak, speak
from jambatalk.synth.text import HELDOUT_SENTENCES, generate_sentences
from jambatalk.synth.visemes import classify

needs_espeak = pytest.mark.skipif(not espeak.available(),
                                  reason="libespeak-ng is not installed (apt-get install espeak-ng libespeak-ng1)")


@needs_espeak
def test_phoneme_timings_fit_the_audio():
    utt = espeak.synthesize("Five big blue moons rose over the valley.", "en+f2", rate=190, pitch=60)
    assert utt.sample_rate == 22050 and utt.audio.dtype == np.float32
    assert 1.0 < utt.duration < 5.0 and np.abs(utt.audio).max() > 0.05
    ph = utt.phonemes
    assert ph[0][1] == 0.0 and ph[-1][2] == pytest.approx(utt.duration, abs=1e-5)
    for (_a, s0, e0), (_b, s1, _e1) in zip(ph, ph[1:]):
        assert s0 < e0 == s1  # contiguous, non-empty intervals
    symbols = [p[0] for p in ph]
    assert {"f", "b", "m", "v"} <= set(symbols)
    # the pause of the comma-free sentence's end is silence: the audio is quiet there
    speech = [p for p in ph if p[0] != "_"]
    tail = utt.audio[int(speech[-1][2] * utt.sample_rate) + 200:]
    assert tail.size == 0 or np.abs(tail).max() < 0.05


@needs_espeak
def test_synthesis_is_deterministic_and_independent_of_history():
    a = espeak.synthesize("Please fetch the map.", "en-us+m3", seed=3)
    espeak.synthesize("Something else entirely, spoken first.", "en+f2", rate=220)
    b = espeak.synthesize("Please fetch the map.", "en-us+m3", seed=3)
    assert np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes
    c = espeak.synthesize("Please fetch the map.", "en-us+f4", seed=3)
    assert not np.array_equal(a.audio[: len(c.audio)], c.audio[: len(a.audio)])


@needs_espeak
def test_errors_and_speak():
    with pytest.raises(InputError, match="no voice"):
        espeak.synthesize("hello", "xx-nonexistent+zz")
    with pytest.raises(InputError, match="no text"):
        espeak.synthesize("   ")
    audio, phonemes = speak("Hello there.")
    assert audio.dtype == np.float32 and len(audio) == pytest.approx(phonemes[-1][2] * 16000, abs=2)


def test_missing_library_names_the_package(monkeypatch):
    monkeypatch.setattr(espeak, "_STATE", {})

    def fail(*_a, **_k):
        raise OSError("not found")

    monkeypatch.setattr(espeak.ctypes, "CDLL", fail)
    with pytest.raises(MissingDependencyError, match="libespeak-ng1"):
        espeak.synthesize("hello")


@needs_espeak
def test_every_generated_phoneme_has_a_viseme():
    seen = set()
    for text in generate_sentences(12, seed=5) + HELDOUT_SENTENCES[:4]:
        seen.update(p[0] for p in espeak.synthesize(text, "en-gb-x-rp+m1").phonemes)
    unknown = sorted(s for s in seen if classify(s) == "neutral")
    assert not unknown
    classes = {classify(s) for s in seen}
    assert {"bilabial", "labiodental", "close_rounded", "close_spread", "open", "silence"} <= classes


def test_sentences_are_deterministic_distinct_and_unseen():
    a, b = generate_sentences(200, seed=1), generate_sentences(200, seed=1)
    assert a == b and len(set(a)) == 200 and not set(a) & set(HELDOUT_SENTENCES)
    assert a != generate_sentences(200, seed=2)
    text = " ".join(a).lower()
    for letters in ("p", "b", "m", "f", "v", "oo", "ee"):
        assert letters in text


def test_augmentation_is_seeded_and_hits_the_snr():
    rng = np.random.default_rng(0)
    clean = np.sin(np.arange(16000) * 0.05).astype(np.float32) * 0.3
    noisy = augment.add_noise(clean, 20.0, np.random.default_rng(1))
    snr = 10 * np.log10(np.mean(clean ** 2) / np.mean((noisy - clean) ** 2))
    assert snr == pytest.approx(20.0, abs=0.1)
    assert augment.apply_gain(clean, -6.0).max() == pytest.approx(clean.max() / 10 ** 0.3, rel=1e-5)
    spec = augment.random_augmentation(rng)
    x, y = augment.augment(clean, 16000, spec), augment.augment(clean, 16000, spec)
    assert np.array_equal(x, y) and np.abs(x).max() <= 0.99 + 1e-6
    wet = augment.reverberate(clean, 16000, 0.4, 0.5, np.random.default_rng(2))
    assert wet.shape == clean.shape and not np.allclose(wet, clean)


def _tone_level(audio, hz, sr=16000):
    spec = np.abs(np.fft.rfft(audio))
    return spec[int(round(hz * len(audio) / sr))]


def test_band_limit_keeps_the_band_and_cuts_outside_it():
    t = np.arange(16000) / 16000
    tones = {50: None, 1000: None, 7500: None}
    mix = sum(np.sin(2 * np.pi * hz * t) for hz in tones).astype(np.float32) * 0.2
    out = augment.band_limit(mix, 16000, 300.0, 3400.0)
    assert out.shape == mix.shape and out.dtype == np.float32
    for hz in tones:
        tones[hz] = _tone_level(out, hz) / _tone_level(mix, hz)
    assert tones[1000] == pytest.approx(1.0, abs=0.01)
    for hz in (50, 7500):  # fourth-order roll-offs on both sides
        want = 1.0 / np.sqrt((1 + (300.0 / hz) ** 8) * (1 + (hz / 3400.0) ** 8))
        assert tones[hz] == pytest.approx(want, rel=0.02) and tones[hz] < 0.05


def test_training_augmentation_is_seeded_varied_and_keeps_the_length():
    clean = (np.sin(np.arange(32000) * 0.05) * np.hanning(32000)).astype(np.float32) * 0.3
    specs = [augment.random_training_augmentation(np.random.default_rng(s)) for s in range(40)]
    assert specs[3] == augment.random_training_augmentation(np.random.default_rng(3))
    for key in ("eq", "band", "reverb", "noise"):  # every effect is drawn, and not always
        assert 0 < sum(key in s for s in specs) < len(specs)
    outs = [augment.augment(clean, 16000, s) for s in specs[:6]]
    assert all(o.shape == clean.shape and np.isfinite(o).all() and np.abs(o).max() <= 0.99 + 1e-6 for o in outs)
    assert np.array_equal(outs[0], augment.augment(clean, 16000, specs[0]))
    assert not np.allclose(outs[0], outs[1])
