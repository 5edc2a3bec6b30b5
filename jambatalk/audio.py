"""The library's one audio loader: any file or array -> 16 kHz mono float32."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import warnings
from math import gcd
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["SAMPLE_RATE", "is_real_number", "is_whole_number", "load_audio", "resample", "to_mono_float"]

#: Sample rate of every waveform the models see.
SAMPLE_RATE = 16000

#: Sampling rates taken from a file header or ``sample_rate=``: outside them the rate is a mistake (a 64 KB WAV
#: whose header says 1 Hz would read as 8.9 hours and be resampled to gigabytes)
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000

#: the largest sample magnitude taken: float PCM lies within [-1, 1], and integer PCM stored as floats within 2^31;
#: beyond, the samples are not audio (values near 3e38 overflowed the model, whose output then looked damaged)
MAX_AMPLITUDE = 1e10
#: float samples beyond this are integer PCM stored as floats (float PCM lies within [-1, 1]; a mix can overshoot
#: a little): they are scaled as 16-bit PCM (to 32768) or 32-bit PCM (beyond)
INTEGER_RANGE_PEAK = 2.0


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling along the last axis."""
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr == target_sr:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(orig_sr, target_sr)
    return resample_poly(audio, target_sr // g, orig_sr // g, axis=-1).astype(np.float32)


def is_real_number(x) -> bool:
    """Whether ``x`` is a Python or NumPy int or float (a bool is not: True would pass as 1)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def is_whole_number(x) -> bool:
    """Whether ``x`` is a real number (:func:`is_real_number`) of a whole, finite value: 3 or 3.0, not 3.5 or inf."""
    return is_real_number(x) and math.isfinite(x) and float(x).is_integer()


def to_mono_float(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """Integer or float PCM of shape (N,), (N, C) or (C, N) -> float32 mono (N,) in [-1, 1]."""
    audio = np.asarray(audio)
    if audio.dtype.kind not in "iuf":
        raise InputError(f"{name} has dtype {audio.dtype}, not PCM samples", "pass integer or float samples")
    if audio.dtype.kind == "u":  # unsigned PCM (8-bit wav) is centred on half its range
        bits = audio.dtype.itemsize * 8
        audio = (audio.astype(np.float64) - 2 ** (bits - 1)) / 2 ** (bits - 1)
    elif audio.dtype.kind == "i":
        audio = audio.astype(np.float64) / float(-np.iinfo(audio.dtype).min)
    if audio.ndim == 2 and audio.size == 0:  # no samples, however many channels: empty, not a mean of nothing
        audio = audio.reshape(0)
    elif audio.ndim == 2:
        # channels are the short axis: (N, C) as written by soundfile, or (C, N) as in torchaudio
        channel_axis = 1 if audio.shape[1] <= audio.shape[0] else 0
        channels = np.moveaxis(audio, channel_axis, 0)
        audio = channels.mean(axis=0)
        if len(channels) > 1:
            audio = _uncancelled(audio, channels, name)
    elif audio.ndim != 1:
        raise InputError(
            f"{name} has shape {audio.shape}; expected (samples,), (samples, channels) or (channels, samples)",
            "pass a 1-D or 2-D array",
        )
    return np.ascontiguousarray(audio, dtype=np.float32)


#: a mix of channels this much quieter than its loudest channel (-26 dB) cancelled itself: one channel is the
#: other inverted (a microphone pair wired out of phase), and the mix is near silence
CANCELLED_MIX = 0.05


def _uncancelled(mix: np.ndarray, channels: np.ndarray, name: str) -> np.ndarray:
    """The mix of ``channels``, or, where the channels cancel out in it, the loudest channel alone (with a warning)."""
    with np.errstate(over="ignore", invalid="ignore"):
        rms = np.sqrt(np.mean(np.square(channels, dtype=np.float64), axis=1))
        mix_rms = float(np.sqrt(np.mean(np.square(mix, dtype=np.float64))))
    loudest = int(np.argmax(rms))
    if not (rms[loudest] > 0 and mix_rms < CANCELLED_MIX * rms[loudest]):
        return mix
    under = 20 * math.log10(rms[loudest] / max(mix_rms, 1e-300))
    warnings.warn(f"the {len(channels)} channels of {name} cancel out when mixed to mono (one is the other "
                  f"inverted: the mix is {under:.0f} dB under its loudest channel); using channel {loudest + 1} alone",
                  stacklevel=4)
    return channels[loudest]


def _read_with_soundfile(path: Path):
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data, sr


def _read_with_ffmpeg(path: Path):
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path),
           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(proc.stderr.decode(errors="replace").strip() or "ffmpeg decoded no samples")
    return np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, 1), SAMPLE_RATE


def _wav_cut_short(path: Path) -> tuple[float, float] | None:
    """(seconds a WAV file's header announces, seconds its file holds) when it holds fewer (a download or copy cut
    short: the decoders read what is there without a word); None otherwise, or when it is not a plain WAV file."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            byte_rate = 0
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if kind == b"data":
                    break
                if kind == b"fmt " and size >= 12:
                    byte_rate = struct.unpack("<I", f.read(12)[8:12])[0]
                    size -= 12
                f.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to an even length
            held = os.fstat(f.fileno()).st_size - f.tell()
    except OSError:
        return None
    if not byte_rate or size in (0, 0xFFFFFFFF) or size <= held:  # 0 or 0xFFFFFFFF: written to a pipe, size unknown
        return None
    return size / byte_rate, held / byte_rate


def _mp3_cut_short(path: Path) -> tuple[float, float] | None:
    """(seconds an MP3 file's Xing/Info header announces, about how many its file holds) when it holds under 99% of
    the bytes announced (libmpg123's own tolerance); None otherwise, or when the file has no such header.

    The header sits in the first MPEG Layer III frame, after any ID3v2 tag: its frame count gives the
    length, its byte count the size of the stream that the file should hold."""
    try:
        with open(path, "rb") as f:
            tag = f.read(10)
            start = 0
            if len(tag) == 10 and tag[:3] == b"ID3":  # ID3v2: a 28-bit "syncsafe" size, then a footer if flagged
                size = (tag[6] & 0x7F) << 21 | (tag[7] & 0x7F) << 14 | (tag[8] & 0x7F) << 7 | (tag[9] & 0x7F)
                start = 10 + size + (10 if tag[5] & 0x10 else 0)
            f.seek(start)
            frame = f.read(52)  # the frame header (4 bytes), side information (up to 32), the Xing fields (16)
            held = os.fstat(f.fileno()).st_size - start
    except OSError:
        return None
    if len(frame) < 4 or frame[0] != 0xFF or frame[1] & 0xE0 != 0xE0:
        return None
    version, layer, rate_index = (frame[1] >> 3) & 3, (frame[1] >> 1) & 3, (frame[2] >> 2) & 3
    if version == 1 or layer != 1 or rate_index == 3:  # reserved version, not Layer III, reserved rate
        return None
    mono = frame[3] >> 6 == 3
    mpeg1 = version == 3  # MPEG-1; 2 is MPEG-2, 0 MPEG-2.5
    offset = 4 + ((17 if mono else 32) if mpeg1 else (9 if mono else 17))
    fields = frame[offset: offset + 16]
    if len(fields) < 16 or fields[:4] not in (b"Xing", b"Info"):
        return None
    flags, frames, size = struct.unpack(">III", fields[4:])
    if flags & 3 != 3 or not frames or not size or held >= 0.99 * size:  # both the frame and the byte count given
        return None
    rate = (44100, 48000, 32000)[rate_index] >> (0 if mpeg1 else 1 if version == 2 else 2)
    announced = frames * (1152 if mpeg1 else 576) / rate
    return announced, announced * held / size


def _read_file(path: Path, short_mp3: bool = False) -> tuple[np.ndarray, int]:
    """The samples and rate of an audio file; ``short_mp3``: an MP3 file cut short, which ffmpeg reads first (the
    libmpg123 inside soundfile prints its own line about it)."""
    if not path.exists():
        raise InputError(f"audio file '{path}' does not exist", "check the path")
    if path.is_dir():
        raise InputError(f"'{path}' is a folder, not an audio file", "pass a .wav, .flac, .mp3 or .ogg file")
    errors = []
    readers = (_read_with_ffmpeg, _read_with_soundfile) if short_mp3 else (_read_with_soundfile, _read_with_ffmpeg)
    for reader in readers:
        try:
            return reader(path)
        except Exception as exc:  # noqa: BLE001 - every decoder failure is reported together below
            errors.append(f"{reader.__name__.removeprefix('_read_with_')}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    raise InputError(
        f"'{path}' could not be read as audio ({'; '.join(errors)})",
        "pass a .wav, .flac, .mp3 or .ogg file with speech",
    )


def _read_file_object(audio, label: str) -> tuple[np.ndarray, int]:
    """An open file or in-memory buffer holding an audio file (soundfile reads from it; ffmpeg needs a path)."""
    import io

    import soundfile as sf

    if isinstance(audio, io.TextIOBase):
        raise InputError(f"{label} was opened in text mode, which cannot hold audio samples",
                         "open it in binary mode (open(path, 'rb')), or pass its path")
    try:
        return sf.read(audio, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises several kinds for data it cannot read
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{label} could not be read as audio (soundfile: {first})",
                         "pass a .wav, .flac or .ogg file opened in binary mode ('rb'), or the file's path (then "
                         "ffmpeg reads mp3 and other formats too)") from None


def load_audio(audio, sample_rate: int | None = None, *, name: str | None = None) -> np.ndarray:
    """Load speech as 16 kHz mono float32.

    Args:
        audio: a path (wav, flac, mp3, ogg, or anything ffmpeg reads), a file opened in binary mode or its
            bytes (wav, flac, ogg), or an array / tensor of shape (N,), (N, C) or (C, N), integer or float PCM.
        sample_rate: the sampling rate of an array (required for arrays, ignored for files).
    Returns:
        float32 array (N,) at :data:`SAMPLE_RATE`.
    """
    if isinstance(audio, (bytes, bytearray, memoryview)):  # a file's contents, e.g. read from a request
        import io

        audio, name = io.BytesIO(bytes(audio)), name or f"audio bytes ({len(audio)} bytes)"
    from_file = isinstance(audio, (str, os.PathLike)) or hasattr(audio, "read")  # an open file, a BytesIO
    if isinstance(audio, (str, os.PathLike)):
        if not str(os.fspath(audio)).strip():
            raise InputError("the audio file name is empty", "pass a speech file's path, e.g. speech.wav")
        path = Path(audio)
        label = name or f"audio file '{path}'"
        short_mp3 = _mp3_cut_short(path) if path.is_file() else None
        data, sr = _read_file(path, short_mp3=short_mp3 is not None)
        short = short_mp3 or _wav_cut_short(path)
        if short:
            about = "about " if short_mp3 else ""
            warnings.warn(f"{label} is cut short: its header announces {short[0]:.2f} s of audio but the file holds "
                          f"{about}{short[1]:.2f} s; animating what is there (copy or export it again for the rest)",
                          stacklevel=2)
    elif from_file:
        file_name = getattr(audio, "name", None)
        label = name or (f"audio file '{file_name}'" if isinstance(file_name, str) else "audio file object")
        data, sr = _read_file_object(audio, label)
    else:
        label = name or "audio array"
        if audio is None or isinstance(audio, (bool, int, float, complex, dict, set)):
            raise InputError(f"the audio is {audio!r}", "pass a speech file's path, a file opened in binary mode, "
                             "or an array of samples with sample_rate=...")
        if hasattr(audio, "detach"):
            audio = audio.detach().cpu()
            if audio.is_floating_point() and audio.element_size() < 4:  # numpy has no bfloat16
                audio = audio.float()
            audio = audio.numpy()
        if isinstance(audio, (list, tuple)) and any(np.ndim(x) for x in audio):
            raise InputError(f"the audio is a {type(audio).__name__} of {len(audio)} arrays: it would be mixed "
                             "into one clip", "animate one clip per call; for the channels of one recording pass "
                             "np.stack(channels)")
        if sample_rate is None:
            raise InputError(f"{label} was given without its sampling rate", "pass sample_rate=... (e.g. 16000)")
        data, sr = np.asarray(audio), sample_rate
    if not is_whole_number(sr) or sr <= 0:
        raise InputError(f"{label}: sampling rate {sr!r} is not a positive whole number", "pass e.g. sample_rate=16000")
    if from_file and sample_rate is not None and sample_rate != sr:
        warnings.warn(f"sample_rate={sample_rate!r} was given for {label}, which is read at its own rate, {int(sr)} "
                      "Hz (sample_rate is for arrays of samples)", stacklevel=2)
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        fix = ("its header is damaged: re-export the recording" if from_file
               else "pass the rate the samples were recorded at, e.g. sample_rate=16000")
        raise InputError(f"{label}: sampling rate {int(sr)} Hz is outside the {MIN_SAMPLE_RATE} Hz to "
                         f"{MAX_SAMPLE_RATE // 1000} kHz that recordings use", fix)
    mono = to_mono_float(data, label)
    if mono.size == 0:
        raise InputError(f"{label} is empty (0 samples)", "pass a recording with speech (silence is fine)")
    if not np.isfinite(mono).all():
        bad = int((~np.isfinite(mono)).sum())
        raise InputError(f"{label} has {bad} non-finite samples (NaN or inf)", "clean or re-export the recording")
    return resample(check_amplitude(mono, label, stacklevel=3), int(sr), SAMPLE_RATE)


def check_amplitude(mono: np.ndarray, label: str, scale_integer_range: bool = True, stacklevel: int = 2) -> np.ndarray:
    """Finite float samples ``mono`` within audio's range: an InputError beyond :data:`MAX_AMPLITUDE`; beyond
    :data:`INTEGER_RANGE_PEAK`, integer PCM stored as floats, divided by its type's range with a warning (or, with
    ``scale_integer_range`` False, where the whole signal is not known, refused)."""
    peak = float(np.abs(mono).max()) if mono.size else 0.0
    if peak > MAX_AMPLITUDE:
        raise InputError(f"{label} has samples as large as {peak:.3g}, out of range for audio (float samples lie "
                         "within [-1, 1])", "check the recording or array: re-export it, or scale it into [-1, 1]")
    if peak > INTEGER_RANGE_PEAK and not scale_integer_range:
        raise InputError(f"{label} holds float samples as large as {peak:.6g}, far outside [-1, 1] (integer samples "
                         "stored as floats?)", "pass float samples within [-1, 1] (divide 16-bit values by 32768), "
                         "or the integer array itself")
    if peak > INTEGER_RANGE_PEAK:  # integer PCM stored as floats: at its own scale a video's sound track clips
        scale = 32768.0 if peak <= 32768.0 else 2.0 ** 31
        warnings.warn(f"{label} holds float samples as large as {peak:.6g}, far outside [-1, 1]: integer samples "
                      f"stored as floats, read as {'16' if scale == 32768.0 else '32'}-bit PCM (divided by "
                      f"{scale:.0f}); store floats within [-1, 1] to keep this message away", stacklevel=stacklevel)
        mono = mono / np.float32(scale)
    return mono


def as_samples(samples, what: str, large_floats: str = "scale") -> np.ndarray:
    """Audio given to ``what`` (a 1-D array or tensor of 16 kHz mono samples) as float32, integer PCM scaled into
    [-1, 1] by its type's range as :func:`jambatalk.load_audio` scales it; an InputError for a file name, text,
    None, something that holds no numbers (bool and complex too), more than one channel, NaN / infinite samples
    or samples out of audio's range. Float samples far outside [-1, 1] (integer PCM stored as floats?) are, by
    ``large_floats``: ``"scale"``d with a warning, as :func:`jambatalk.load_audio` does (the whole audio is
    known); ``"refuse"``d (a chunk of a stream, whose scale would depend on the chunking); or ``"keep"``t as they
    are (the model's own call, which normalises its input)."""
    if isinstance(samples, (str, bytes, os.PathLike)) or samples is None:
        raise InputError(f"{what} takes audio samples (an array of 16 kHz mono floats), not "
                         f"{'a file name or text' if samples is not None else 'None'} ({samples!r})",
                         "read a file with jambatalk.load_audio(path) and pass the array it returns")
    if hasattr(samples, "detach"):  # a torch tensor (torch is not imported here)
        samples = samples.detach().cpu()
        samples = samples.float() if samples.is_floating_point() else samples  # numpy has no bfloat16
    try:
        x = np.asarray(samples)
        if x.dtype.kind not in "iuf":
            raise TypeError(f"dtype {x.dtype}")
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} takes audio samples (an array of 16 kHz mono floats), not "
                         f"{type(samples).__name__} ({exc})", "pass a 1-D float array") from None
    if x.ndim != 1:
        raise InputError(f"{what} takes a 1-D array of 16 kHz mono samples, got shape {x.shape}",
                         "pass one channel, e.g. samples.mean(axis=1) for stereo")
    if x.size and not np.all(np.isfinite(x)):
        raise InputError(f"the audio given to {what} contains NaN or infinite samples", "clean the input signal")
    if x.dtype.kind in "iu":
        return to_mono_float(x, f"the audio given to {what}")
    if large_floats != "keep":
        x = check_amplitude(x, f"the audio given to {what}", scale_integer_range=large_floats == "scale", stacklevel=4)
    elif x.size and float(np.abs(x).max()) > MAX_AMPLITUDE:
        check_amplitude(x, f"the audio given to {what}")  # its error
    return x.astype(np.float32, copy=False)
