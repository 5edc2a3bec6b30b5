"""``jambatalk render SEQ --template T [--audio A] [--fps N] --out OUT.mp4`` (an .npz that keeps its faces needs no
--template)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from ..audio import SAMPLE_RATE
from ..errors import InputError

__all__ = ["cli_render", "load_sequence"]

DEFAULT_FPS = 30.0


def load_sequence(path) -> tuple[np.ndarray, Optional[float], Optional[np.ndarray], Optional[tuple[np.ndarray, int]]]:
    """Read a vertex sequence from .npy ((T, V, 3) or (T, 3V)) or .npz ('vertices', maybe 'fps', 'faces',
    'audio' and 'sample_rate', as :meth:`jambatalk.Animation.save` writes them).

    Returns the raw array (validated later by the renderer), the fps, the faces and (audio, sample rate)
    when stored.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"sequence '{path}' is a folder, not a .npy or .npz file",
                         "pass a vertex sequence file (jambatalk animate --out NAME.npz writes one)")
    if not path.is_file():
        raise InputError(f"sequence file '{path}' does not exist", "check the path")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise InputError(f"'{path}' is not a .npy or .npz file", "pass a (T, V, 3) or (T, 3V) .npy array")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"'{path}' could not be read as a numpy file ({exc})", "pass a .npy or .npz file") from exc
    if suffix == ".npy":
        return data, None, None, None
    with data:
        if "vertices" not in data.files:
            raise InputError(f"'{path}' has no 'vertices' array (it has: {', '.join(data.files) or 'nothing'})",
                             "save the sequence as np.savez(path, vertices=..., fps=...)")
        vertices = data["vertices"]
        fps = None
        if "fps" in data.files:
            from ..api import _stored_fps

            fps = _stored_fps(data["fps"], path, "store one, e.g. np.savez(path, vertices=..., fps=30)")
        faces = data["faces"] if "faces" in data.files else None
        audio = None
        if "audio" in data.files and data["audio"].size:
            rate = data["sample_rate"] if "sample_rate" in data.files else None
            if rate is None or np.size(rate) != 1:
                raise InputError(f"'{path}' stores audio but no single 'sample_rate'",
                                 "save it with np.savez(path, ..., audio=..., sample_rate=16000), or pass --audio")
            audio = (data["audio"], int(rate))
    return vertices, fps, faces, audio


def cli_render(args) -> int:
    """Render a vertex sequence with the template's faces (and the audio) to an MP4."""
    from ..fileio import check_not_input, check_output_path
    from ..mesh import load_template, same_triangles
    from .renderer import check_sequence
    from .video import render_video

    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"output '{out}' is not an .mp4 file", "pass --out NAME.mp4")
    check_output_path(out, file=True)
    check_not_input(out, args.audio)
    raw, stored_fps, stored_faces, stored_audio = load_sequence(args.seq)
    seq = check_sequence(raw, f"sequence '{args.seq}'")
    stored_faces = None if stored_faces is None or len(stored_faces) == 0 else stored_faces
    if args.template is None:
        if stored_faces is None:
            what = ("holds vertices only" if Path(args.seq).suffix.lower() == ".npy" else "stores no faces")
            raise InputError(f"sequence '{args.seq}' {what} and no --template was given",
                             "pass --template MESH (the .ply/.obj the sequence was made for), or render the .npz "
                             "that jambatalk animate --out NAME.npz writes (it keeps the faces)")
        faces = stored_faces
    else:
        template, faces = load_template(args.template)
        if faces is None or len(faces) == 0:
            faces = stored_faces
        elif stored_faces is not None and not same_triangles(faces, stored_faces):
            raise InputError(f"template '{args.template}' has other triangles than the faces stored in "
                             f"'{args.seq}' ({len(faces)} against {len(stored_faces)}): the sequence was made for "
                             "another mesh", f"leave out --template ('{Path(args.seq).name}' keeps its own faces)")
        if faces is None:
            raise InputError(f"template '{args.template}' has no faces", "pass a mesh file (.ply/.obj) with triangles")
        if len(template) != seq.shape[1] and np.shape(raw) == (len(template), 3):
            raise InputError(f"sequence '{args.seq}' holds one mesh of shape {np.shape(raw)}, which reads as "
                             f"{len(template)} frames of one vertex", "save a sequence of shape (frames, "
                             f"{len(template)}, 3); one frame alone as shape (1, {len(template)}, 3)")
        if len(template) != seq.shape[1]:
            raise InputError(f"sequence '{args.seq}' has {seq.shape[1]} vertices but template '{args.template}' has "
                             f"{len(template)}", "pass the template of the mesh the sequence was made for")
    fps = args.fps if args.fps is not None else (stored_fps or DEFAULT_FPS)
    camera = args.camera
    audio, rate, heard = args.audio, SAMPLE_RATE, args.audio
    if audio is None and stored_audio is not None:  # the speech an Animation saved with its motion
        (audio, rate), heard = stored_audio, f"the audio stored in {Path(args.seq).name}"
    render_video(out, seq, faces, fps=fps, audio=audio, sample_rate=rate, size=args.size, camera=camera,
                 backend=args.backend, progress=sys.stderr.isatty())
    print(f"wrote {out} ({len(seq)} frames at {fps:g} fps{f', with {heard}' if heard else ''})")
    return 0
