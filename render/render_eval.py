"""Turn an evaluation output folder into videos.

Layout read (as written by ``jambatalk test``)::

    EVAL_DIR/pred/<name>.npy    predicted vertices, (T, V, 3) or (T, 3V)
    EVAL_DIR/gt/<name>.npy      ground truth (optional)
    EVAL_DIR/report.json        metrics; its "fps", "camera" (or "dataset") and "data_root" entries
                                are used when present

For each prediction it writes ``OUT/<name>.mp4``: ground truth | prediction | error heatmap side
by side when the ground truth is there (``--gt-dir``, default EVAL_DIR/gt), else the prediction
alone, with ``AUDIO_DIR/<name>.wav`` muxed in when found (default AUDIO_DIR: the report's
``data_root``/wav, the processed dataset layout). Heatmaps share one colour scale across all sequences (``--vmax``, default:
the largest per-vertex error over the sequences rendered).

Example::

    python render/render_eval.py runs/vocaset/eval --template FLAME_sample.ply \\
        --audio-dir data/vocaset/wav --out runs/vocaset/videos
    python render/render_eval.py runs/default/test     # a synthetic corpus: its template.ply and wav/ are found
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jambatalk.errors import InputError, JambaTalkError, script_exit
from jambatalk.fileio import check_output_folder
from jambatalk.mesh import load_template
from jambatalk.render import Camera, camera_preset, render_comparison, render_video, vertex_errors
from jambatalk.render.backends import backend_names
from jambatalk.render.renderer import check_sequence, image_size
from jambatalk.render.video import check_fps

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Render an evaluation folder (pred/, gt/, report.json) to MP4 videos.")
    p.add_argument("eval_dir", help="evaluation output folder with pred/<name>.npy (and gt/<name>.npy)")
    p.add_argument("--template", default=None,
                   help="mesh with the faces (.ply/.obj); default: the template.ply in report.json's data_root (a "
                        "synthetic corpus), else the face list of its dataset (e.g. FLAME_sample.ply found there)")
    p.add_argument("--out", default=None, help="output folder (default: EVAL_DIR/videos)")
    p.add_argument("--audio-dir", default=None,
                   help="folder with <name>.wav speech to mux in (default: report.json's data_root/wav)")
    p.add_argument("--gt-dir", default=None,
                   help="folder with ground-truth <name>.npy (default: EVAL_DIR/gt, else report.json's "
                        "data_root/vertices_npy, the processed dataset)")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: report.json's 'fps', else 30)")
    p.add_argument("--size", type=int, default=400, help="panel width and height in pixels (default 400)")
    p.add_argument("--camera", default=None,
                   help="camera preset (default: report.json's 'camera', else its dataset's, else 'fit')")
    p.add_argument("--backend", default="auto", help="renderer backend (default: auto)")
    p.add_argument("--vmax", type=float, default=None, help="error shown at full heatmap colour, in mesh units")
    p.add_argument("--names", nargs="*", default=None, help="render only these sequence names")
    p.add_argument("--limit", type=int, default=None, help="render at most this many sequences")
    return p


def _read_report(eval_dir: Path) -> dict:
    path = eval_dir / "report.json"
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"'{path}' is not readable JSON ({exc})", "repair it or remove it") from exc
    return report if isinstance(report, dict) else {}


def _dataset_camera(dataset) -> Camera | str:
    """The camera of the dataset spec named in the report, else "fit"."""
    if not dataset:
        return "fit"
    try:
        return camera_preset(str(dataset)) or "fit"
    except InputError:
        return "fit"


def _report_faces(report: dict, eval_dir: Path) -> np.ndarray:
    """The faces of the mesh an evaluation was made on, without --template: its data root's template.ply (written by
    jambatalk synth), else its dataset's face list (looked for in the data root)."""
    from jambatalk.data import get_spec

    root, dataset = report.get("data_root"), report.get("dataset")
    if root and (Path(root) / "template.ply").is_file():
        faces = load_template(Path(root) / "template.ply")[1]
        if faces is not None:
            return faces
    if not dataset:
        raise InputError(f"no --template was given, and '{eval_dir / 'report.json'}' names no dataset to take the "
                         "faces from", "pass --template MESH (the .ply/.obj the predictions were made for)")
    try:
        return get_spec(str(dataset)).faces(root)
    except JambaTalkError as exc:
        raise InputError(f"no --template was given, and the faces of dataset '{dataset}' were not found ({exc})",
                         "pass --template MESH (the .ply/.obj the predictions were made for)") from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"'{path}' is not a readable .npy array ({type(exc).__name__}: {exc})",
                         "write it again (jambatalk test writes the predictions)") from None


def _find_audio(audio_dir: Path | None, name: str) -> Path | None:
    if audio_dir is None:
        return None
    for suffix in AUDIO_SUFFIXES:
        if (audio_dir / f"{name}{suffix}").is_file():
            return audio_dir / f"{name}{suffix}"
    return None


def render_eval(args) -> list[Path]:
    """Render every (selected) prediction of ``args.eval_dir``; returns the videos written."""
    eval_dir = Path(args.eval_dir)
    pred_dir = eval_dir / "pred"
    gt_dir = Path(args.gt_dir) if args.gt_dir else eval_dir / "gt"
    if not pred_dir.is_dir():
        raise InputError(f"'{eval_dir}' has no pred/ folder", "pass the folder written by 'jambatalk test'")
    names = sorted(p.stem for p in pred_dir.glob("*.npy"))
    if args.names:
        missing = sorted(set(args.names) - set(names))
        if missing:
            raise InputError(f"no predictions named {missing} in '{pred_dir}'", f"choose from: {', '.join(names)}")
        names = [n for n in names if n in set(args.names)]
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(f"--limit is {args.limit}", "render at least one sequence (--limit 1 or more)")
        names = names[: args.limit]
    if args.fps is not None and not 0 < args.fps < float("inf"):
        raise InputError(f"--fps is {args.fps:g}", "pass a positive frame rate, or leave it out for the report's")
    for flag, folder in (("--audio-dir", args.audio_dir), ("--gt-dir", args.gt_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise InputError(f"{flag} '{folder}' is not a folder", f"pass the folder that holds <name> files, or leave "
                             f"{flag} out")
    if not names:
        raise InputError(f"'{pred_dir}' has no .npy predictions", "run 'jambatalk test' first")
    report = _read_report(eval_dir)
    data_root = Path(report["data_root"]) if report.get("data_root") else None
    if not args.gt_dir and not gt_dir.is_dir() and data_root is not None:
        gt_dir = data_root / "vertices_npy"  # jambatalk test writes no gt/: the processed dataset holds it
    fps = check_fps(args.fps if args.fps is not None else report.get("fps", 30.0))
    camera = args.camera or report.get("camera") or _dataset_camera(report.get("dataset"))
    # the options every video uses, checked before the first one (they were refused at it, after the folder
    # was made and the sequences read)
    if isinstance(camera, str):
        camera_preset(camera)
    backend_names(args.backend)
    image_size(args.size)
    if args.vmax is not None and not 0 < args.vmax < float("inf"):
        raise InputError(f"--vmax is {args.vmax:g}", "pass the error shown at full colour (a positive number in "
                         "mesh units, e.g. 0.005), or leave it out for the largest error")
    if args.template is None:
        faces = _report_faces(report, eval_dir)
    else:
        template, faces = load_template(args.template)
        if faces is None:
            raise InputError(f"template '{args.template}' has no faces", "pass a mesh file (.ply/.obj) with triangles")
    audio_dir = Path(args.audio_dir) if args.audio_dir else None
    if audio_dir is None and data_root is not None and (data_root / "wav").is_dir():
        audio_dir = data_root / "wav"
    out_dir = check_output_folder(Path(args.out) if args.out else eval_dir / "videos")

    pairs = {}
    for name in names:
        pred = check_sequence(_load_npy(pred_dir / f"{name}.npy"), f"prediction '{name}'")
        gt_path = gt_dir / f"{name}.npy"
        gt = check_sequence(_load_npy(gt_path), f"ground truth '{name}'") if gt_path.is_file() else None
        if gt is not None and gt.shape[1:] != pred.shape[1:]:
            raise InputError(f"ground truth '{gt_path}' has {gt.shape[1]} vertices, the prediction {pred.shape[1]}",
                             "pass the ground truth of this evaluation's dataset with --gt-dir")
        n = len(pred) if gt is None else min(len(pred), len(gt))
        pairs[name] = (pred[:n], None if gt is None else gt[:n])
    if args.gt_dir and all(g is None for _, g in pairs.values()):  # asked for, found for no prediction
        raise InputError(f"--gt-dir '{gt_dir}' holds the ground truth of none of the predictions (e.g. "
                         f"'{next(iter(pairs))}.npy')", "pass the folder of this evaluation's ground truth "
                         "(the dataset's vertices_npy/), or leave --gt-dir out")
    vmax = args.vmax
    if vmax is None:
        errors = [vertex_errors(p, g).max() for p, g in pairs.values() if g is not None]
        vmax = float(max(errors)) if errors and max(errors) > 0 else None
    made = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _render_all(pairs, out_dir, audio_dir, faces, vmax,
                           dict(fps=fps, size=args.size, camera=camera, backend=args.backend))
    except BaseException:
        if made and not any(out_dir.iterdir()):  # a failed first video leaves no empty folder
            out_dir.rmdir()
        raise


def _render_all(pairs: dict, out_dir: Path, audio_dir: Path | None, faces, vmax: float | None,
                options: dict) -> list[Path]:
    """Render each (prediction, ground truth) pair to out_dir/<name>.mp4; returns the videos written."""
    written = []
    for k, (name, (pred, gt)) in enumerate(pairs.items()):
        audio = _find_audio(audio_dir, name)
        path = out_dir / f"{name}.mp4"
        print(f"[{k + 1}/{len(pairs)}] {path}" + ("" if audio else " (no audio)")
              + ("" if gt is not None else " (no ground truth: the prediction alone)"), file=sys.stderr)
        common = dict(options, audio=audio)
        if gt is not None:
            render_comparison(path, pred, gt, faces, vmax=vmax,
                              labels=("ground truth", "prediction", f"error (max {vmax:.3g})" if vmax else "error"),
                              **common)
        else:
            render_video(path, pred, faces, **common)
        written.append(path)
    return written


def _main(argv: list[str] | None) -> int:
    written = render_eval(build_parser().parse_args(argv))
    print(f"wrote {len(written)} video(s) to {written[0].parent}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_exit("render_eval", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
