"""Per-vertex colours: error heatmaps and colour-map lookup (numpy only)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import InputError

__all__ = ["HEATMAP", "colormap", "error_colors", "vertex_errors"]

#: Built-in heatmap anchors (value in [0, 1] -> RGB): near-white grey for no error through
#: yellow and orange to dark red for the largest error, readable on a shaded face.
HEATMAP = np.array([
    [0.00, 0.86, 0.86, 0.86],
    [0.25, 0.99, 0.90, 0.55],
    [0.50, 0.99, 0.66, 0.27],
    [0.75, 0.91, 0.30, 0.15],
    [1.00, 0.60, 0.04, 0.08],
], dtype=np.float32)


def colormap(values, cmap: Optional[str] = None) -> np.ndarray:
    """Map values in [0, 1] (clipped) to RGB floats in [0, 1]; shape (...,) -> (..., 3).

    ``cmap`` None uses the built-in :data:`HEATMAP`; a name uses matplotlib's colour map.
    """
    x = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0), 0.0, 1.0)
    if cmap is not None:
        from matplotlib import colormaps

        if cmap not in colormaps:
            raise InputError(f"unknown colour map '{cmap}'", "pass a matplotlib colour map name, e.g. 'viridis'")
        return colormaps[cmap](x)[..., :3].astype(np.float32)
    out = np.empty(x.shape + (3,), dtype=np.float32)
    for c in range(3):
        out[..., c] = np.interp(x, HEATMAP[:, 0], HEATMAP[:, c + 1])
    return out


def vertex_errors(pred, gt) -> np.ndarray:
    """Per-vertex L2 distance between two (T, V, 3) sequences (flat (T, 3V) reshaped); (T, V)."""
    p, g = _as_seq(pred, "prediction"), _as_seq(gt, "ground truth")
    if p.shape[1] != g.shape[1]:
        raise InputError(f"prediction has {p.shape[1]} vertices but ground truth has {g.shape[1]}",
                         "compare sequences of the same mesh")
    n = min(len(p), len(g))
    if n == 0:
        raise InputError("cannot compare empty sequences (0 frames)", "pass at least one frame")
    return np.linalg.norm(p[:n] - g[:n], axis=-1)


def error_colors(pred, gt, vmax: Optional[float] = None, cmap: Optional[str] = None) -> np.ndarray:
    """Per-vertex L2 error heatmap colours, (T, V, 3) floats in [0, 1].

    The prediction is cut to the ground truth's length (and vice versa). ``vmax`` is the error
    shown at full colour (same units as the meshes); default: the largest error in the sequence,
    so that colours compare across frames.
    """
    err = vertex_errors(pred, gt)
    if vmax is None:
        vmax = float(err.max())
    elif not np.isfinite(vmax) or vmax <= 0:
        raise InputError(f"vmax={vmax} must be a positive number", "pass the error shown at full colour, e.g. 0.005")
    return colormap(err / vmax if vmax > 0 else np.zeros_like(err), cmap)


def _as_seq(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu().float() if hasattr(x, "detach") else x, dtype=np.float32)  # bfloat16 too
    if a.ndim == 2 and a.shape[1] % 3 == 0:
        a = a.reshape(len(a), -1, 3)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"{name} has shape {a.shape}; expected (T, V, 3) or (T, 3V)", "pass a vertex sequence")
    if not np.isfinite(a).all():
        raise InputError(f"{name} has non-finite values (NaN or inf)", "check the model output")
    return a
