"""The built-in speech-to-face corpus generator.

- :func:`default_head`: the procedural head (FLAME's convention) with regions and motion weights.
- :func:`synthesize` / :func:`speak`: espeak-ng speech with phoneme timings.
- :func:`animate_phonemes`: phoneme timeline -> coarticulated face motion.
- :func:`generate_corpus`: the processed-VOCASET-layout corpus (``jambatalk synth``).

Submodules import numpy (and scipy where used) only; espeak-ng is loaded at first use.
"""

from __future__ import annotations

import numpy as np

from .corpus import generate_corpus, plan_corpus
from .espeak import Utterance, synthesize
from .head import Head, default_head
from .motion import ArticulationStyle, animate_phonemes, deform, frame_params, lip_gap
from .speakers import HELDOUT_SPEAKERS, TRAIN_SPEAKERS, Speaker, get_speaker
from .text import DEMO_SENTENCE, HELDOUT_SENTENCES, generate_sentences

__all__ = [
    "Head", "default_head", "Utterance", "synthesize", "speak", "ArticulationStyle", "animate_phonemes", "deform",
    "frame_params", "lip_gap", "Speaker", "TRAIN_SPEAKERS", "HELDOUT_SPEAKERS", "get_speaker", "generate_corpus",
    "plan_corpus", "generate_sentences", "HELDOUT_SENTENCES", "DEMO_SENTENCE",
]


def speak(text: str = DEMO_SENTENCE, speaker: str | Speaker | None = None, seed: int = 0) -> tuple[np.ndarray, list]:
    """Speak ``text`` with a synthetic speaker: (16 kHz float32 audio, ``[[symbol, start_s, end_s], ...]``)."""
    from ..audio import SAMPLE_RATE, resample

    spk = get_speaker(speaker)
    utt = synthesize(text, spk.voice, spk.rate, spk.pitch, spk.pitch_range, seed=seed)
    return resample(utt.audio, utt.sample_rate, SAMPLE_RATE), utt.phonemes
