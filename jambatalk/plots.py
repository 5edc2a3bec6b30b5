"""Evaluation plots, written as PNG files: per-vertex error, lip opening over time, loss curves.

Matplotlib is imported inside each function and drawn through its Agg canvas (no window, no global
pyplot state). Inputs are checked before anything is drawn, and each file is written atomically:
a failed plot leaves no file behind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, require
from .fileio import atomic_path, check_output_path

__all__ = ["plot_vertex_error", "plot_lip_opening", "plot_loss_curves"]


def _numpy(x: Any, name: str) -> np.ndarray:
    """A validated float64 numpy copy of an array or tensor (the metrics' own check)."""
    from .metrics import _to_float

    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.array(_to_float(x, name))


def _png_path(path: str | os.PathLike) -> Path:
    path = check_output_path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"plot path '{path}' does not end in .png; plots are written as PNG", "name the file *.png")
    return path


def _figure(width: float, height: float):
    """A matplotlib Figure bound to the Agg canvas (no display, no pyplot state)."""
    require("matplotlib", purpose="drawing evaluation plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _shaded_mesh(ax, v: np.ndarray, f: np.ndarray, e: np.ndarray, vmin: float, vmax: float):
    """Draw triangles coloured by their mean vertex error, lit from the front; returns a mappable for the colour bar."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize

    # Painter's order: back (small z) first, so the face covers the back of the head.
    f = f[np.argsort(v[f, 2].mean(1), kind="stable")]
    tri = v[f]  # (F, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normal, axis=1)
    facing = np.abs(normal[:, 2]) / np.where(length > 0, length, 1.0)  # |cos| of the angle to the view axis
    norm = Normalize(vmin=vmin, vmax=vmax)
    cmap = colormaps["viridis"]
    colours = cmap(norm(e[f].mean(1)))
    colours[:, :3] *= (0.45 + 0.55 * facing)[:, None]
    ax.add_collection(PolyCollection(tri[:, :, :2], facecolors=colours, edgecolors="none", antialiased=False))
    ax.set_xlim(v[:, 0].min(), v[:, 0].max())
    ax.set_ylim(v[:, 1].min(), v[:, 1].max())
    return ScalarMappable(norm=norm, cmap=cmap)


def plot_vertex_error(
    path: str | os.PathLike,
    template: Any,
    faces: Any | None,
    errors: Any,
    *,
    scale: float = 1000.0,
    unit: str = "mm",
    title: str = "Mean vertex error",
) -> None:
    """Per-vertex error drawn on the template, seen from the front, with a colour bar.

    ``template`` is (V, 3) with the face looking along +z (FLAME's convention); ``faces`` (F, 3)
    draws shaded triangles (front faces over back ones), ``None`` draws the vertices as points.
    ``errors`` (V,) is multiplied by ``scale`` for display in ``unit`` (default: metres shown as mm;
    pass ``scale=1, unit=""`` for data in other units, such as normalised BIWI).
    """
    path = _png_path(path)
    v = _numpy(template, "template")
    if v.ndim == 1 and v.size % 3 == 0:
        v = v.reshape(-1, 3)
    e = _numpy(errors, "errors")
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] == 0:
        raise InputError(f"template has shape {v.shape}; expected (V, 3) (errors shape {e.shape})", "pass a (V, 3) template")
    if e.shape != (v.shape[0],):
        raise InputError(
            f"errors has shape {e.shape} but the template has shape {v.shape}: one error per vertex is needed",
            f"pass errors of shape ({v.shape[0]},), e.g. from jambatalk.metrics.per_vertex_error",
        )
    if not (np.isfinite(v).all() and np.isfinite(e).all()):
        raise InputError("template or errors hold non-finite values (NaN or inf)", "repair them before plotting")
    f = None
    if faces is not None:
        f = np.asarray(faces.detach().cpu() if hasattr(faces, "detach") else faces)
        if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu" or f.size == 0:
            raise InputError(f"faces has shape {f.shape} and dtype {f.dtype}; expected (F, 3) integer vertex indices",
                             "pass the mesh's triangles or None")
        if f.min() < 0 or f.max() >= v.shape[0]:
            raise InputError(f"faces index vertices {f.min()}..{f.max()} but the template has {v.shape[0]} vertices",
                             "pass the faces of this template's mesh")
    e = e * scale
    label = f"mean L2 error ({unit})" if unit else "mean L2 error"

    fig = _figure(6.0, 6.4)
    ax = fig.add_subplot(1, 1, 1)
    vmin, vmax = float(e.min()), float(e.max())
    if vmax <= vmin:
        vmax = vmin + 1e-12
    if f is not None:
        art = _shaded_mesh(ax, v, f, e, vmin, vmax)
    else:
        order = np.argsort(v[:, 2], kind="stable")
        art = ax.scatter(v[order, 0], v[order, 1], c=e[order], s=4, cmap="viridis", vmin=vmin, vmax=vmax,
                         linewidths=0)
    ax.set_aspect("equal")
    ax.set_axis_off()
    u = f" {unit}" if unit else ""
    ax.set_title(f"{title}\nmean {e.mean():.4g}{u}, max {e.max():.4g}{u}")
    fig.colorbar(art, ax=ax, label=label, shrink=0.8)
    _save(fig, path)


def plot_lip_opening(
    path: str | os.PathLike,
    gt_curve: Any,
    pred_curve: Any,
    fps: float,
    title: str = "Lip opening",
    *,
    scale: float = 1000.0,
    unit: str = "mm",
) -> None:
    """Lip-opening distance over time, ground truth against prediction (curves of the same length).

    The curves come from :func:`jambatalk.metrics.lip_opening`; they are multiplied by ``scale``
    for display in ``unit`` (default: metres shown as mm).
    """
    path = _png_path(path)
    gt = _numpy(gt_curve, "gt_curve")
    pred = _numpy(pred_curve, "pred_curve")
    if gt.ndim != 1 or pred.ndim != 1 or gt.size == 0 or gt.shape != pred.shape:
        raise InputError(
            f"gt_curve has shape {gt.shape} and pred_curve has shape {pred.shape}; expected two 1-D curves of the "
            "same, non-zero length",
            "cut the prediction to the ground truth's length first (pred[:len(gt)])",
        )
    if not (np.isfinite(gt).all() and np.isfinite(pred).all()):
        raise InputError("gt_curve or pred_curve holds non-finite values (NaN or inf)", "repair them before plotting")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise InputError(f"fps is {fps!r}; expected a positive frame rate", "pass the sequences' frames per second")
    t = np.arange(gt.size) / float(fps)

    fig = _figure(9.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(t, gt * scale, color="black", linewidth=1.6, label="ground truth")
    ax.plot(t, pred * scale, color="tab:orange", linewidth=1.4, label="prediction")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"lip opening ({unit})" if unit else "lip opening")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    _save(fig, path)


def plot_loss_curves(path: str | os.PathLike, history: Mapping[str, Sequence[tuple[float, float]]]) -> None:
    """Training and validation loss curves, one line per name: ``history[name] = [(step, value), ...]``.

    The y axis is logarithmic when every value is positive. Non-finite values (a diverged step) are
    left out of the plot; a curve with a single point is drawn as a marker.
    """
    path = _png_path(path)
    if not isinstance(history, Mapping) or not history:
        raise InputError("the loss history is empty", "pass a dict such as {'train/loss': [(step, value), ...]}")
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, points in history.items():
        arr = _numpy(list(points), f"history['{name}']")
        if arr.size == 0:
            continue
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InputError(f"history['{name}'] has shape {arr.shape}; expected a list of (step, value) pairs",
                             "pass [(step, value), ...] for every curve")
        keep = np.isfinite(arr).all(1)
        if keep.any():
            curves[str(name)] = (arr[keep, 0], arr[keep, 1])
    if not curves:
        raise InputError(f"the loss history ({', '.join(map(str, history))}) holds no finite (step, value) point",
                         "train for at least one step before plotting")
    positive = all((y > 0).all() for _, y in curves.values())

    fig = _figure(8.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name, linewidth=1.4, marker="o" if x.size == 1 else None)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss curves")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    _save(fig, path)
