"""Seeded audio augmentation: gain, additive noise at a chosen SNR, synthetic reverberation, EQ, band limits.

:func:`random_augmentation` draws the one fixed setting each corpus file is written with;
:func:`random_training_augmentation` draws a new, wider one every time a training item is read
(``data.augment``), so that a model sees each sentence through many rooms, microphones and noises.
"""

from __future__ import annotations

import numpy as np

__all__ = ["add_noise", "apply_gain", "reverberate", "equalize", "band_limit", "augment", "random_augmentation",
           "random_training_augmentation"]


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by ``gain_db`` decibels."""
    return (audio * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, color: float = 0.0) -> np.ndarray:
    """Add noise at ``snr_db`` dB relative to the signal's power; ``color`` 0 white, 1 pink-ish (1/f)."""
    n = len(audio)
    noise = rng.standard_normal(n)
    if color > 0:
        spec = np.fft.rfft(noise)
        f = np.maximum(np.arange(len(spec)), 1.0)
        noise = np.fft.irfft(spec / f ** (0.5 * color), n)
    p_sig = float(np.mean(audio.astype(np.float64) ** 2)) + 1e-12
    p_noise = float(np.mean(noise ** 2)) + 1e-12
    noise *= np.sqrt(p_sig / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (audio + noise).astype(np.float32)


def reverberate(audio: np.ndarray, sample_rate: int, rt60: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with an exponentially decaying noise impulse response (``rt60`` seconds), mixed ``wet``."""
    from scipy.signal import fftconvolve

    length = max(int(rt60 * sample_rate), 16)
    t = np.arange(length) / sample_rate
    ir = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    ir[0] = 0.0
    ir /= np.sqrt(np.sum(ir ** 2)) + 1e-12
    tail = fftconvolve(audio, ir)[: len(audio)]
    out = (1.0 - wet) * audio + wet * tail
    rms_in = np.sqrt(np.mean(audio ** 2)) + 1e-12
    return (out * rms_in / (np.sqrt(np.mean(out ** 2)) + 1e-12)).astype(np.float32)


def equalize(audio: np.ndarray, sample_rate: int, low_db: float, high_db: float, split_hz: float = 1000.0) -> np.ndarray:
    """Tilt the spectrum: ``low_db`` below ``split_hz`` and ``high_db`` above, with a smooth crossover."""
    spec = np.fft.rfft(audio.astype(np.float64))
    f = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
    mix = 1.0 / (1.0 + (f / split_hz) ** 2)
    gain_db = mix * low_db + (1.0 - mix) * high_db
    return np.fft.irfft(spec * 10.0 ** (gain_db / 20.0), len(audio)).astype(np.float32)


def band_limit(audio: np.ndarray, sample_rate: int, low_hz: float, high_hz: float, order: int = 4) -> np.ndarray:
    """Keep ``low_hz`` .. ``high_hz`` (a telephone or a small loudspeaker): Butterworth-shaped magnitude
    roll-offs of ``order`` on both sides, applied in the frequency domain (zero phase)."""
    spec = np.fft.rfft(audio.astype(np.float64))
    f = np.maximum(np.fft.rfftfreq(len(audio), 1.0 / sample_rate), 1e-3)
    gain = 1.0 / np.sqrt((1.0 + (low_hz / f) ** (2 * order)) * (1.0 + (f / high_hz) ** (2 * order)))
    return np.fft.irfft(spec * gain, len(audio)).astype(np.float32)


def random_augmentation(rng: np.random.Generator) -> dict:
    """Draw augmentation settings (a JSON-able dict) for :func:`augment`."""
    spec = {"gain_db": float(rng.uniform(-8.0, 3.0))}
    if rng.random() < 0.6:
        spec["noise"] = {"snr_db": float(rng.uniform(12.0, 40.0)), "color": float(rng.choice([0.0, 1.0]))}
    if rng.random() < 0.35:
        spec["reverb"] = {"rt60": float(rng.uniform(0.15, 0.6)), "wet": float(rng.uniform(0.15, 0.5))}
    if rng.random() < 0.35:
        spec["eq"] = {"low_db": float(rng.uniform(-6.0, 6.0)), "high_db": float(rng.uniform(-8.0, 4.0))}
    spec["seed"] = int(rng.integers(2**31))
    return spec


def random_training_augmentation(rng: np.random.Generator) -> dict:
    """Draw on-the-fly training augmentation (a JSON-able dict for :func:`augment`): wider than
    :func:`random_augmentation`, with lower SNRs, longer rooms, stronger EQ and band limits."""
    spec = {"gain_db": float(rng.uniform(-12.0, 3.0))}
    if rng.random() < 0.5:
        spec["eq"] = {"low_db": float(rng.uniform(-9.0, 9.0)), "high_db": float(rng.uniform(-12.0, 6.0)),
                      "split_hz": float(rng.uniform(500.0, 2500.0))}
    if rng.random() < 0.25:
        spec["band"] = {"low_hz": float(rng.uniform(80.0, 400.0)), "high_hz": float(rng.uniform(3000.0, 7000.0))}
    if rng.random() < 0.5:
        spec["reverb"] = {"rt60": float(rng.uniform(0.1, 0.9)), "wet": float(rng.uniform(0.1, 0.6))}
    if rng.random() < 0.6:
        spec["noise"] = {"snr_db": float(rng.uniform(5.0, 40.0)), "color": float(rng.uniform(0.0, 1.5))}
    spec["seed"] = int(rng.integers(2**31))
    return spec


def augment(audio: np.ndarray, sample_rate: int, spec: dict) -> np.ndarray:
    """Apply settings from :func:`random_augmentation` or :func:`random_training_augmentation` (EQ, band
    limits, reverb, noise, gain; then peak-limit to 0.99)."""
    rng = np.random.default_rng(spec.get("seed", 0))
    out = np.asarray(audio, dtype=np.float32)
    if "eq" in spec:
        out = equalize(out, sample_rate, spec["eq"]["low_db"], spec["eq"]["high_db"], spec["eq"].get("split_hz", 1000.0))
    if "band" in spec:
        out = band_limit(out, sample_rate, spec["band"]["low_hz"], spec["band"]["high_hz"])
    if "reverb" in spec:
        out = reverberate(out, sample_rate, spec["reverb"]["rt60"], spec["reverb"]["wet"], rng)
    if "noise" in spec:
        out = add_noise(out, spec["noise"]["snr_db"], rng, spec["noise"].get("color", 0.0))
    out = apply_gain(out, spec.get("gain_db", 0.0))
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.99:
        out = out * (0.99 / peak)
    return out.astype(np.float32)
