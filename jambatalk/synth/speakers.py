"""Synthetic "speakers": an espeak-ng voice and variant, speaking rate, pitch, and articulation style.

:data:`TRAIN_SPEAKERS` are used for training and validation; :data:`HELDOUT_SPEAKERS` use a voice
variant that no training speaker has, and appear only in test splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InputError
from .motion import ArticulationStyle

__all__ = ["Speaker", "TRAIN_SPEAKERS", "HELDOUT_SPEAKERS", "SPEAKERS", "get_speaker", "DEFAULT_SPEAKER"]


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: voice, prosody, face shape and articulation style.

    Attributes:
        name: subject name used in file names (``<name>_sentNNN``).
        voice: espeak-ng voice+variant, e.g. ``"en-us+m3"``.
        rate: words per minute. pitch, pitch_range: 0..100.
        shape: (x, y, z) scale of the template for this speaker's face.
        style: :class:`~jambatalk.synth.motion.ArticulationStyle`.
    """

    name: str
    voice: str
    rate: int = 165
    pitch: int = 50
    pitch_range: int = 50
    shape: tuple[float, float, float] = (1.0, 1.0, 1.0)
    style: ArticulationStyle = field(default_factory=ArticulationStyle)


TRAIN_SPEAKERS = (
    Speaker("spk01", "en-us+m3", 160, 45, 55, (1.00, 1.00, 1.00), ArticulationStyle(1.0, 1.0, 1.0, 1.0, 1.0)),
    Speaker("spk02", "en+f2", 170, 62, 60, (0.97, 0.98, 0.98), ArticulationStyle(0.85, 1.15, 1.1, 1.2, 1.1, 20.0)),
    Speaker("spk03", "en-gb-x-rp+m1", 150, 40, 45, (1.03, 1.01, 1.02), ArticulationStyle(1.15, 0.9, 0.9, 0.8, 0.9, 14.0)),
    Speaker("spk04", "en-us+f4", 185, 58, 70, (0.98, 0.97, 0.99), ArticulationStyle(0.95, 1.2, 1.2, 1.3, 1.2, 22.0, 1.3)),
    Speaker("spk05", "en-gb-scotland+m5", 155, 38, 40, (1.02, 1.03, 1.01), ArticulationStyle(1.2, 1.0, 0.8, 1.0, 0.85)),
    Speaker("spk06", "en-029+f1", 175, 55, 55, (0.99, 1.0, 0.97), ArticulationStyle(0.9, 0.85, 1.25, 0.9, 1.0, 18.0, 0.7)),
    Speaker("spk07", "en-us-nyc+m7", 195, 48, 65, (1.01, 0.99, 1.03), ArticulationStyle(1.05, 1.1, 1.0, 1.1, 1.25, 16.0)),
    Speaker("spk08", "en+m2", 145, 52, 35, (1.02, 1.02, 1.0), ArticulationStyle(1.1, 0.95, 1.05, 0.9, 0.8, 12.0, 1.2)),
)
HELDOUT_SPEAKERS = (
    Speaker("spk09", "en-us+f3", 168, 60, 58, (0.99, 1.01, 1.0), ArticulationStyle(1.0, 1.05, 1.05, 1.05, 1.05)),
)
SPEAKERS = {s.name: s for s in TRAIN_SPEAKERS + HELDOUT_SPEAKERS}
DEFAULT_SPEAKER = TRAIN_SPEAKERS[0]


def get_speaker(speaker: str | Speaker | None) -> Speaker:
    """A :class:`Speaker` by name (or the default for None)."""
    if speaker is None:
        return DEFAULT_SPEAKER
    if isinstance(speaker, Speaker):
        return speaker
    if speaker not in SPEAKERS:
        raise InputError(f"unknown synthetic speaker '{speaker}'", f"choose one of: {', '.join(SPEAKERS)}")
    return SPEAKERS[speaker]
