"""The Python API: ``animate(audio, template)`` -> :class:`Animation`."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .audio import SAMPLE_RATE, is_real_number, is_whole_number, load_audio
from .errors import CheckpointError, InputError

__all__ = ["Animation", "animate", "load_model", "default_model_path", "resample_frames", "stream_file", "live_delays",
           "stream_verdict"]

DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default"
MESH_FRAME_FORMATS = (".obj", ".ply")
#: the highest output frame rate animate() takes (fps=1e6 made 100,000 frames of 0.1 s of speech, 3.6 GB)
MAX_FPS = 1000.0


def default_model_path() -> Path:
    return DEFAULT_MODEL_DIR


def resample_frames(vertices: np.ndarray, src_fps: float, dst_fps: float,
                    duration: Optional[float] = None) -> np.ndarray:
    """Linear interpolation of a (T, V, 3) sequence from one frame rate to another.

    ``duration``: the seconds the frames should cover (the speech's), so that the new rate has as many whole
    frames as the speech holds (the last source frame is held where they reach past it); else the source
    frames' own span, T / ``src_fps``. At equal rates the frames come back as they are (not copied), cut or
    held to ``duration``.
    """
    if len(vertices) < 1:
        return vertices
    n = None if duration is None else max(1, int(duration * dst_fps + 1e-6))
    if abs(src_fps - dst_fps) < 1e-9:
        if n is None or n == len(vertices):
            return vertices
        return vertices[:n] if n < len(vertices) else np.concatenate(
            [vertices, np.repeat(np.asarray(vertices[-1:]), n - len(vertices), axis=0)])
    if n is None:
        n = max(1, int(len(vertices) / src_fps * dst_fps + 1e-6))
    t = np.arange(n) / dst_fps * src_fps
    i0 = np.clip(np.floor(t).astype(int), 0, len(vertices) - 1)
    i1 = np.clip(i0 + 1, 0, len(vertices) - 1)
    w = (t - i0)[:, None, None].astype(np.float32)
    out = np.empty((n, *np.shape(vertices)[1:]), dtype=np.float32)
    # in blocks of about 4 M coordinates: each term is as large as its block, not as the whole output (10 min at
    # 60 fps of a FLAME head is 1.2 GB, and five such arrays were made)
    step = max(1, (1 << 22) // max(1, int(np.prod(np.shape(vertices)[1:]))))
    for a in range(0, n, step):
        b = min(n, a + step)
        out[a:b] = (1 - w[a:b]) * vertices[i0[a:b]] + w[a:b] * vertices[i1[a:b]]
    return out


@dataclass
class Animation:
    """An animated mesh sequence and the speech that drives it."""

    vertices: np.ndarray  # (T, V, 3) float32
    template: np.ndarray  # (V, 3) float32
    faces: Optional[np.ndarray]  # (F, 3) int64, or None
    fps: float
    audio: np.ndarray  # (N,) float32, 16 kHz mono

    sample_rate = SAMPLE_RATE

    def __len__(self) -> int:
        return len(self.vertices)

    @property
    def duration(self) -> float:
        return len(self.vertices) / self.fps

    def clip(self, start: float = 0.0, end: Optional[float] = None) -> Animation:
        """The part from ``start`` to ``end`` seconds (default: to the end) as a new Animation: the frames whose
        time ``i / fps`` lies in [start, end), and the speech of those frames (from the first one's time to the
        last one's end), so that a video of it stays in sync. Every array is a copy."""
        for name, value in (("start", start), ("end", end)):
            if value is not None and not (is_real_number(value) and np.isfinite(value)):
                raise InputError(f"clip {name} is {value!r}, not a number of seconds", "pass seconds, e.g. "
                                 "anim.clip(1.5, 4.0)")
        end = self.duration if end is None else float(end)
        if not 0 <= start < end:
            raise InputError(f"clip({start!r}, {end!r}) is not a span of this {self.duration:.2f} s animation",
                             "pass 0 <= start < end, in seconds")
        first = int(np.ceil(start * self.fps - 1e-6))
        stop = min(len(self.vertices), int(np.ceil(end * self.fps - 1e-6)))
        if first >= stop:
            raise InputError(f"clip({start!r}, {end!r}) holds no frame: this animation has {len(self.vertices)} "
                             f"at {self.fps:g} fps ({self.duration:.2f} s)", "pass a span that holds a frame")
        audio = np.asarray(self.audio)
        a, b = (min(len(audio), int(round(i / self.fps * SAMPLE_RATE))) for i in (first, stop))
        return Animation(np.array(self.vertices[first:stop]), np.array(self.template),
                         None if self.faces is None else np.array(self.faces), self.fps, audio[a:b].copy())

    def save(self, path: Union[str, os.PathLike], *, size: int = 800, mesh_format: Optional[str] = None,
             progress: bool = True) -> Path:
        """Save by extension: .npy (vertices), .npz (everything), .mp4 (rendered with the audio, ``size`` pixels
        square), or a folder (a path without extension) of per-frame meshes (``mesh_format`` .obj, the default,
        or .ply)."""
        from .fileio import atomic_dir, atomic_path, check_output_path

        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"the path to save to is {path!r}, not a file or folder name", "pass a str or Path: "
                             ".npy, .npz, .mp4, or a folder name without extension")
        if mesh_format is not None and not isinstance(mesh_format, str):
            raise InputError(f"mesh_format is {mesh_format!r}", "pass '.obj' or '.ply'")
        path = Path(path)
        _saved_as_file(path)  # an extension it cannot save as is refused first
        suffix = path.suffix.lower()
        if mesh_format is not None and suffix in (".npy", ".npz", ".mp4"):
            raise InputError(f"mesh_format={mesh_format!r} was given, but '{path.name}' is one {suffix} file, not a "
                             "folder of per-frame meshes", "leave mesh_format out, or save to a folder name without "
                             f"extension (e.g. '{path.with_suffix('')}')")
        mesh_format = ".obj" if mesh_format is None else mesh_format
        self._check_contents()
        check_output_path(path)
        if suffix in (".npy", ".npz", ".mp4") and path.is_dir():
            raise InputError(f"cannot write '{path}': it is a folder", "choose a file name that is not a folder")
        if suffix == ".npy":
            with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a handle: numpy names no file itself
                np.save(f, np.asarray(self.vertices, dtype=np.float32))  # no copy of float32 frames
        elif suffix == ".npz":
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, vertices=np.asarray(self.vertices, dtype=np.float32), template=self.template,
                         faces=np.zeros((0, 3), np.int64) if self.faces is None else self.faces,
                         fps=np.float64(self.fps), audio=self.audio, sample_rate=np.int64(SAMPLE_RATE))
        elif suffix == ".mp4":
            if self.faces is None or len(self.faces) == 0:
                raise InputError("cannot render a video: this animation has no faces (the template was a bare "
                                 "vertex array)", "pass a template mesh file (.ply/.obj) or save as .npy/.npz")
            from .render import render_video

            audio = self.audio if np.size(self.audio) else None  # no speech: a silent video
            render_video(path, self.vertices, self.faces, fps=self.fps, audio=audio, sample_rate=SAMPLE_RATE,
                         size=size, progress=progress)
        else:  # a folder of per-frame meshes
            fmt = (mesh_format if mesh_format.startswith(".") else f".{mesh_format}").lower()
            if fmt not in MESH_FRAME_FORMATS:
                raise InputError(f"mesh format '{mesh_format}' is not supported", "use .obj or .ply")
            from .mesh import save_mesh

            digits = max(4, len(str(len(self.vertices))))
            path = path.resolve()  # '.' or 'dir/..' name the folder itself
            check_frame_folder(path)
            with atomic_dir(path) as tmp:
                for i, frame in enumerate(self.vertices):
                    save_mesh(tmp / f"frame_{i:0{digits}d}{fmt}", frame, self.faces)
        return path

    def _check_contents(self) -> None:
        """An InputError for what :meth:`load` and ``jambatalk render`` would refuse to read back: a frame rate that
        is not positive and finite, non-finite or misshapen vertices, a template of other vertices."""
        if not (is_real_number(self.fps) and 0 < self.fps < float("inf")):
            raise InputError(f"this animation's fps is {self.fps!r}", "set a positive frame rate, e.g. anim.fps = 30")
        v = np.asarray(self.vertices)
        if v.ndim != 3 or v.shape[2] != 3 or len(v) == 0:
            raise InputError(f"this animation's vertices have shape {v.shape}, not (T, V, 3) with T >= 1",
                             "give one (V, 3) mesh per frame")
        if not np.isfinite(v).all():
            bad = np.flatnonzero(~np.isfinite(v).all(axis=(1, 2)))
            raise InputError(f"this animation's vertices are NaN or infinite in {len(bad)} of {len(v)} frames "
                             f"(first: frame {int(bad[0])})", "repair or drop those frames before saving")
        if np.shape(self.template) != v.shape[1:]:
            raise InputError(f"this animation's template has shape {np.shape(self.template)}, its frames "
                             f"{v.shape[1:]}", "give the template the frames were made from")
        if self.faces is not None:
            f = np.asarray(self.faces)
            if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu":
                raise InputError(f"this animation's faces have shape {f.shape} and dtype {f.dtype}, not (F, 3) "
                                 "vertex indices", "give triangles as an (F, 3) integer array, or faces=None")
            if f.size and (f.min() < 0 or f.max() >= v.shape[1]):
                raise InputError(f"this animation's faces index vertices {int(f.min())} to {int(f.max())}, but its "
                                 f"frames have {v.shape[1]} vertices", "give the faces of the mesh the frames were "
                                 "made for, or faces=None")

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> Animation:
        """Read an animation written as .npz by :meth:`save`."""
        fix = "pass a .npz written by Animation.save"
        if isinstance(path, (str, os.PathLike)):
            path = Path(path)
            if path.is_dir():
                raise InputError(f"'{path}' is a folder, not an animation file", fix)
            if not path.is_file():
                raise InputError(f"animation file '{path}' does not exist", "check the path")
        elif not hasattr(path, "read"):  # an open file is read as it is
            raise InputError(f"the path to load is {path!r}, not a file name",
                             "pass the .npz file's name (a str or Path)")
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - numpy raises ValueError, OSError, EOFError... by content
            why = "" if "allow_pickle" in str(exc) else f" ({str(exc).splitlines()[0]})"  # numpy's advice misleads here
            raise InputError(f"'{path}' is not a readable .npz file{why}", fix) from None
        if not hasattr(data, "files"):
            raise InputError(f"'{path}' holds one array (a .npy), not an animation: its speech, template and frame "
                             "rate are missing", f"{fix} (a .npy of vertices is read with np.load)")
        with data:
            missing = [k for k in ("vertices", "template", "faces", "fps", "audio") if k not in data.files]
            if missing:
                have = ", ".join(data.files) or "nothing"
                raise InputError(f"'{path}' has no {', '.join(missing)} (it has: {have}); it was not written by "
                                 "Animation.save", fix)
            fps = _stored_fps(data["fps"], path, fix)
            faces = data["faces"] if data["faces"].size else None
            audio = data["audio"]
            if "sample_rate" in data.files and audio.size:  # an Animation's speech is 16 kHz
                rate = data["sample_rate"]
                if rate.size != 1 or not is_whole_number(rate.item()):
                    raise InputError(f"'{path}' stores sample_rate {rate.tolist()!r}, not one whole number", fix)
                audio = load_audio(audio, int(rate.item()), name=f"the audio stored in '{path}'")
            return cls(data["vertices"], data["template"], faces, fps, audio)


def _stored_fps(value: np.ndarray, path, fix: str) -> float:
    """The frame rate an .npz file stores (``value``, its 'fps' array), or an InputError naming ``path`` where it is
    not one positive number."""
    if value.size != 1 or value.dtype.kind not in "iuf" or not 0 < float(value) < float("inf"):
        raise InputError(f"'{path}' stores fps {value.tolist()!r}, not a positive frame rate", fix)
    return float(value)


def _saved_as_file(path: Path) -> bool:
    """Whether :meth:`Animation.save` writes ``path`` as one file (.npy, .npz, .mp4) rather than a folder of
    per-frame meshes (no extension, or an existing folder); an InputError for any other extension."""
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz", ".mp4"):
        return True
    if suffix == "" or path.is_dir():
        return False
    raise InputError(f"cannot save an animation as '{suffix}' ({path})",
                     "use .npy, .npz, .mp4, or a folder name without extension")


def _check_one_frame(samples: np.ndarray, fps: float) -> None:
    """An InputError when 16 kHz ``samples`` last less than one frame at ``fps``."""
    if len(samples) < int(np.ceil(SAMPLE_RATE / fps)):
        raise InputError(f"the audio lasts {len(samples) / SAMPLE_RATE * 1000:.1f} ms, shorter than one video frame "
                         f"({1000 / fps:.1f} ms at {fps:g} fps)", "pass a longer recording")


def _finite(vertices: np.ndarray, model, where: str = "") -> np.ndarray:
    """The predicted vertices, or a CheckpointError naming the model (a folder, None for the built-in one) when
    any is NaN or infinite (damaged or diverged weights: nothing downstream could repair them)."""
    if not np.isfinite(vertices).all():
        name = "the built-in default model" if model is None else (
            f"the model '{model}'" if isinstance(model, (str, os.PathLike)) else "the model")
        raise CheckpointError(f"{name} predicted non-finite vertices (NaN or inf){where}: its weights are damaged or "
                              "its training diverged", "use another checkpoint (for a diverged run, an earlier one "
                              "or a lower learning rate)")
    return vertices


def _is_frame_file(f: Path) -> bool:
    """A per-frame mesh as :meth:`Animation.save` writes it into a folder (frame_<number>.obj / .ply)."""
    stem, _, number = f.stem.partition("_")
    return f.is_file() and stem == "frame" and number.isdigit() and f.suffix in MESH_FRAME_FORMATS


def _resolve_device(device):
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device {device!r} is not a torch device ({exc})", "pass e.g. 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for, but this torch has no usable CUDA device",
                         "use --device cpu (device='cpu'), or leave it out to use CUDA only when it is present")
    # a device torch can name may still be unusable here (mps, xla, hip, vulkan without their backends, cuda:5 on
    # one GPU), hold no data (meta), or be refused by the weights' reader (cpu:5): a tensor made there tells
    usable = device.type != "meta" and not (device.type == "cpu" and device.index not in (None, 0))
    if usable:
        try:
            torch.empty(1, device=device)
        except Exception:  # noqa: BLE001 - RuntimeError, NotImplementedError, AssertionError... by backend
            usable = False
    if not usable:
        count = torch.cuda.device_count() if device.type == "cuda" else 0
        gpus = f" (this machine's CUDA devices: cuda:0 to cuda:{count - 1})" if count else ""
        raise InputError(f"device '{device}' is not available here{gpus}", "use cpu (or cuda where a GPU is present)")
    return torch.device("cpu") if device.type == "cpu" else device  # cpu:0 is cpu (safetensors takes only 'cpu')


def load_model(path: Union[str, os.PathLike, None] = None, device=None):
    """Load a model folder (config.json + model.safetensors); None loads the built-in default."""
    from .model import JambaTalk

    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise InputError(f"the model path is {path!r}, not a folder name",
                         "pass a model folder (a str or Path), or None for the built-in model")
    if path is None:
        path = DEFAULT_MODEL_DIR
        if not (path / "model.safetensors").is_file():
            raise CheckpointError("this installation has no built-in default model",
                                  "pass a trained model folder (--checkpoint DIR / model=...)")
    return JambaTalk.from_pretrained(path, map_location=_resolve_device(device))


def _as_model(model, device):
    from .model import JambaTalk

    if isinstance(model, JambaTalk):
        return model.to(_resolve_device(device)) if device is not None else model
    if model is None or isinstance(model, (str, os.PathLike)):
        return load_model(model, device)
    raise InputError(f"model is a {type(model).__name__}", "pass a JambaTalk model, a model folder path, or None")


def animate(audio, template=None, model=None, *, sample_rate: Optional[int] = None, fps: Optional[float] = None,
            silence_gate: Optional[bool] = None, subject: Optional[int | str] = None, device=None) -> Animation:
    """Animate a face from speech.

    Args:
        audio: a speech file (wav, flac, mp3, ogg), one opened in binary mode or its bytes (wav, flac, ogg), or a
            1-D / 2-D array or tensor (then ``sample_rate`` is required).
        template: the neutral face: a mesh file (.ply, .obj), a .npy (V, 3), ``templates.pkl:SUBJECT``, or a
            (V, 3) array; None uses the model's own template.
        model: a loaded :class:`~jambatalk.model.JambaTalk`, a model folder, or None for the built-in model.
        fps: output frame rate (default: the model's); motion is predicted at the model's rate and resampled.
        silence_gate: close the mouth in pauses of the speech (:mod:`jambatalk.silence`); None: the model's
            setting (on for the built-in model).
        subject: the speaking style of a model trained with subjects (``model.n_subjects``): a training subject's
            name or its index; None: neutral.
        device: torch device (default: CUDA when available, else CPU).
    """
    if fps is not None and not (is_real_number(fps) and 0 < fps < float("inf")):
        raise InputError(f"fps is {fps!r}", "pass a positive frame rate, e.g. 30")
    if fps is not None and fps > MAX_FPS:
        raise InputError(f"fps {fps:g} is above the {MAX_FPS:g} frames per second animate makes",
                         "pass a video frame rate, e.g. 30")
    samples = load_audio(audio, sample_rate)
    net = _as_model(model, device)
    subject = net.subject_index(subject)  # before the template and the inference
    _check_one_frame(samples, net.fps)
    if fps is not None:
        _check_one_frame(samples, fps)
    faces = None
    if template is None:
        tpl = net.template.detach().cpu().numpy()
        if not np.any(tpl):
            raise InputError("this model carries no template of its own", "pass template=... (a mesh file or array)")
    else:
        from .mesh import load_template_for

        tpl, faces = load_template_for(template, net)
    if faces is None and net.faces.numel():
        faces = net.faces.cpu().numpy()
    vertices = _finite(net.predict(samples, tpl, silence_gate=silence_gate, subject=subject), model)
    out_fps = float(fps) if fps is not None else float(net.fps)
    vertices = resample_frames(vertices, net.fps, out_fps, duration=len(samples) / SAMPLE_RATE)
    return _own_animation(vertices, tpl, faces, out_fps, samples)


def _own_animation(vertices, template, faces, fps: float, audio) -> Animation:
    """An Animation holding its own template, faces and audio: they were views of the model's template and faces
    and of the caller's arrays, so that editing the animation in place changed the model."""
    return Animation(vertices=vertices, template=np.array(template, dtype=np.float32),
                     faces=None if faces is None else np.array(faces), fps=fps, audio=np.array(audio, dtype=np.float32))


def live_delays(compute_s, chunk_ends_s) -> np.ndarray:
    """How far each chunk's output lags its audio when chunks arrive live: chunk i's audio is complete at
    ``chunk_ends_s[i]``; its compute (``compute_s[i]``) starts then or when the chunk before it is done,
    whichever is later. Returns each chunk's delay (waiting + compute), in seconds."""
    compute = np.asarray(compute_s, np.float64)
    ends = np.asarray(chunk_ends_s, np.float64)
    delays = np.empty_like(compute)
    done = -np.inf
    for i, (arrive, took) in enumerate(zip(ends, compute)):
        done = max(arrive, done) + took
        delays[i] = done - arrive
    return delays


def stream_verdict(share: float, delays_ms: np.ndarray, chunk_ms: float, threads: int) -> str:
    """The end of :func:`stream_file`'s report: whether the stream keeps up with live audio (its compute, ``share``
    of the audio's duration, below 1), and on more than one thread, where it falls behind or its p99 delay behind
    live audio exceeds a chunk, the advice to run on one (threads that lose their core to other work hold the
    rest up)."""
    keeps_up = share < 1.0
    verdict = (f"{'keeps up with' if keeps_up else 'FALLS BEHIND'} live audio (compute {100 * share:.0f}% of the "
               "audio's duration)")
    p99 = float(np.percentile(delays_ms, 99))
    if threads > 1 and (not keeps_up or p99 > chunk_ms):
        why = "" if not keeps_up else f", but 1% of its chunks come over {p99:.0f} ms late, more than a chunk"
        verdict += (f"{why}; on a machine that other work keeps busy, {threads} threads wait on each other: "
                    "try OMP_NUM_THREADS=1")
    return verdict


def stream_file(audio, template=None, model=None, *, chunk_ms: float = 100.0, lookahead: float = 0.3,
                silence_gate: Optional[bool] = None, subject: Optional[int | str] = None,
                sample_rate: Optional[int] = None, device=None) -> tuple[Animation, str]:
    """Feed a recording to a :class:`~jambatalk.stream.Stream` in ``chunk_ms`` chunks, as if it were live.
    ``audio`` is what :func:`animate` takes (an array with its ``sample_rate``).

    Returns the animation and a report: the stream's latency bound; the compute time per chunk (median,
    p99, max); and, as if each chunk arrived when its audio ended, how far behind the audio each chunk's
    output comes (waiting for the chunks before it, then its own compute: :func:`live_delays`). The stream
    keeps up with live audio when its compute over the whole recording takes less than the recording
    lasts. A warm-up stream on the same model runs first, so that one-off set-up is not counted."""
    import time

    import torch

    from .model.audio_encoder import frames_for_samples
    from .stream import Stream

    if not (is_real_number(chunk_ms) and 0 < chunk_ms < float("inf")):
        raise InputError(f"the chunk length (--chunk-ms, chunk_ms) is {chunk_ms!r}",
                         "pass a positive chunk length in milliseconds, e.g. 100")
    if chunk_ms < 1000.0 / SAMPLE_RATE:
        raise InputError(f"--chunk-ms {chunk_ms:g} is shorter than one sample ({1000.0 / SAMPLE_RATE:g} ms at "
                         f"{SAMPLE_RATE} Hz)", "pass a chunk length of at least one sample, e.g. 100")
    samples = load_audio(audio, sample_rate)
    stream = Stream(model, template, lookahead=lookahead, silence_gate=silence_gate, subject=subject, device=device)
    _check_one_frame(samples, stream.fps)
    n = max(1, int(round(chunk_ms * SAMPLE_RATE / 1000.0)))
    warm = Stream(stream.model, lookahead=lookahead, silence_gate=silence_gate, subject=subject)
    for pos in range(0, min(len(samples), SAMPLE_RATE), n):
        warm.push(samples[pos: pos + n])
    # the frames go straight into one array: a list of thousands of small pushes, joined at the end, took 6 to 11
    # times the memory of the offline path on long audio (14.4 GB for 20 minutes against 2.3 GB)
    vertices = np.empty((frames_for_samples(len(samples), stream.fps), *stream.template.shape), dtype=np.float32)
    filled, times, ends = 0, [], []

    def keep(new: np.ndarray) -> None:
        nonlocal filled
        vertices[filled: filled + len(new)] = new
        filled += len(new)

    for pos in range(0, len(samples), n):
        t0 = time.perf_counter()
        new = stream.push(samples[pos: pos + n])
        times.append(time.perf_counter() - t0)
        keep(new)
        ends.append(min(len(samples), pos + n) / SAMPLE_RATE)
    keep(stream.flush())
    if filled != len(vertices):
        raise AssertionError(f"the stream gave {filled} frames for {len(vertices)}")
    vertices = _finite(vertices, model)
    ms = np.array(times) * 1000.0
    delay = live_delays(times, ends) * 1000.0
    share = float(np.sum(times)) / (len(samples) / SAMPLE_RATE)
    verdict = stream_verdict(share, delay, chunk_ms, torch.get_num_threads())
    report = (f"stream: {len(times)} chunks of {chunk_ms:g} ms; latency bound {stream.latency * 1000:.0f} ms "
              f"(block + lookahead + decoder) plus the delay below; compute per chunk median {np.median(ms):.1f} ms, "
              f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms; delay behind live audio (waiting + "
              f"compute) median {np.median(delay):.1f} ms, p99 {np.percentile(delay, 99):.1f} ms, "
              f"max {delay.max():.1f} ms; {verdict}")
    return _own_animation(vertices, stream.template.cpu().numpy(), stream.faces, stream.fps, samples), report


def check_frame_folder(path: Path) -> None:
    """An InputError when ``path`` is a folder holding files other than frames (saving frames there replaces it)."""
    if path.is_dir():
        foreign = sorted(f.name for f in path.iterdir() if not _is_frame_file(f))
        if foreign:
            raise InputError(f"'{path}' is a folder holding other files ({len(foreign)}, e.g. '{foreign[0]}'); "
                             "saving frames there would replace them",
                             "choose a new folder, or one that holds only frame_*.obj/.ply files")


def _subject_arg(value: Optional[str]) -> Optional[int | str]:
    """--subject: a style index (digits) or a subject's name."""
    return int(value) if value is not None and value.isdigit() else value


def cli_animate(args) -> int:
    """``jambatalk animate AUDIO [--template T] [--checkpoint DIR] --out PATH``."""
    from .fileio import check_not_input, check_output_path

    out = Path(args.out)
    one_file = _saved_as_file(out)  # the output checked before the inference, which takes minutes on long audio
    check_output_path(out, file=one_file, folder=not one_file)
    if not one_file:
        check_frame_folder(out.resolve())
    check_not_input(out, args.audio, args.template)
    if args.chunk_ms is not None and not args.stream:
        raise InputError("--chunk-ms sets the chunks of --stream, which was not given", "add --stream, or leave "
                         "--chunk-ms out")
    if args.mesh_format is not None and one_file:
        raise InputError(f"--mesh-format sets the files of a folder of per-frame meshes, but --out '{out}' is one "
                         "file", "give --out a folder name (no extension), or leave --mesh-format out")
    report = None
    gate = None if args.silence_gate is None else args.silence_gate == "on"
    if args.stream:
        anim, report = stream_file(args.audio, args.template, args.checkpoint,
                                   chunk_ms=100.0 if args.chunk_ms is None else args.chunk_ms, silence_gate=gate,
                                   subject=_subject_arg(args.subject), device=args.device)
    else:
        anim = animate(args.audio, args.template, args.checkpoint, silence_gate=gate,
                       subject=_subject_arg(args.subject), device=args.device)
    anim.save(out, mesh_format=args.mesh_format, progress=sys.stderr.isatty())  # no bars in logs
    if report:
        print(report)
    print(f"wrote {out} ({len(anim)} frames at {anim.fps:g} fps, {anim.duration:.2f} s)")
    return 0
