"""Phoneme timelines to face motion: coarticulated mouth parameters, independent upper-face
motion, and smooth regional deformations of a :class:`~jambatalk.synth.head.Head`.

Mouth channels follow Cohen and Massaro's coarticulation model: every phoneme pulls each channel
towards its target with a dominance that decays exponentially away from the phoneme, and a
channel's value is the dominance-weighted mean of the targets, smoothed, so there are no step
changes. Bilabial and labiodental holds last at least a few frames so the lips really close.
Blinks and brow raises come from their own random generator, independent of the speech.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .head import Head
from .visemes import MOUTH_CHANNELS, classify, split_diphthong, viseme

__all__ = ["ArticulationStyle", "PARAM_NAMES", "mouth_track", "upper_face_track", "frame_params", "deform",
           "animate_phonemes", "lip_gap", "n_frames_for"]

#: Columns of a per-frame parameter array.
PARAM_NAMES = MOUTH_CHANNELS + ("blink", "brow")
_FINE_RATE = 400.0  # Hz, the grid the dominance model is evaluated on before sampling at the frame rate
_MAX_JAW = 0.2  # radians of jaw rotation at jaw = 1


@dataclass(frozen=True)
class ArticulationStyle:
    """How a speaker moves: gains on the mouth channels and the speed of coarticulation.

    Attributes:
        jaw_gain: scales jaw opening (1 = the reference speaker).
        round_gain: scales lip rounding.
        spread_gain: scales lip spreading.
        protrusion: how far rounded lips push forward (1 = 7 mm per unit rounding for a 5 cm mouth).
        coarticulation: speed of transitions; higher means sharper, more separated articulations.
        blink_rate: blinks per minute.
        brow_activity: scales brow raises.
    """

    jaw_gain: float = 1.0
    round_gain: float = 1.0
    spread_gain: float = 1.0
    protrusion: float = 1.0
    coarticulation: float = 1.0
    blink_rate: float = 17.0
    brow_activity: float = 1.0

    def __post_init__(self):
        for name in ("jaw_gain", "round_gain", "spread_gain", "protrusion", "coarticulation", "blink_rate",
                     "brow_activity"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise InputError(f"articulation style {name}={value} must be a finite number >= 0", "pass e.g. 1.0")


def n_frames_for(duration_s: float, fps: float) -> int:
    """Frames covering ``duration_s`` seconds at ``fps`` (frame i shows time i / fps)."""
    return max(1, int(round(duration_s * fps)))


def _segments(phonemes) -> list[tuple[float, float, str]]:
    """Phoneme intervals with diphthongs split into equal parts and holds widened for the lips."""
    segs = []
    for item in phonemes:
        symbol, start, end = str(item[0]), float(item[1]), float(item[2])
        if end < start:
            raise InputError(f"phoneme {symbol!r} ends ({end}) before it starts ({start})", "pass [symbol, start, end]")
        parts = split_diphthong(symbol)
        step = (end - start) / len(parts)
        for k, part in enumerate(parts):
            segs.append((start + k * step, start + (k + 1) * step, part))
    return segs


def mouth_track(phonemes, n_frames: int, fps: float, style: ArticulationStyle | None = None) -> np.ndarray:
    """Coarticulated mouth channels (:data:`MOUTH_CHANNELS`) per frame, shape (n_frames, 5).

    Args:
        phonemes: ``[[symbol, start_s, end_s], ...]`` (IPA symbols; pauses as ``"_"``).
        n_frames: frames to produce; frame i shows time i / fps.
        fps: frame rate.
        style: articulation style (gains are applied later, in :func:`deform`; only the
            coarticulation speed matters here).
    """
    style = style or ArticulationStyle()
    segs = _segments(phonemes)
    duration = n_frames / float(fps)
    t = np.arange(int(np.ceil((duration + 0.1) * _FINE_RATE))) / _FINE_RATE
    # decay of dominance away from a phoneme, per channel: lip closure is the most local
    tau = np.array([0.04, 0.022, 0.04, 0.04, 0.03])[None] / max(style.coarticulation, 1e-3)
    num = np.zeros((len(t), len(MOUTH_CHANNELS)))
    den = np.zeros_like(num)
    # silence before the first and after the last phoneme
    edges = [(-1.0, segs[0][0] if segs else 0.0, "_"), (segs[-1][1] if segs else 0.0, duration + 1.0, "_")]
    for start, end, symbol in segs + edges:
        vis = viseme(symbol)
        cls = classify(symbol)
        hold = {"bilabial": 0.075, "labiodental": 0.06}.get(cls, 0.0)
        if end - start < hold:
            mid = (start + end) / 2.0
            start, end = mid - hold / 2.0, mid + hold / 2.0
        dist = np.maximum(np.maximum(start - t, t - end), 0.0)
        decay = np.exp(-dist[:, None] / tau)
        d = decay * np.asarray(vis.dominance)[None]
        num += d * np.asarray(vis.target)[None]
        den += d
    fine = num / np.maximum(den, 1e-12)
    sigma = 0.012 * _FINE_RATE / max(style.coarticulation, 1e-3) ** 0.5
    radius = int(3 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(fine, ((radius, radius), (0, 0)), mode="edge")
    smooth = np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(fine.shape[1])], axis=1)
    frame_t = np.arange(n_frames) / float(fps)
    out = np.stack([np.interp(frame_t, t, smooth[:, c]) for c in range(smooth.shape[1])], axis=1)
    return out.astype(np.float32)


def _pulse(t: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """0 -> 1 -> 0 with raised-cosine ramps."""
    up = np.clip((t - start) / rise, 0.0, 1.0)
    down = np.clip((t - start - rise - hold) / fall, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * up) - (0.5 - 0.5 * np.cos(np.pi * down))


def upper_face_track(n_frames: int, fps: float, rng: np.random.Generator | int,
                     style: ArticulationStyle | None = None) -> np.ndarray:
    """Blink and brow-raise values per frame, shape (n_frames, 2), from ``rng`` alone.

    Events are drawn one after another in time, so for the same generator state a longer track
    starts with the shorter one; nothing here depends on the speech.
    """
    style = style or ArticulationStyle()
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    t = np.arange(n_frames) / float(fps)
    duration = n_frames / float(fps)
    blink_rng, brow_rng = (np.random.default_rng(int(s)) for s in rng.integers(2**63, size=2))
    blink = np.zeros(n_frames)
    brow = np.zeros(n_frames)
    mean_gap = 60.0 / max(style.blink_rate, 1e-3)
    at = blink_rng.uniform(0.2, mean_gap)
    while at < duration:
        close = blink_rng.uniform(0.06, 0.1)
        blink = np.maximum(blink, blink_rng.uniform(0.85, 1.0) * _pulse(t, at, close, blink_rng.uniform(0.0, 0.05),
                                                                 close * blink_rng.uniform(1.5, 2.5)))
        at += 0.35 + blink_rng.gamma(2.0, max(mean_gap - 0.35, 0.05) / 2.0)
    at = brow_rng.exponential(2.5)
    while at < duration:
        rise = brow_rng.uniform(0.15, 0.35)
        amp = brow_rng.uniform(0.3, 1.0) * style.brow_activity
        brow = brow + amp * _pulse(t, at, rise, brow_rng.uniform(0.1, 1.0), rise * brow_rng.uniform(1.0, 2.0))
        at += brow_rng.exponential(4.0) + 0.8
    return np.stack([np.clip(blink, 0.0, 1.0), brow], axis=1).astype(np.float32)


def frame_params(phonemes, n_frames: int, fps: float, style: ArticulationStyle | None = None,
                 seed: int | np.random.Generator = 0) -> np.ndarray:
    """All parameters (:data:`PARAM_NAMES`) per frame: mouth from the phonemes, upper face from ``seed``."""
    mouth = mouth_track(phonemes, n_frames, fps, style)
    upper = upper_face_track(n_frames, fps, seed, style)
    return np.concatenate([mouth, upper], axis=1)


def deform(head: Head, params: np.ndarray, style: ArticulationStyle | None = None,
           template: np.ndarray | None = None) -> np.ndarray:
    """Apply per-frame parameters to the head: (T, len(PARAM_NAMES)) -> (T, V, 3) float32 vertices.

    ``template`` (V, 3) replaces ``head.vertices`` as the rest shape (e.g. a per-speaker variant of
    the same topology); the weight fields and anchors of ``head`` are used as they are.
    """
    style = style or ArticulationStyle()
    params = np.asarray(params, dtype=np.float64)
    if params.ndim != 2 or params.shape[1] != len(PARAM_NAMES):
        raise InputError(f"motion parameters have shape {params.shape}; expected (T, {len(PARAM_NAMES)})",
                         f"columns are {', '.join(PARAM_NAMES)}")
    rest = np.asarray(head.vertices if template is None else template, dtype=np.float64)
    if rest.shape != head.vertices.shape:
        raise InputError(f"template has shape {rest.shape}; the head has {head.vertices.shape}",
                         "pass a template with the head's topology")
    w = {k: np.asarray(v, dtype=np.float64) for k, v in head.weights.items()}
    s = float(head.anchors["mouth_width"]) / 0.05
    center = np.asarray(head.anchors["mouth_center"], dtype=np.float64)
    hinge = np.asarray(head.anchors["jaw_hinge"], dtype=np.float64)
    eye_opening = float(head.anchors["eye_opening"])
    jaw, close, rnd, spread, ld, blink, brow = (params[:, i][:, None] for i in range(len(PARAM_NAMES)))
    # jaw: rotation about the hinge's x axis, weighted; lip closure cancels it on the lower lip
    theta = jaw * _MAX_JAW * style.jaw_gain
    rel = rest - hinge
    cos, sin = np.cos(theta), np.sin(theta)
    dy = rel[None, :, 1] * (cos - 1.0) - rel[None, :, 2] * sin
    dz = rel[None, :, 1] * sin + rel[None, :, 2] * (cos - 1.0)
    seal = np.clip(close / 0.85, 0.0, 1.0)  # the lips seal fully once closure passes 0.85
    gain = w["jaw"][None] - seal * w["lip_seal"][None]
    out = np.repeat(rest[None], len(params), axis=0)
    out[..., 1] += gain * dy
    out[..., 2] += gain * dz
    xr = rest[:, 0] - center[0]
    lips = w["lips"][None]
    r = rnd * style.round_gain
    sp = spread * style.spread_gain
    out[..., 0] += lips * xr[None] * (-0.4 * r + 0.16 * sp)
    out[..., 2] += lips * s * (0.007 * style.protrusion * r - 0.002 * sp)
    corner = np.clip(xr / (0.5 * float(head.anchors["mouth_width"])), -1.5, 1.5) ** 2
    out[..., 1] += lips * s * 0.0015 * sp * corner[None]
    ld = ld * (1.0 - seal)  # sealed lips meet: no tuck of the lower lip
    out[..., 1] += s * ld * (0.0065 * w["lower_lip"][None] + 0.0012 * w["upper_lip"][None])
    out[..., 2] += s * ld * (-0.004 * w["lower_lip"][None])
    out[..., 1] += eye_opening * blink * (-0.8 * w["eyelid_upper"][None] + 0.2 * w["eyelid_lower"][None])
    out[..., 1] += s * 0.0045 * brow * w["brows"][None]
    out[..., 2] += s * 0.001 * brow * w["brows"][None]
    return out.astype(np.float32)


def animate_phonemes(head: Head, phonemes, duration_s: float, fps: float = 30.0,
                     style: ArticulationStyle | None = None, seed: int = 0,
                     template: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Phoneme timeline -> ((T, V, 3) vertices, (T, P) parameters) for ``duration_s`` seconds."""
    n = n_frames_for(duration_s, fps)
    params = frame_params(phonemes, n, fps, style, seed)
    return deform(head, params, style, template), params


def lip_gap(head: Head, vertices: np.ndarray) -> np.ndarray:
    """Opening between the upper and lower lip at the mouth's centre, per frame (metres).

    Uses the paired slit edges of the procedural head where present; otherwise the distance
    between the centres of the upper- and lower-lip vertices near the midline, minus its rest value.
    """
    v = np.asarray(vertices, dtype=np.float64)
    v = v[None] if v.ndim == 2 else v
    up, low = head.regions.get("mouth_upper_edge"), head.regions.get("mouth_lower_edge")
    if up is not None and low is not None and len(up) == len(low) and len(up) >= 3:
        k = len(up)
        mid = slice(k // 3, k - k // 3)
        return np.linalg.norm(v[:, up[mid]] - v[:, low[mid]], axis=-1).mean(axis=1)
    cx = float(head.anchors["mouth_center"][0])
    near = np.abs(head.vertices[:, 0] - cx) < 0.15 * float(head.anchors["mouth_width"])
    u = np.intersect1d(head.regions["upper_lip"], np.nonzero(near)[0])
    lo = np.intersect1d(head.regions["lower_lip"], np.nonzero(near)[0])
    gap = v[:, u].mean(axis=1)[:, 1] - v[:, lo].mean(axis=1)[:, 1]
    rest = head.vertices[u].mean(axis=0)[1] - head.vertices[lo].mean(axis=0)[1]
    return gap - rest
