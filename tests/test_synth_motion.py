"""Motion: coarticulated visemes, closed lips on bilabials and in silence, independent upper face."""

from __future__ import annotations

import numpy as np
import pytest

from jambatalk.errors import InputError
from jambatalk.synth import espeak
from jambatalk.synth.head import default_head
from jambatalk.synth.motion import PARAM_NAMES, animate_phonemes, deform, frame_params, lip_gap, upper_face_track
from jambatalk.synth.visemes import classify

FPS = 30
# "_ ah b ah m ah _" with a long pause at each end
TIMELINE = [["_", 0.0, 0.4], ["ɑː", 0.4, 0.65], ["b", 0.65, 0.7], ["ɑː", 0.7, 0.95], ["m", 0.95, 1.02],
            ["ɑː", 1.02, 1.3], ["_", 1.3, 1.9]]


def _gap(phonemes, duration, seed=0):
    h = default_head()
    verts, params = animate_phonemes(h, phonemes, duration, FPS, seed=seed)
    return lip_gap(h, verts), params


def test_bilabials_close_the_lips_and_vowels_open_them():
    gap, _ = _gap(TIMELINE, 1.9)
    t = np.arange(len(gap)) / FPS
    for _sym, start, end in (TIMELINE[2], TIMELINE[4]):
        hold = (t >= start - 1 / FPS) & (t <= end + 1 / FPS)
        assert gap[hold].min() < 5e-4
    for _sym, start, end in (TIMELINE[1], TIMELINE[3], TIMELINE[5]):
        assert gap[(t >= start) & (t <= end)].max() > 4e-3


def test_silence_keeps_the_mouth_closed():
    gap, params = _gap(TIMELINE, 1.9)
    t = np.arange(len(gap)) / FPS
    assert gap[t < 0.2].max() < 2e-4 and gap[t > 1.6].max() < 2e-4
    assert gap.max() > 5e-3


def test_no_step_changes():
    _, params = _gap(TIMELINE, 1.9)
    jaw = params[:, PARAM_NAMES.index("jaw")]
    assert np.abs(np.diff(jaw)).max() < 0.3 * jaw.max()


def test_upper_face_is_independent_of_phonemes():
    other = [["_", 0.0, 0.2], ["iː", 0.2, 0.9], ["f", 0.9, 1.0], ["uː", 1.0, 1.6], ["_", 1.6, 1.9]]
    n = int(1.9 * FPS)
    a = frame_params(TIMELINE, n, FPS, seed=7)
    b = frame_params(other, n, FPS, seed=7)
    upper = [PARAM_NAMES.index("blink"), PARAM_NAMES.index("brow")]
    mouth = [PARAM_NAMES.index("jaw"), PARAM_NAMES.index("round")]
    assert np.array_equal(a[:, upper], b[:, upper])
    assert not np.allclose(a[:, mouth], b[:, mouth])
    long = upper_face_track(300, FPS, 3)
    assert np.array_equal(long[:100], upper_face_track(100, FPS, 3))  # a sequential process in time
    assert long[:, 0].max() > 0.8  # blinks happen in 10 s
    assert not np.array_equal(long, upper_face_track(300, FPS, 4))


def test_deformations_act_where_they_should():
    h = default_head()
    p = np.zeros((5, len(PARAM_NAMES)), np.float32)
    p[1, PARAM_NAMES.index("round")] = 1.0
    p[2, PARAM_NAMES.index("spread")] = 1.0
    p[3, PARAM_NAMES.index("blink")] = 1.0
    p[4, PARAM_NAMES.index("brow")] = 1.0
    v = deform(h, p)
    assert np.array_equal(v[0], h.vertices)
    lips = h.regions["lips"]
    width = np.ptp(v[:, h.regions["mouth_upper_edge"], 0], axis=1)
    assert width[1] < 0.85 * width[0] < width[2]  # rounding narrows, spreading widens
    assert v[1, lips, 2].mean() > v[0, lips, 2].mean()  # and rounding protrudes
    drop = h.vertices[h.regions["eyelids"], 1] - v[3, h.regions["eyelids"], 1]
    assert drop.max() > 0.5 * h.anchors["eye_opening"]  # the upper lid comes down over the eye
    upper, mouth = h.regions["upper_face"], h.regions["lips"]
    for frame in (1, 2):  # the mouth leaves the upper face alone, and the eyes and brows the mouth
        assert np.abs(v[frame, upper] - h.vertices[upper]).max() == 0
    for frame in (3, 4):
        assert np.abs(v[frame, mouth] - h.vertices[mouth]).max() == 0
    assert np.abs(v[4, h.regions["brows"], 1] - h.vertices[h.regions["brows"], 1]).max() > 2e-3


def test_bad_parameters_are_refused():
    with pytest.raises(InputError, match="expected"):
        deform(default_head(), np.zeros((3, 2)))


@pytest.mark.skipif(not espeak.available(), reason="libespeak-ng is not installed (apt-get install libespeak-ng1)")
def test_bilabials_close_in_synthesised_speech():
    utt = espeak.synthesize("Bob and Mary bought a big map of Paris.", "en-us+m3", seed=1)
    h = default_head()
    verts, _ = animate_phonemes(h, utt.phonemes, utt.duration, FPS)
    gap = lip_gap(h, verts)
    t = np.arange(len(gap)) / FPS
    bilabials = [p for p in utt.phonemes if classify(p[0]) == "bilabial"]
    assert len(bilabials) >= 5
    for _sym, start, end in bilabials:
        assert gap[(t >= start - 1 / FPS) & (t <= end + 1 / FPS)].min() < 1e-3
    open_vowels = [p for p in utt.phonemes if classify(p[0]) in ("open", "open_rounded")]
    peaks = [gap[(t >= s) & (t <= e)].max() for _sym, s, e in open_vowels if (e - s) > 1 / FPS]
    assert peaks and np.median(peaks) > 3e-3
