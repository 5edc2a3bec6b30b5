"""Phonemes (espeak-ng IPA symbols) to viseme targets.

Each phoneme sets targets for the mouth channels of :data:`MOUTH_CHANNELS`, with a dominance per
channel (how strongly it holds that target against its neighbours; Cohen and Massaro's
coarticulation model). Bilabials close the lips, labiodentals tuck the lower lip under the upper
teeth, rounded vowels and /w/ round and protrude the lips, spread vowels spread them, open vowels
open the jaw, and pauses rest the mouth closed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MOUTH_CHANNELS", "Viseme", "viseme", "split_diphthong", "classify", "SILENCE_SYMBOLS"]

#: Mouth channels: jaw opening (0..1), lip closure, lip rounding/protrusion, lip spreading,
#: lower lip to upper teeth.
MOUTH_CHANNELS = ("jaw", "close", "round", "spread", "labiodental")
SILENCE_SYMBOLS = ("_", "", " ")

_STRIP = "ˈˌːˑ̩̯̃ʰ-:"  # stress, length, syllabic, non-syllabic, nasalised, aspirated


@dataclass(frozen=True)
class Viseme:
    """Targets and dominances for :data:`MOUTH_CHANNELS`."""

    name: str
    target: tuple[float, float, float, float, float]
    dominance: tuple[float, float, float, float, float]


def _v(name, jaw, close=0.0, rnd=0.0, spread=0.0, ld=0.0, dom=(1.0, 1.0, 1.0, 1.0, 1.0)):
    return Viseme(name, (jaw, close, rnd, spread, ld), dom)


# dominance: strong (8) where the articulation is essential, weak (0.3) where it is free
_WEAK_JAW = (0.35, 1.0, 0.3, 0.3, 1.0)
VISEMES = {
    "silence": _v("silence", 0.0, 1.0, 0.0, 0.0, 0.0, (2.0, 1.5, 0.4, 0.4, 0.6)),
    "bilabial": _v("bilabial", 0.08, 1.0, 0.0, 0.0, 0.0, (2.0, 15.0, 0.3, 0.3, 8.0)),
    "labiodental": _v("labiodental", 0.12, 0.0, 0.0, 0.0, 1.0, (2.0, 8.0, 0.5, 0.5, 30.0)),
    "dental": _v("dental", 0.22, 0.0, 0.0, 0.1, 0.0, (1.5, 4.0, 0.4, 0.4, 4.0)),
    "alveolar": _v("alveolar", 0.16, 0.0, 0.0, 0.1, 0.0, (1.0, 4.0, 0.3, 0.3, 4.0)),
    "sibilant": _v("sibilant", 0.1, 0.0, 0.0, 0.3, 0.0, (3.0, 4.0, 0.5, 0.8, 4.0)),
    "postalveolar": _v("postalveolar", 0.12, 0.0, 0.7, 0.0, 0.0, (2.0, 4.0, 3.0, 2.0, 4.0)),
    "velar": _v("velar", 0.28, 0.0, 0.0, 0.0, 0.0, _WEAK_JAW),
    "glottal": _v("glottal", 0.35, 0.0, 0.0, 0.0, 0.0, (0.2, 1.0, 0.2, 0.2, 1.0)),
    "approximant_r": _v("approximant_r", 0.2, 0.0, 0.45, 0.0, 0.0, (1.0, 4.0, 2.0, 1.0, 4.0)),
    "lateral": _v("lateral", 0.25, 0.0, 0.0, 0.1, 0.0, (0.8, 4.0, 0.3, 0.3, 4.0)),
    "w": _v("w", 0.12, 0.0, 1.0, 0.0, 0.0, (2.0, 4.0, 6.0, 4.0, 4.0)),
    "j": _v("j", 0.18, 0.0, 0.0, 0.5, 0.0, (1.0, 4.0, 1.0, 1.5, 4.0)),
    "open": _v("open", 0.75, 0.0, 0.0, 0.1, 0.0, (4.0, 4.0, 1.0, 1.0, 4.0)),
    "open_rounded": _v("open_rounded", 0.6, 0.0, 0.55, 0.0, 0.0, (4.0, 4.0, 2.0, 2.0, 4.0)),
    "mid_rounded": _v("mid_rounded", 0.42, 0.0, 0.75, 0.0, 0.0, (3.0, 4.0, 3.0, 3.0, 4.0)),
    "close_rounded": _v("close_rounded", 0.2, 0.0, 1.0, 0.0, 0.0, (2.0, 4.0, 4.0, 4.0, 4.0)),
    "near_close_rounded": _v("near_close_rounded", 0.28, 0.0, 0.6, 0.0, 0.0, (2.0, 4.0, 2.0, 2.0, 4.0)),
    "mid": _v("mid", 0.5, 0.0, 0.0, 0.35, 0.0, (3.0, 4.0, 1.0, 1.5, 4.0)),
    "central": _v("central", 0.38, 0.0, 0.0, 0.0, 0.0, (1.5, 4.0, 0.5, 0.5, 4.0)),
    "open_central": _v("open_central", 0.55, 0.0, 0.0, 0.05, 0.0, (3.0, 4.0, 0.8, 0.8, 4.0)),
    "rhotic": _v("rhotic", 0.35, 0.0, 0.35, 0.0, 0.0, (2.0, 4.0, 1.5, 1.0, 4.0)),
    "close_spread": _v("close_spread", 0.16, 0.0, 0.0, 1.0, 0.0, (2.0, 4.0, 3.0, 4.0, 4.0)),
    "near_close_spread": _v("near_close_spread", 0.28, 0.0, 0.0, 0.6, 0.0, (2.0, 4.0, 1.5, 2.0, 4.0)),
    "neutral": _v("neutral", 0.3, 0.0, 0.0, 0.0, 0.0, (1.0, 4.0, 0.5, 0.5, 4.0)),
}

# base symbol (after stripping diacritics) -> viseme class
_CLASSES = {
    **dict.fromkeys(["p", "b", "m", "ɱ"], "bilabial"),
    **dict.fromkeys(["f", "v"], "labiodental"),
    **dict.fromkeys(["θ", "ð"], "dental"),
    **dict.fromkeys(["t", "d", "n", "ɾ", "ʔ", "ɗ", "ɬ"], "alveolar"),
    **dict.fromkeys(["s", "z"], "sibilant"),
    **dict.fromkeys(["ʃ", "ʒ", "tʃ", "dʒ", "ʧ", "ʤ", "tʃʰ", "ç"], "postalveolar"),
    **dict.fromkeys(["k", "g", "ɡ", "ŋ", "x", "ɣ", "q"], "velar"),
    **dict.fromkeys(["h", "ɦ"], "glottal"),
    **dict.fromkeys(["r", "ɹ", "ɻ", "ʁ", "ɐɹ"], "approximant_r"),
    **dict.fromkeys(["l", "ɫ", "ɭ", "ʎ"], "lateral"),
    **dict.fromkeys(["w", "ʍ"], "w"),
    **dict.fromkeys(["j", "ʲ"], "j"),
    **dict.fromkeys(["a", "ɑ", "æ", "ä"], "open"),
    **dict.fromkeys(["ɒ", "ɔ"], "open_rounded"),
    **dict.fromkeys(["o", "ɵ"], "mid_rounded"),
    **dict.fromkeys(["u", "ʉ", "y"], "close_rounded"),
    "ʊ": "near_close_rounded",
    **dict.fromkeys(["e", "ɛ"], "mid"),
    **dict.fromkeys(["ə", "ɘ", "ɜ"], "central"),
    **dict.fromkeys(["ʌ", "ɐ"], "open_central"),
    **dict.fromkeys(["ɚ", "ɝ", "ɜɹ", "əɹ"], "rhotic"),
    "i": "close_spread",
    **dict.fromkeys(["ɪ", "ᵻ", "ɨ"], "near_close_spread"),
}
_VOWELS = set("aɑæäɒɔoɵuʉyʊeɛəɘɜʌɐɚɝiɪᵻɨ")


def _clean(symbol: str) -> str:
    return "".join(ch for ch in symbol if ch not in _STRIP)


def split_diphthong(symbol: str) -> list[str]:
    """Vowel sequences ("aɪ", "oʊ", "aɪə") -> their parts; other symbols -> [symbol]."""
    s = _clean(symbol)
    if len(s) > 1 and s not in _CLASSES and all(ch in _VOWELS or ch == "ɹ" for ch in s):
        parts = []
        for ch in s:
            if ch == "ɹ" and parts:
                parts[-1] += ch
            else:
                parts.append(ch)
        return parts
    return [symbol]


def classify(symbol: str) -> str:
    """The viseme class name of a phoneme symbol (``"neutral"`` when unknown)."""
    if symbol in SILENCE_SYMBOLS or set(symbol) <= set("_:ː"):
        return "silence"
    s = _clean(symbol)
    if s in _CLASSES:
        return _CLASSES[s]
    for n in (3, 2, 1):  # longest known prefix (affricates, r-coloured vowels)
        if s[:n] in _CLASSES:
            return _CLASSES[s[:n]]
    return "neutral"


def viseme(symbol: str) -> Viseme:
    """Targets and dominances of one phoneme (diphthongs: use :func:`split_diphthong` first)."""
    return VISEMES[classify(symbol)]
