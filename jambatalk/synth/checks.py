"""Checks of a model's mouth motion against the speech that drives it.

Used to qualify the built-in model on speech it never saw (``tools/eval_default.py``) and by tests:
does the mouth open with the speech energy, and does it close when the speaker is silent?
"""

from __future__ import annotations

import numpy as np

__all__ = ["energy_envelope", "pearson", "silent_frames", "speech_mouth_checks", "edit_distance"]


def energy_envelope(audio: np.ndarray, fps: float, n_frames: int, sample_rate: int = 16000) -> np.ndarray:
    """RMS energy of the audio in a window of one video frame centred on each frame, (n_frames,)."""
    hop = sample_rate / fps
    half = int(hop)
    padded = np.pad(np.asarray(audio, np.float64), (half, half))
    centres = (np.arange(n_frames) * hop + hop / 2).astype(int) + half
    idx = centres[:, None] + np.arange(-half, half)[None, :]
    return np.sqrt(np.mean(padded[np.clip(idx, 0, len(padded) - 1)] ** 2, axis=1))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def silent_frames(envelope: np.ndarray, fps: float, min_seconds: float = 0.3, rel_db: float = -30.0,
                  margin_seconds: float = 0.1) -> np.ndarray:
    """Frames inside silences of at least ``min_seconds`` (energy ``rel_db`` below the loud speech level),
    leaving ``margin_seconds`` at each end of the silence for the mouth to close or open."""
    ref = np.percentile(envelope, 95)
    quiet = envelope < ref * 10 ** (rel_db / 20)
    out = np.zeros_like(quiet)
    margin = int(round(margin_seconds * fps))
    t = 0
    while t < len(quiet):
        if not quiet[t]:
            t += 1
            continue
        e = t
        while e < len(quiet) and quiet[e]:
            e += 1
        if (e - t) / fps >= min_seconds:
            out[t + margin: max(t + margin, e - margin)] = True
        t = e
    return out


def speech_mouth_checks(opening: np.ndarray, audio: np.ndarray, fps: float) -> dict:
    """Correlation of mouth opening with speech energy, and the opening during long silences.

    Returns r (Pearson, mouth opening vs energy envelope), the mean opening in silences relative to
    the 90th-percentile opening during speech (0 = fully closed), and the number of silent frames.
    """
    env = energy_envelope(audio, fps, len(opening))
    silent = silent_frames(env, fps)
    speaking = ~silent & (env > np.percentile(env, 50))
    open_speech = np.percentile(opening[speaking], 90) if speaking.any() else np.nan
    rest = float(np.min(opening))
    rel = (float(np.mean(opening[silent])) - rest) / max(open_speech - rest, 1e-9) if silent.any() else np.nan
    return {"r": pearson(opening, env), "silence_opening_rel": rel, "silent_frames": int(silent.sum()),
            "speech_opening_p90": float(open_speech), "rest_opening": rest}


def edit_distance(a: list, b: list) -> int:
    """Levenshtein distance between two token sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]
