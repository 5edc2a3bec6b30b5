"""Evaluation: ``jambatalk test --config FILE --checkpoint DIR [--out DIR] [--split test] [--silence-gate on|off]``.

Predicts every sequence of a split, writes ``pred/<name>.npy`` (T, V, 3), a ``report.json`` with LVE,
FDD (signed and absolute) and MVE per sequence and overall, and PNG plots: the per-vertex error on
the template, the lip opening over time (ground truth vs prediction) and the training loss curves.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from .config import ExperimentConfig, load_experiment
from .errors import CheckpointError, ConfigError, InputError

__all__ = ["evaluate", "cli_test", "resolve_checkpoint", "split_lips"]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A model folder, or a run folder (its best/, else last/ checkpoint)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    for sub in ("best", "last"):
        if (path / sub / "config.json").is_file():
            return path / sub
    raise CheckpointError(f"'{path}' is neither a model folder nor a run folder with best/ or last/",
                          "pass the --out folder of jambatalk train, or a model folder")


def split_lips(template: np.ndarray, lip_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lip vertices: the lip region split at its median height (y up)."""
    idx = np.unique(lip_idx)
    y = template[idx, 1]
    mid = np.median(y)
    return idx[y > mid], idx[y <= mid]


def evaluate(cfg: ExperimentConfig, checkpoint: str | os.PathLike, out: Optional[str | os.PathLike] = None,
             split: str = "test", device=None, progress: bool = True, silence_gate: Optional[bool] = None) -> dict:
    """Predict every sequence of ``split``, write pred/<name>.npy, report.json (metrics) and plots into ``out``.

    ``silence_gate``: close the mouth in pauses (True/False; None: the model's setting); the report records it.
    A model with a style embedding (model.n_subjects > 0) speaks each training subject's sequences in its own
    style, and other subjects' without one, as it was trained.
    """
    import torch
    from tqdm import tqdm

    from .api import DEFAULT_MODEL_DIR, _finite, _resolve_device
    from .data import SequenceDataset, get_spec
    from .fileio import atomic_dir, atomic_path, check_output_folder
    from .metrics import SequenceMetrics, lip_opening
    from .model import JambaTalk
    from .train import open_dataset_root

    ckpt = resolve_checkpoint(checkpoint)
    built_in = ckpt.resolve() == DEFAULT_MODEL_DIR.resolve()
    if not out and (built_in or not os.access(ckpt, os.W_OK)):
        raise InputError(f"the report would go into '{ckpt / 'eval'}', inside "
                         + ("the installed package (the built-in model)" if built_in else "a folder that cannot be written"),
                         "pass --out DIR for the report and predictions")
    out = Path(out) if out else ckpt / "eval"
    check_output_folder(out)  # before the model and data are set up
    spec = get_spec(cfg.data.dataset)
    root = open_dataset_root(cfg, generate=False)
    model = JambaTalk.from_pretrained(ckpt, map_location=_resolve_device(device), n_vertices=spec.vertex_count_at(root))
    gate = model.gates_silence(silence_gate)
    dataset = SequenceDataset(spec, root, split, cache_audio=False)
    lip_idx = spec.lip_indices(root)
    upper_idx = spec.upper_indices(root) if spec.upper is not None else None  # None: no FDD on this mesh
    _check_pred_folder(out / "pred")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    acc = SequenceMetrics(lip_idx, upper_idx)
    err_sum, n_frames, first, apart = None, 0, None, {}
    try:
        # predictions go to a temporary folder that replaces pred/ only once every sequence is done
        with atomic_dir(out / "pred") as pred_dir:
            for i in tqdm(range(len(dataset)), desc=f"test {split}", disable=not progress, dynamic_ncols=True):
                item = dataset[i]
                gt = np.asarray(item["vertices"], dtype=np.float32)
                share = template_offset(gt, item["template"])
                if share > OFFSET_SHARE_MAX:
                    apart[item["name"]] = share
                with torch.no_grad():
                    styled = model.style is not None and item["subject_index"] >= 0
                    pred = model.predict(item["audio"], item["template"], n_frames=len(gt), silence_gate=gate,
                                         subject=int(item["subject_index"]) if styled else None)
                _finite(pred, ckpt, f" for {item['name']}")
                np.save(pred_dir / f"{item['name']}.npy", pred)
                acc.update(item["name"], pred, gt, item["template"])
                e = np.linalg.norm(pred[: len(gt)] - gt, axis=-1).sum(0)
                err_sum = e if err_sum is None else err_sum + e
                n_frames += len(gt)
                if first is None:
                    first = (item, pred, gt)
            report = acc.compute()
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)  # a folder this run made holds nothing else
        raise
    report.update({"checkpoint": str(ckpt), "dataset": spec.name, "split": split, "data_root": str(root.resolve()),
                   "fps": float(spec.fps), "silence_gate": gate})
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    _plots(out, spec, root, ckpt, first, err_sum / max(n_frames, 1), lip_idx, lip_opening)
    if apart:
        import warnings

        worst = max(apart, key=apart.get)
        warnings.warn(f"{len(apart)} of {len(dataset)} {split} sequences lie far from their template (their mean "
                      f"frame a median {apart[worst]:.0%} of the head's size from it in '{worst}'; speech moves a "
                      f"face's median vertex far less): the predictions start from the template, so LVE and MVE "
                      f"count that offset; check that templates.pkl in '{root}' holds each subject's neutral face, "
                      "in the same units and pose as vertices_npy/", stacklevel=2)
    return report


#: the most the median vertex of a sequence's mean frame may lie from its template, as a share of the head's size
#: (bounding-box diagonal), before ``jambatalk test`` warns: speech moves the lips and jaw by millimetres and leaves
#: most vertices still (in the built-in corpus the share is at most 1e-9), while a template in other units, in
#: another pose or of another subject lies centimetres away (5% of a 30 cm head is 1.5 cm).
OFFSET_SHARE_MAX = 0.05


def template_offset(gt: np.ndarray, template: np.ndarray) -> float:
    """How far a sequence (T, V, 3) lies from its template (V, 3): the median vertex distance between the mean
    frame and the template, as a share of the template's bounding-box diagonal."""
    from .mesh import extent

    template = np.asarray(template, dtype=np.float64).reshape(-1, 3)
    mean = np.asarray(gt, dtype=np.float64).reshape(len(gt), -1, 3).mean(axis=0)
    return float(np.median(np.linalg.norm(mean - template, axis=1))) / (extent(template) or 1.0)


def _check_pred_folder(pred: Path) -> None:
    """``jambatalk test`` replaces its pred/ folder whole: refuse one that holds anything but .npy files."""
    if pred.parent.exists() and not pred.parent.is_dir():
        raise InputError(f"--out '{pred.parent}' is a file", "pass a folder for the report and predictions")
    if pred.exists() and not pred.is_dir():
        raise InputError(f"'{pred}' is a file; jambatalk test writes its predictions into a folder of that name",
                         "pass another --out, or move that file")
    strays = sorted(p.name for p in pred.iterdir() if not (p.is_file() and p.suffix == ".npy")) if pred.is_dir() else []
    if strays:
        raise InputError(f"'{pred}' holds {len(strays)} entries that are not predictions (e.g. {strays[0]!r}); "
                         "jambatalk test replaces that folder", "pass another --out, or move them")


def _plots(out: Path, spec, root: Path, ckpt: Path, first, per_vertex, lip_idx, lip_opening) -> None:
    from .plots import plot_lip_opening, plot_loss_curves, plot_vertex_error

    item, pred, gt = first
    template = np.asarray(item["template"])
    try:
        faces = spec.faces(root)
    except Exception:  # noqa: BLE001 - the plot falls back on points without faces
        faces = None
    units = dict(scale=1000.0, unit="mm") if spec.metres else dict(scale=1.0, unit="normalised units")
    plot_vertex_error(out / "vertex_error.png", template, faces, per_vertex, title=f"Mean vertex error ({spec.name})",
                      **units)
    upper, lower = split_lips(template, np.asarray(lip_idx))
    plot_lip_opening(out / "lip_opening.png", lip_opening(gt, upper, lower), lip_opening(pred[: len(gt)], upper, lower),
                     spec.fps, title=f"Lip opening: {item['name']}", **units)
    history = ckpt.parent / "history.json"
    if history.is_file():
        curves = json.loads(history.read_text())
        curves = {k: v for k, v in curves.items() if k.endswith(("/total", "/vertex"))}
        if curves:
            plot_loss_curves(out / "loss_curves.png", curves)


#: config keys that only training reads: given to jambatalk test they would be ignored (it evaluates whole sequences
#: as recorded, with the checkpoint's own model)
TRAINING_ONLY = ("train.", "loss.", "data.max_seconds", "data.augment")


def cli_test(args) -> int:
    keys = [o.split("=", 1)[0] for o in args.overrides]
    model_keys = [k for k in keys if k.split(".")[0] in ("model", "preset")]
    if model_keys:
        raise ConfigError(f"{', '.join(model_keys)}: jambatalk test evaluates the checkpoint's own model (its "
                          "config.json), so model overrides would be ignored",
                          "leave them out; train a model with them to evaluate it")
    ignored = [k for k in keys if k.startswith(TRAINING_ONLY)]
    if ignored:
        raise ConfigError(f"{', '.join(ignored)}: only training reads these (jambatalk test evaluates whole sequences "
                          "as recorded), so the overrides would be ignored",
                          "leave them out; data.dataset and data.root choose the data, --split the split")
    cfg = load_experiment(args.config, args.overrides)
    gate = None if args.silence_gate is None else args.silence_gate == "on"
    report = evaluate(cfg, args.checkpoint, args.out, split=args.split, silence_gate=gate)
    o = report["overall"]
    print(f"{report['dataset']} {report['split']} (silence gate {'on' if report['silence_gate'] else 'off'}): "
          f"{o['n_sequences']} sequences, {o['n_frames']} frames | "
          f"LVE {o['lve']:.4e}  " + (f"FDD {o['fdd']:.4e} (|FDD| {o['fdd_abs']:.4e})" if o["fdd"] is not None
                                      else "FDD n/a (no upper-face mask on this mesh)") + f"  MVE {o['mve']:.4e}")
    print(f"report and plots in {Path(args.out) if args.out else resolve_checkpoint(args.checkpoint) / 'eval'}")
    return 0
