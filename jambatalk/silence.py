"""Closing the mouth in pauses: a gain per mesh frame from the speech energy, applied to the motion.

A model trained on clean speech can keep the lips slightly parted through the pauses of a real
recording (room noise, breaths). With the gate on, the predicted motion (vertices minus template)
of every frame is scaled by a gain in [0, 1]:

* each frame's energy is the mean square of the audio it spans, in dB;
* a frame is **speech** when its energy is within ``threshold_db`` of the loudest frame so far and
  above the absolute ``floor_db`` (so a silent start or digital silence never counts as speech), once
  speech has begun: at the first frame above the floor that lies ``onset_db`` above the quietest frame
  before it, or reaches ``onset_level_db`` (room noise before the first word is its own loudest frame,
  so the level rule alone took it for speech);
* the gain is 1 on speech frames and for ``hold`` seconds after one, falls linearly to 0 over the
  next ``release`` seconds, and rises linearly back to 1 over the ``attack`` seconds before the next
  speech frame (the mouth opens before the sound, as speakers do).

So the mouth closes fully in pauses longer than hold + release + attack (0.3 s by default), and
short gaps inside words pass through unchanged. The rule reads the past and ``attack`` seconds of
future only, so :class:`SilenceGate` runs the same computation incrementally on a live stream
(:class:`jambatalk.Stream`) and in one pass (:meth:`SilenceGate.gains_for`), with equal results.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .audio import SAMPLE_RATE
from .config import SilenceGateConfig

__all__ = ["SilenceGateConfig", "SilenceGate", "QuietSpeechCheck", "silence_gains"]


def _frames(seconds: float, fps: float) -> int:
    return int(round(seconds * fps))


class SilenceGate:
    """Per-frame gains from audio pushed in any chunks; :meth:`gains` returns those that became final.

    Args:
        cfg: the gate's settings.
        fps: mesh frame rate; frame t spans samples [round(t * sr / fps), round((t + 1) * sr / fps)).
        sample_rate: audio sample rate.
    """

    def __init__(self, cfg: SilenceGateConfig, fps: float, sample_rate: int = SAMPLE_RATE):
        self.cfg, self.fps, self.sample_rate = cfg, float(fps), int(sample_rate)
        self.hold = _frames(cfg.hold, fps)
        self.release = max(1, _frames(cfg.release, fps))
        self.attack = _frames(cfg.attack, fps)
        self.reset()

    @property
    def delay(self) -> int:
        """Frames of future audio a gain needs (the attack)."""
        return self.attack

    @property
    def loudest_db(self) -> float:
        """The loudest complete frame's mean square so far, in dB re full scale (-inf before any)."""
        return self._peak

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)  # samples of the frame being filled
        self._speech: list[bool] = []  # flags of frames whose gain is not out yet (and the lookahead)
        self._first = 0  # frame index of _speech[0]
        self._peak = -math.inf
        self._quietest = math.inf  # the quietest complete frame so far, in dB
        self._onset = False  # whether speech has begun (a frame onset_db above the quietest, or at onset_level_db)
        self._since = math.inf  # frames since the last speech frame before _first

    def _bounds(self, t0: int, t1: int) -> np.ndarray:
        """Absolute first samples of frames t0 .. t1 - 1."""
        return np.round(np.arange(t0, t1, dtype=np.float64) * self.sample_rate / self.fps).astype(np.int64)

    def _flags(self, mean_square: np.ndarray) -> list[bool]:
        """Speech flags of consecutive frames, updating the running peak, the quietest frame and the onset."""
        with np.errstate(divide="ignore"):
            db = 10.0 * np.log10(mean_square)
        peak = np.maximum.accumulate(np.concatenate([[self._peak], db]))[1:]
        quietest = np.minimum.accumulate(np.concatenate([[self._quietest], db]))[1:]
        loud = db > self.cfg.floor_db
        with np.errstate(invalid="ignore"):  # -inf - -inf: digital silence after digital silence (no rise)
            rise = (db - quietest) >= self.cfg.onset_db
        begins = loud & (rise | (db >= self.cfg.onset_level_db))
        onset = np.logical_or.accumulate(np.concatenate([[self._onset], begins]))[1:]
        if len(db):
            self._peak, self._quietest, self._onset = float(peak[-1]), float(quietest[-1]), bool(onset[-1])
        return (onset & loud & (db >= peak - self.cfg.threshold_db)).tolist()

    def push(self, samples: np.ndarray) -> None:
        """Add audio; every frame it completes gets its speech flag."""
        x = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        t = self._first + len(self._speech)
        per_frame = self.sample_rate / self.fps
        ends = self._bounds(t, t + int(len(x) / per_frame) + 3) - self._bounds(t, t + 1)[0]  # relative to _pending
        ends = ends[1:][ends[1:] <= len(x)]  # frames t, t+1, ... complete in x end there
        if len(ends):
            starts = np.concatenate([[0], ends[:-1]])
            # each frame's sum from its own samples alone: the same whatever the chunking
            sums = np.add.reduceat(np.square(x[: ends[-1]]), starts).astype(np.float64)
            self._speech.extend(self._flags(sums / np.maximum(ends - starts, 1)))
            x = x[ends[-1]:]
        self._pending = x

    def gains(self, final: bool = False, n_frames: Optional[int] = None) -> np.ndarray:
        """Gains of the next frames whose lookahead has arrived (all of them when ``final``: a last partial
        frame counts with the samples it has, and frames past the audio up to ``n_frames`` are silent)."""
        if final:
            if len(self._pending):
                self._speech.extend(self._flags(np.array([np.square(self._pending).mean()], dtype=np.float64)))
                self._pending = self._pending[:0]
            if n_frames is not None:
                self._speech.extend([False] * max(0, n_frames - self._first - len(self._speech)))
            ready = len(self._speech) if n_frames is None else max(0, n_frames - self._first)
        else:
            ready = max(0, len(self._speech) - self.attack)
        flags = np.asarray(self._speech, dtype=bool)
        idx = np.arange(len(flags), dtype=np.float64)
        # frames since the last speech frame (counting on from the state before this call)
        last = np.maximum.accumulate(np.where(flags, idx, -1.0 - self._since))
        since = (idx - last)[:ready]
        # frames until the next speech frame, within the attack
        nxt = np.minimum.accumulate(np.where(flags, idx, np.inf)[::-1])[::-1]
        ahead = np.concatenate([nxt[1:], [np.inf]])[:ready] - idx[:ready]
        gain = np.where(since > self.hold, 1.0 - (since - self.hold) / self.release, 1.0)
        if self.attack:
            gain = np.maximum(gain, np.where(ahead <= self.attack, 1.0 - (ahead - 1) / self.attack, 0.0))
        out = np.clip(gain, 0.0, 1.0).astype(np.float32)
        if ready:
            self._since = float(since[-1])
        del self._speech[:ready]
        self._first += ready
        return out

    def gains_for(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        """All ``n_frames`` gains of a whole recording in one pass (the gate is reset first)."""
        self.reset()
        self.push(audio)
        return self.gains(final=True, n_frames=n_frames)[:n_frames]


class QuietSpeechCheck:
    """Whether the gate's absolute floor closed the mouth on speech: a quiet recording's frames under
    ``floor_db`` count as pauses, though the level rule (within ``threshold_db`` of the loudest) hears speech.

    It runs a second gate without the floor on the same audio and, frame by frame, adds up how much gain the
    floor took away; :meth:`warn` warns where that is more than a tenth of the frames seen. Push the same
    samples as to the gate, and hand :meth:`add` each batch of the gate's gains as they come out.
    """

    SHARE = 0.1

    def __init__(self, cfg: SilenceGateConfig, fps: float, sample_rate: int = SAMPLE_RATE):
        import dataclasses

        self.floor_db = cfg.floor_db
        self._heard = SilenceGate(dataclasses.replace(cfg, floor_db=-400.0), fps, sample_rate)
        self.reset()

    def reset(self) -> None:
        self._heard.reset()
        self.lost, self.frames = 0.0, 0

    def push(self, samples: np.ndarray) -> None:
        self._heard.push(samples)

    def add(self, gains: np.ndarray, final: bool = False, n_frames: Optional[int] = None) -> None:
        """Count the gate's next ``gains`` (from its ``gains(final, n_frames)``) against the gate without floor."""
        heard = self._heard.gains(final, n_frames)[: len(gains)]
        self.lost += float(np.clip(heard - gains[: len(heard)], 0, None).sum())
        self.frames += len(heard)

    def warn(self) -> None:
        """Warn, naming the first caller outside jambatalk, where the floor closed the mouth on a tenth of the frames."""
        import warnings

        from .errors import outside_stacklevel

        share = self.lost / max(self.frames, 1)
        if share > self.SHARE:
            warnings.warn(f"the speech is quiet (its loudest frame is at {self._heard.loudest_db:.0f} dBFS): the "
                          f"silence gate took frames under {self.floor_db:g} dBFS for pauses and closed the mouth on "
                          f"speech in {share:.0%} of the animation (pauses aside); raise the recording's level, "
                          "or turn the gate off "
                          "(silence_gate=False, --silence-gate off)", stacklevel=outside_stacklevel())


def silence_gains(audio: np.ndarray, fps: float, n_frames: int, cfg: Optional[SilenceGateConfig] = None,
                  sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per-frame gains (n_frames,) for a whole recording (16 kHz mono samples); see :class:`SilenceGate`."""
    return SilenceGate(cfg or SilenceGateConfig(enabled=True), fps, sample_rate).gains_for(audio, n_frames)
