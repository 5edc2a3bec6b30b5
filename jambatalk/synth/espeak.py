"""A ctypes binding to libespeak-ng: speech audio and phoneme timings for a sentence.

espeak-ng is a process-global state machine, and its waveform generator keeps state from one
utterance to the next (glottal phase, filters), so the same sentence synthesised twice in one
process gives slightly different samples. :func:`synthesize` therefore runs each utterance, by
default, in a short-lived forked child that initialises the library afresh: the result depends
only on the arguments. Calls are serialised with a lock; for parallel work use processes.

Phoneme names are IPA (espeak's ``espeakINITIALIZE_PHONEME_IPA``); pauses are reported as ``"_"``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, MissingDependencyError

__all__ = ["Utterance", "synthesize", "available", "espeak_library", "SILENCE"]

#: Symbol used for pauses (espeak reports them with an empty IPA name).
SILENCE = "_"

# speak_lib.h constants (API revision 12)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_PARAM_RANGE = 4

_LOCK = threading.Lock()
_STATE: dict = {}


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # sample offset from the start of the utterance
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Utterance:
    """Synthesised speech: ``audio`` float32 in [-1, 1] at ``sample_rate`` (espeak's native 22050 Hz)
    and ``phonemes``, a list of ``[symbol, start_s, end_s]`` covering the audio from 0 to its end."""

    audio: np.ndarray
    sample_rate: int
    phonemes: list

    @property
    def duration(self) -> float:
        return len(self.audio) / float(self.sample_rate)


def espeak_library():
    """Load libespeak-ng (cached) or raise :class:`MissingDependencyError` naming the package."""
    lib = _STATE.get("lib")
    if lib is not None:
        return lib
    names = ["libespeak-ng.so.1", "libespeak-ng.so", "libespeak-ng.1.dylib", "libespeak-ng.dylib", "libespeak-ng.dll"]
    found = ctypes.util.find_library("espeak-ng")
    if found:
        names.insert(0, found)
    errors = []
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as exc:
            errors.append(str(exc))
    else:
        raise MissingDependencyError(
            "speech synthesis needs the espeak-ng library (libespeak-ng.so.1), which was not found",
            "install it with: sudo apt-get install espeak-ng libespeak-ng1 (Debian/Ubuntu), "
            "or brew install espeak-ng (macOS)",
        )
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    _STATE["lib"] = lib
    return lib


def available() -> bool:
    """True when libespeak-ng can be loaded and initialised."""
    try:
        espeak_library()
    except MissingDependencyError:
        return False
    return True


def _synthesize_here(text: str, voice: str, rate: int, pitch: int, pitch_range: int, seed: int):
    """Synthesise in this process (caller holds the lock). Returns (int16 samples, rate, events)."""
    lib = espeak_library()
    sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                        _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT)
    if sample_rate <= 0:
        raise MissingDependencyError("espeak-ng could not be initialised (its data folder espeak-ng-data is missing)",
                                     "reinstall the espeak-ng-data package (sudo apt-get install espeak-ng)")
    chunks: list[np.ndarray] = []
    events: list[tuple[int, int, str]] = []

    def on_audio(wav, n, ev):
        if wav and n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while ev[i].type != _EVENT_LIST_TERMINATED:
            e = ev[i]
            if e.type == _EVENT_PHONEME:
                name = bytes(e.id.string).split(b"\0", 1)[0].decode("utf-8", errors="replace")
                events.append((int(e.sample), int(e.audio_position), name))
            i += 1
        return 0

    callback = _CALLBACK(on_audio)
    _STATE["callback"] = callback  # keep it alive while the library holds it
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise InputError(f"espeak-ng has no voice '{voice}'",
                         "list voices with `espeak-ng --voices=en` and variants with `espeak-ng --voices=variant`")
    lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
    lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
    lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
    try:  # espeak-ng <= 1.51 draws frication noise from libc rand()
        ctypes.CDLL(None).srand(ctypes.c_uint(seed & 0xFFFFFFFF))
    except (OSError, AttributeError):
        pass
    data = text.encode("utf-8")
    err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if err != 0:
        raise InputError(f"espeak-ng could not synthesise {text[:40]!r} (error {err})", "pass plain text")
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return audio, int(sample_rate), events


def _synthesize_forked(args: tuple):
    """Run :func:`_synthesize_here` in a forked child so the library starts from a fresh state."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            try:
                payload = ("ok", _synthesize_here(*args))
            except BaseException as exc:  # noqa: BLE001 - sent back to the parent
                payload = ("error", exc)
            blob = pickle.dumps(payload)
            with os.fdopen(write_fd, "wb") as f:
                f.write(blob)
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        blob = f.read()
    os.waitpid(pid, 0)
    if not blob:
        raise RuntimeError("the espeak-ng child process died without a result")
    status, value = pickle.loads(blob)
    if status == "error":
        raise value
    return value


def _to_phonemes(events: list, n_samples: int, sample_rate: int) -> list:
    """Phoneme start events -> ``[symbol, start_s, end_s]`` intervals tiling [0, duration]."""
    duration = n_samples / float(sample_rate)
    starts: list[tuple[float, str]] = []
    for sample, _ms, name in events:
        t = min(max(sample, 0), n_samples) / float(sample_rate)
        symbol = name.strip() or SILENCE
        if starts and t <= starts[-1][0]:
            if symbol != SILENCE:
                starts[-1] = (starts[-1][0], symbol)  # zero-length phoneme: keep the later, non-pause one
            continue
        starts.append((t, symbol))
    if not starts or starts[0][0] > 0.0:
        starts.insert(0, (0.0, SILENCE))
    out = []
    for i, (t, symbol) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else duration
        if end > t:
            if out and symbol == SILENCE and out[-1][0] == SILENCE:
                out[-1][2] = round(end, 6)
            else:
                out.append([symbol, round(t, 6), round(end, 6)])
    if out:
        out[-1][2] = round(duration, 6)
    return out


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50,
               seed: int = 0, isolate: bool = True) -> Utterance:
    """Speak ``text`` with espeak-ng.

    Args:
        text: the sentence (UTF-8 text).
        voice: an espeak-ng voice with optional variant, e.g. ``"en-us"``, ``"en+m3"``, ``"en-us+f2"``.
        rate: words per minute (80..450, espeak's default 175).
        pitch, pitch_range: base pitch and its range, 0..100 (default 50).
        seed: seeds the noise source for fricatives, so output is reproducible.
        isolate: run in a forked child with a fresh library state (deterministic); where fork is not
            available, or with ``isolate=False``, run in this process (output may depend on earlier calls).
    Returns:
        :class:`Utterance` with float32 audio at 22050 Hz and IPA phoneme intervals in seconds.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError("no text to synthesise", "pass a non-empty sentence")
    if not 20 <= int(rate) <= 900:
        raise InputError(f"speaking rate {rate} is outside 20..900 words per minute", "pass e.g. rate=175")
    espeak_library()  # fail early, in this process, with the clear error
    args = (text, str(voice), int(rate), int(pitch), int(pitch_range), int(seed))
    with _LOCK:
        if isolate and hasattr(os, "fork"):
            samples, sample_rate, events = _synthesize_forked(args)
        else:
            samples, sample_rate, events = _synthesize_here(*args)
    if samples.size == 0:
        raise InputError(f"espeak-ng produced no audio for {text[:40]!r}", "pass text with speakable words")
    audio = (samples.astype(np.float32) / 32768.0).astype(np.float32)
    return Utterance(audio, sample_rate, _to_phonemes(events, len(samples), sample_rate))
