"""Mesh sequences to H.264 MP4 videos with the speech muxed in.

Frames are rendered offscreen and piped as raw RGB into imageio-ffmpeg's bundled ffmpeg binary
(no system ffmpeg needed), which encodes H.264 (yuv420p) and AAC audio in one call. A writer
thread feeds the pipe so rendering of the next frame overlaps the transfer of the last one.
Files appear whole or not at all (:func:`jambatalk.fileio.atomic_path`).
"""

from __future__ import annotations

import errno
import os
import queue
import subprocess
import tempfile
import threading
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ..audio import SAMPLE_RATE, load_audio
from ..errors import InputError, JambaTalkError
from ..fileio import atomic_path, check_output_path
from .camera import Camera
from .colors import error_colors
from .renderer import Renderer, check_colors, check_faces, check_sequence, image_size

__all__ = ["render_video", "render_grid", "render_comparison", "fit_audio", "check_fps", "FFmpegWriter", "label_alpha"]

SizeLike = Union[int, tuple[int, int]]


#: the lowest frame rate a video is written at: a still a second
MIN_FPS = 1.0


def check_fps(fps) -> float:
    """A frame rate as a positive finite float."""
    try:
        value = float(fps)
    except (TypeError, ValueError) as exc:
        raise InputError(f"fps {fps!r} is not a number", "pass the motion's frame rate, e.g. fps=30") from exc
    if not np.isfinite(value) or not MIN_FPS <= value <= 1000:  # below a frame a second, the speech was padded with
        # silence to the video's length: a 37-hour video at 0.001 fps, out of memory at 0.0001
        raise InputError(f"fps {fps!r} is outside [{MIN_FPS:g}, 1000]", "pass the motion's frame rate, e.g. fps=30")
    return value


def fit_audio(audio, n_frames: int, fps: float, sample_rate: int = SAMPLE_RATE, name: str = "audio") -> np.ndarray:
    """Load ``audio`` (array at ``sample_rate``, or a file) as 16 kHz mono and fit it to the video.

    Audio longer than ``n_frames / fps`` seconds is trimmed and shorter audio padded with
    silence, with a warning giving both lengths when they differ by more than one frame.
    """
    if isinstance(audio, (str, os.PathLike)):
        wave = load_audio(audio)
    else:
        wave = load_audio(audio, sample_rate, name=name)
    target = int(round(n_frames * SAMPLE_RATE / fps))
    diff = len(wave) - target
    if abs(diff) > SAMPLE_RATE / fps:
        action = (f"trimmed by {diff} samples" if diff > 0 else f"padded with {-diff} samples of silence")
        warnings.warn(f"{name} has {len(wave)} samples ({len(wave) / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz) but the "
                      f"motion has {n_frames} frames at {fps:g} fps ({n_frames / fps:.2f} s): {action} (if the "
                      f"motion was made at another frame rate, give that rate: {n_frames} frames last as long as "
                      f"the audio at {n_frames * SAMPLE_RATE / max(len(wave), 1):.4g} fps)",
                      stacklevel=3)
    if diff > 0:
        return wave[:target]
    if diff < 0:
        return np.concatenate([wave, np.zeros(-diff, dtype=np.float32)])
    return wave


class FFmpegWriter:
    """Encode raw RGB frames to an MP4 through an ffmpeg subprocess fed by a writer thread.

    Take a buffer with :meth:`buffer`, fill it, hand it back with :meth:`submit`; call
    :meth:`close` to finish (raises if ffmpeg failed) or :meth:`abort` to stop.
    """

    def __init__(self, path: Union[str, os.PathLike], width: int, height: int, fps: float,
                 audio_path: Optional[str] = None, *, crf: int = 18, preset: str = "veryfast", buffers: int = 3,
                 name: Union[str, os.PathLike, None] = None):
        import imageio_ffmpeg

        self.name = Path(name if name is not None else path)  # the video that errors name (path: its temporary)
        if width % 2 or height % 2:
            raise InputError(f"video size {width}x{height} has an odd side", "H.264 (yuv420p) needs even sizes")
        rate = Fraction(fps).limit_denominator(1001)
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", f"{rate}",
               "-i", "pipe:0"]
        if audio_path is not None:
            cmd += ["-i", str(audio_path)]
        cmd += ["-map", "0:v:0"] + (["-map", "1:a:0"] if audio_path is not None else [])
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)), "-pix_fmt", "yuv420p"]
        if audio_path is not None:
            cmd += ["-c:a", "aac", "-b:a", "96k"]
        cmd += ["-movflags", "+faststart", "-f", "mp4", str(path)]
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)
        self.shape = (height, width, 3)
        self.error: Optional[BaseException] = None
        self._free: queue.Queue = queue.Queue()
        self._full: queue.Queue = queue.Queue()
        for _ in range(max(1, buffers)):
            self._free.put(np.empty(self.shape, dtype=np.uint8))
        self._thread = threading.Thread(target=self._pump, name="jambatalk-ffmpeg-writer", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            buf = self._full.get()
            if buf is None:
                return
            if self.error is None:
                try:
                    self.proc.stdin.write(buf.data)
                except (OSError, ValueError) as exc:
                    self.error = exc
            self._free.put(buf)

    def buffer(self) -> np.ndarray:
        """A free (H, W, 3) uint8 frame buffer."""
        if self.error is not None:
            self._fail()
        return self._free.get()

    def submit(self, buf: np.ndarray) -> None:
        """Queue a filled buffer for encoding."""
        self._full.put(buf)

    def _ffmpeg_log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()

    def _failure(self, status: str) -> JambaTalkError:
        """The error for ffmpeg's failure (``status``: how it ended): its log's last lines (the log of a failed
        encoder repeats the error around the writer's), and, where the disk is full, that fix."""
        log = self._ffmpeg_log()
        lines = [line.strip() for line in log.splitlines() if line.strip()]
        said = " / ".join(lines[-2:])[-300:] or f"{type(self.error).__name__}: {self.error}"
        full = "No space left on device" in log or getattr(self.error, "errno", None) == errno.ENOSPC
        if full:
            return InputError(f"cannot write the video '{self.name}': the disk is full (ffmpeg: {said})",
                              "free space on that disk, or choose an output path on another disk")
        return JambaTalkError(f"ffmpeg {status} while encoding the video '{self.name}' ({said})",
                              "run it again; if it fails again, check that imageio-ffmpeg's ffmpeg runs: "
                              "python -c \"import imageio_ffmpeg as f, subprocess; "
                              "subprocess.run([f.get_ffmpeg_exe(), '-version'])\"")

    def _fail(self):
        self.abort()
        code = self.proc.returncode  # ffmpeg's own exit status, or the signal that abort() sent (< 0)
        raise self._failure(f"failed (exit status {code})" if code and code > 0 else "stopped")

    def close(self) -> None:
        """Flush the queued frames and wait for ffmpeg to finish the file."""
        self._full.put(None)
        self._thread.join()
        try:
            self.proc.stdin.close()
        except OSError as exc:
            self.error = self.error or exc
        code = self.proc.wait()
        if code != 0 or self.error is not None:
            error = self._failure(f"failed (exit status {code})" if code else "stopped taking frames")
            self._log.close()
            raise error
        self._log.close()

    def abort(self) -> None:
        """Stop ffmpeg without finishing the file."""
        if self._thread.is_alive():
            self.error = self.error or RuntimeError("aborted")
            self._full.put(None)
            self._thread.join()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass


def _encode(path, n_frames: int, size: tuple[int, int], fps: float, audio: Optional[np.ndarray],
            draw: Callable[[int, np.ndarray], None], progress: bool, crf: int) -> Path:
    """Render ``n_frames`` with ``draw(i, buffer)`` and encode them (and ``audio``) to ``path``."""
    import soundfile as sf
    from tqdm.auto import tqdm

    path = check_output_path(path)
    if path.suffix.lower() != ".mp4":  # the file is an MP4 whatever its name says
        raise InputError(f"cannot write a video as '{path}': videos are written as .mp4 files",
                         f"name it {path.with_suffix('.mp4').name}")
    with tempfile.TemporaryDirectory(prefix="jambatalk-video-") as scratch, atomic_path(path, suffix=".mp4") as tmp:
        audio_path = None
        if audio is not None:
            audio_path = os.path.join(scratch, "audio.wav")
            sf.write(audio_path, audio, SAMPLE_RATE, subtype="FLOAT")
        writer = FFmpegWriter(tmp, size[0], size[1], fps, audio_path, crf=crf, name=path)
        try:
            with tqdm(total=n_frames, unit="frame", desc=f"rendering {path.name}", disable=not progress) as bar:
                for i in range(n_frames):
                    buf = writer.buffer()
                    draw(i, buf)
                    writer.submit(buf)
                    bar.update(1)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    return path


def _prepare_colors(colors, n_frames: int, n_vertices: int, name: str) -> Optional[np.ndarray]:
    if colors is None:
        return None
    return check_colors(colors, n_vertices, n_frames, name)


def _frame_colors(colors: Optional[np.ndarray], i: int) -> Optional[np.ndarray]:
    if colors is None:
        return None
    return colors if colors.ndim == 2 else colors[i]


def render_video(path: Union[str, os.PathLike], vertices, faces, *, fps: float, audio=None,
                 sample_rate: int = SAMPLE_RATE, size: SizeLike = 800, camera: Union[str, Camera] = "fit",
                 colors=None, backend: str = "auto", progress: bool = True, background=(1.0, 1.0, 1.0),
                 samples: int = 0, crf: int = 18) -> Path:
    """Render a vertex sequence to an H.264 MP4, with the audio muxed in.

    Args:
        path: output .mp4; written atomically (nothing is left behind on failure).
        vertices: (T, V, 3) positions, or (T, 3V).
        faces: (F, 3) triangle indices.
        fps: frame rate of the motion.
        audio: optional speech: a float array at ``sample_rate`` (mono, or see
            :func:`jambatalk.audio.load_audio`) or an audio file. It is padded with silence or
            trimmed to the video's length, with a warning when the lengths differ.
        size: video size, int (square) or (width, height); odd sides are rounded up to even.
        camera: a preset name ("flame", "biwi", "fit") or a :class:`Camera`; "fit" frames the
            first frame.
        colors: optional per-vertex RGB in [0, 1], (V, 3) for all frames or (T, V, 3).
        backend: see :class:`Renderer`.
        progress: show a progress bar.
    Returns:
        the output path.
    """
    seq = check_sequence(vertices, "vertices")
    faces = check_faces(faces, seq.shape[1])
    fps = check_fps(fps)
    width, height = image_size(size, even=True)
    colors = _prepare_colors(colors, len(seq), seq.shape[1], "colors")
    wave = None if audio is None else fit_audio(audio, len(seq), fps, sample_rate)
    check_output_path(path, file=True)
    with Renderer(faces, size=(width, height), camera=camera, background=background, backend=backend,
                  bounds_vertices=seq[0], samples=samples) as renderer:
        def draw(i: int, buf: np.ndarray) -> None:
            renderer.render_into(seq[i], buf, _frame_colors(colors, i))

        return _encode(path, len(seq), (width, height), fps, wave, draw, progress, crf)


def label_alpha(text: str, width: int, height: int) -> np.ndarray:
    """Coverage (height, width) in [0, 1] of ``text`` centred in a band, drawn with PIL's default font."""
    from PIL import Image, ImageDraw, ImageFont

    font_px = max(8, int(height * 0.7))
    try:
        font = ImageFont.load_default(size=font_px)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = max((width - (right - left)) // 2 - left, 2)
    y = (height - (bottom - top)) // 2 - top
    draw.text((x, y), text, fill=255, font=font)
    return np.asarray(img, dtype=np.float32) / 255.0


class _Label:
    """A text label blended onto a region of every frame (drawn once, blended per frame)."""

    def __init__(self, text: str, x0: int, width: int, height: int, background) -> None:
        alpha = label_alpha(text, width, height)[..., None]
        luminance = float(np.dot(background, (0.299, 0.587, 0.114)))
        ink = 0.1 if luminance > 0.5 else 0.95
        self.x0, self.x1, self.height = x0, x0 + width, height
        self.keep = 1.0 - alpha
        self.add = ink * 255.0 * alpha + 0.5
        self._tmp = np.empty((height, width, 3), dtype=np.float32)

    def apply(self, frame: np.ndarray) -> None:
        region = frame[: self.height, self.x0:self.x1]
        np.multiply(region, self.keep, out=self._tmp)
        self._tmp += self.add
        region[...] = self._tmp


def render_grid(path: Union[str, os.PathLike], sequences: Sequence, faces, labels: Optional[Sequence[str]] = None, *,
                fps: float, audio=None, sample_rate: int = SAMPLE_RATE, colors: Optional[Sequence] = None,
                size: SizeLike = 400, camera: Union[str, Camera] = "fit", backend: str = "auto",
                progress: bool = True, background=(1.0, 1.0, 1.0), samples: int = 0, crf: int = 18) -> Path:
    """Render several sequences of one mesh side by side (e.g. ground truth | prediction | error).

    Args:
        sequences: list of (T, V, 3) (or (T, 3V)) sequences; the video lasts as long as the
            shortest (with a warning when lengths differ).
        faces: (F, 3) triangles shared by all panels.
        labels: one caption per panel, drawn at the top of each panel (None: no captions).
        colors: None, or one entry per panel: None, (V, 3) or (T, V, 3) RGB in [0, 1]
            (e.g. :func:`error_colors`).
        size: size of one panel, int or (width, height).
        camera: preset or Camera, shared by all panels ("fit" frames the first panel's first frame).
        Other arguments as in :func:`render_video`.
    Returns:
        the output path.
    """
    if isinstance(sequences, np.ndarray) or not isinstance(sequences, Sequence) or len(sequences) == 0:
        raise InputError("sequences must be a non-empty list of (T, V, 3) arrays", "pass e.g. [gt, pred]")
    seqs = [check_sequence(s, f"sequence {k}") for k, s in enumerate(sequences)]
    n_vertices = seqs[0].shape[1]
    for k, s in enumerate(seqs):
        if s.shape[1] != n_vertices:
            raise InputError(f"sequence {k} has {s.shape[1]} vertices but sequence 0 has {n_vertices}",
                             "all panels must share one mesh topology")
    if labels is not None and (isinstance(labels, str) or len(labels) != len(seqs)):
        raise InputError(f"got {1 if isinstance(labels, str) else len(labels)} labels for {len(seqs)} sequences",
                         "pass one label per sequence, or labels=None")
    if colors is not None and len(colors) != len(seqs):
        raise InputError(f"got {len(colors)} colour entries for {len(seqs)} sequences",
                         "pass one entry (None or an array) per sequence")
    faces = check_faces(faces, n_vertices)
    fps = check_fps(fps)
    lengths = [len(s) for s in seqs]
    n_frames = min(lengths)
    if len(set(lengths)) > 1:
        warnings.warn(f"sequences have different lengths {lengths}: the video shows the first {n_frames} frames",
                      stacklevel=2)
    panel_colors = [_prepare_colors(c, n_frames, n_vertices, f"colors of panel {k}")
                    for k, c in enumerate(colors or [None] * len(seqs))]
    width, height = image_size(size, even=True)
    wave = None if audio is None else fit_audio(audio, n_frames, fps, sample_rate)
    check_output_path(path, file=True)
    bg = tuple(float(x) for x in np.clip(np.asarray(background, dtype=np.float64), 0, 1))
    label_h = max(12, height // 14)
    overlays = [] if labels is None else [_Label(str(t), k * width, width, label_h, bg) for k, t in enumerate(labels)]
    with Renderer(faces, size=(width, height), camera=camera, background=bg, backend=backend,
                  bounds_vertices=seqs[0][0], samples=samples) as renderer:
        panel = np.empty(renderer.shape, dtype=np.uint8)

        def draw(i: int, buf: np.ndarray) -> None:
            for k, s in enumerate(seqs):
                renderer.render_into(s[i], panel, _frame_colors(panel_colors[k], i))
                buf[:, k * width:(k + 1) * width] = panel
            for label in overlays:
                label.apply(buf)

        return _encode(path, n_frames, (width * len(seqs), height), fps, wave, draw, progress, crf)


def render_comparison(path: Union[str, os.PathLike], pred, gt, faces, *, fps: float, audio=None,
                      labels: Sequence[str] = ("ground truth", "prediction", "error"), vmax: Optional[float] = None,
                      **kwargs) -> Path:
    """Ground truth | prediction | prediction coloured by per-vertex error, side by side."""
    pred, gt = check_sequence(pred, "prediction"), check_sequence(gt, "ground truth")
    n = min(len(pred), len(gt))
    return render_grid(path, [gt[:n], pred[:n], pred[:n]], faces, list(labels), fps=fps, audio=audio,
                       colors=[None, None, error_colors(pred[:n], gt[:n], vmax)], **kwargs)
