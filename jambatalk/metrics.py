"""Evaluation metrics of speech-driven 3D facial animation: LVE, FDD and MVE.

The definitions are the ones behind every published number of the field (REFERENCE.md, section 6):

- LVE (lip vertex error): per frame, the maximum over lip vertices of the *squared* L2 error; the
  figure is the mean over all frames of all sequences (frame-weighted, no square root).
- FDD (upper-face dynamics deviation): per sequence, ``s = mean over upper-face vertices of the
  standard deviation over time (ddof=0) of ||v_t - template||^2``; ``FDD = s_gt - s_pred`` (signed),
  averaged over sequences; its absolute value is reported too.
- MVE (mean vertex error): the mean over frames and vertices of the L2 error.

Every function takes ``(T, V, 3)`` sequences (or flat ``(T, 3V)`` ones) as numpy arrays or torch
tensors on any device; the prediction is cut to the ground truth's length first (a shorter
prediction is refused). Computation is in float64 (float32 on Apple's MPS, which has no float64),
on the tensors' own device, so validation inside a training loop copies nothing to the host but
the final numbers. Scalars come back as Python floats, per-frame and per-vertex curves as float64
numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from .errors import InputError

__all__ = [
    "lve",
    "lve_per_frame",
    "fdd",
    "face_dynamics",
    "mve",
    "mve_per_frame",
    "per_vertex_error",
    "lip_opening",
    "summarize",
    "SequenceMetrics",
    "evaluate_sequences",
]

ArrayLike = Any  # numpy array, torch tensor, or nested lists of numbers


# ----------------------------------------------------------------------------- input checking


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _shape(x: Any) -> tuple[int, ...]:
    if hasattr(x, "shape"):
        return tuple(int(n) for n in x.shape)
    try:
        return tuple(int(n) for n in np.shape(x))
    except ValueError as exc:  # ragged nested lists
        raise InputError(f"an input could not be read as an array ({str(exc).splitlines()[0]})",
                         "pass arrays of shape (T, V, 3) or (T, 3V), with every frame the same size") from None


def _to_float(x: Any, name: str, like: Any = None) -> Any:
    """``x`` as a float64 numpy array or torch tensor (a tensor when ``x`` or ``like`` is one)."""
    if _is_tensor(x) or _is_tensor(like):
        import torch

        device = x.device if _is_tensor(x) else like.device
        if _is_tensor(x) and (x.dtype.is_complex or x.dtype == torch.bool):
            raise InputError(f"{name} has dtype {x.dtype}; expected real numbers", f"pass {name} as a float tensor")
        dtype = torch.float32 if device.type == "mps" else torch.float64
        if not _is_tensor(x):
            x = _to_float(x, name)  # validate as numpy first, then move
            return torch.as_tensor(np.require(x, requirements="W"), dtype=dtype, device=device)  # read-only: copied
        return x.detach().to(dtype=dtype)
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} could not be read as a numeric array ({exc})", f"pass {name} as a float array") from exc
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name} has dtype {arr.dtype}; expected real numbers", f"pass {name} as a float array")
    return arr.astype(np.float64, copy=False)


def _as_sequence(x: Any, name: str, context: str) -> Any:
    """A (T, V, 3) view of a (T, V, 3) or flat (T, 3V) sequence; refuses anything else."""
    shape = _shape(x)
    if len(shape) == 2 and shape[1] % 3 == 0 and shape[1] > 0:
        x = x.reshape(shape[0], shape[1] // 3, 3)
    elif not (len(shape) == 3 and shape[2] == 3):
        hint = " (drop the batch dimension, e.g. x[0])" if len(shape) in (3, 4) and shape[0] == 1 else ""
        raise InputError(
            f"{name} has shape {shape} ({len(shape)} dimensions); expected (T, V, 3) or flat (T, 3V) with {context}",
            f"pass one sequence of vertex positions{hint}",
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"{name} is empty: shape {shape} with {context}", "pass at least one frame and one vertex")
    return x


def _check_finite(x: Any, name: str, context: str) -> None:
    if _is_tensor(x):
        import torch

        ok = bool(torch.isfinite(x).all())
    else:
        ok = bool(np.isfinite(x).all())
    if not ok:
        raise InputError(f"{name} has non-finite values (NaN or inf); {context}", f"repair {name} before evaluating it")


def _pair(pred: ArrayLike, gt: ArrayLike) -> tuple[Any, Any]:
    """Validated float64 (T, V, 3) pred and gt of the same kind, pred cut to gt's length."""
    p_shape, g_shape = _shape(pred), _shape(gt)
    both = f"pred shape {p_shape}, gt shape {g_shape}"
    like = pred if _is_tensor(pred) else gt
    p = _as_sequence(_to_float(pred, "pred", like), "pred", f"gt of shape {g_shape}")
    g = _as_sequence(_to_float(gt, "gt", like), "gt", f"pred of shape {p_shape}")
    if _is_tensor(p) and p.device != g.device:
        raise InputError(f"pred is on {p.device} but gt is on {g.device} ({both})", "move both to the same device")
    if p.shape[1] != g.shape[1]:
        raise InputError(
            f"pred and gt have different vertex counts ({p.shape[1]} vs {g.shape[1]}): {both}",
            "compare sequences of the same mesh topology",
        )
    if p.shape[0] < g.shape[0]:
        raise InputError(
            f"pred has {p.shape[0]} frames, fewer than gt's {g.shape[0]}: {both}",
            "predict at least as many frames as the ground truth (the prediction is cut to its length)",
        )
    p = p[: g.shape[0]]
    _check_finite(p, "pred", both)
    _check_finite(g, "gt", both)
    return p, g


def _indices(idx: ArrayLike, name: str, n_vertices: int, context: str, like: Any) -> Any:
    """Validated, de-duplicated vertex indices (or a boolean mask of length V) as int64, a tensor if ``like`` is one."""
    if _is_tensor(idx):
        idx = idx.detach().cpu().numpy()
    arr = np.asarray(idx)
    if arr.dtype == bool:
        if arr.shape != (n_vertices,):
            raise InputError(
                f"{name} is a boolean mask of shape {arr.shape} but the sequences have {n_vertices} vertices ({context})",
                f"pass a mask of length {n_vertices} or a list of vertex indices",
            )
        arr = np.flatnonzero(arr)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise InputError(
            f"{name} has shape {arr.shape} and dtype {arr.dtype}; expected a non-empty 1-D list of vertex indices "
            f"({context})",
            f"pass {name} as integer vertex indices",
        )
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_vertices:
        raise InputError(
            f"{name} holds indices from {lo} to {hi} but the sequences have {n_vertices} vertices ({context})",
            f"use {name} made for this mesh (indices 0..{n_vertices - 1})" + (
                "; a 2-D array is read as (frames, 3 x vertices): pass one frame of V vertices as (1, V, 3)"
                if n_vertices == 1 else ""),
        )
    arr = np.unique(arr).astype(np.int64)  # a region is a set: a repeated index must not weigh twice in a mean
    if _is_tensor(like):
        import torch

        return torch.as_tensor(arr, device=like.device)
    return arr


def _template(template: ArrayLike, n_vertices: int, context: str, like: Any) -> Any:
    t_shape = _shape(template)
    if _is_tensor(template) and not _is_tensor(like):  # numpy sequences: the template as numpy too (dtype checked)
        template = template.detach().cpu()
        template = (template.double() if template.is_floating_point() else template).numpy()
    t = _to_float(template, "template", like)
    if t.ndim == 1 and t.shape[0] % 3 == 0:
        t = t.reshape(-1, 3)
    if t.ndim != 2 or t.shape[1] != 3 or t.shape[0] != n_vertices:
        raise InputError(
            f"template has shape {t_shape} but the sequences have {n_vertices} vertices ({context})",
            f"pass the subject's (V, 3) template with V = {n_vertices}",
        )
    if _is_tensor(t) and t.device != like.device:
        t = t.to(like.device)
    _check_finite(t, "template", context)
    return t


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64) if _is_tensor(x) else np.asarray(x, dtype=np.float64)


def _amax(x: Any, axis: int) -> Any:
    return x.amax(dim=axis) if _is_tensor(x) else x.max(axis=axis)


def _std(x: Any, axis: int) -> Any:
    return x.std(dim=axis, correction=0) if _is_tensor(x) else x.std(axis=axis)


# ----------------------------------------------------------------------------- metrics


def lve_per_frame(pred: ArrayLike, gt: ArrayLike, lip_idx: ArrayLike) -> np.ndarray:
    """Per-frame lip vertex error (T,): max over lip vertices of the squared L2 error.

    Duplicated indices in ``lip_idx`` (FLAME's list has 254 entries, 250 unique) do not change a max.
    """
    p, g = _pair(pred, gt)
    idx = _indices(lip_idx, "lip_idx", g.shape[1], f"pred shape {_shape(pred)}, gt shape {_shape(gt)}", g)
    sq = ((p[:, idx] - g[:, idx]) ** 2).sum(-1)  # (T, L)
    return _numpy(_amax(sq, 1))


def lve(pred: ArrayLike, gt: ArrayLike, lip_idx: ArrayLike) -> float:
    """Lip vertex error of one sequence: the mean over its frames of :func:`lve_per_frame`."""
    p, g = _pair(pred, gt)
    idx = _indices(lip_idx, "lip_idx", g.shape[1], f"pred shape {_shape(pred)}, gt shape {_shape(gt)}", g)
    return float(_amax(((p[:, idx] - g[:, idx]) ** 2).sum(-1), 1).mean())


def _dynamics(seq: Any, template: Any, idx: Any) -> Any:
    d = ((seq[:, idx] - template[idx]) ** 2).sum(-1)  # (T, U): squared distance to the template
    return _std(d, 0).mean()


def face_dynamics(vertices: ArrayLike, template: ArrayLike, upper_idx: ArrayLike) -> float:
    """Upper-face dynamics of one sequence: mean over ``upper_idx`` of the std over time of ||v_t - template||^2.

    ``upper_idx`` is a set of vertices: an index listed twice (FLAME's forehead and eye_region overlap
    in 57 vertices) counts once, so ``forehead + eye_region`` gives the 827-vertex region.
    """
    shape = _shape(vertices)
    v = _as_sequence(_to_float(vertices, "vertices"), "vertices", f"template of shape {_shape(template)}")
    context = f"vertices shape {shape}, template shape {_shape(template)}"
    _check_finite(v, "vertices", context)
    t = _template(template, v.shape[1], context, v)
    idx = _indices(upper_idx, "upper_idx", v.shape[1], context, v)
    return float(_dynamics(v, t, idx))


def fdd(pred: ArrayLike, gt: ArrayLike, template: ArrayLike, upper_idx: ArrayLike) -> float:
    """Upper-face dynamics deviation of one sequence, signed: ``s_gt - s_pred`` (see :func:`face_dynamics`).

    Repeated indices in ``upper_idx`` count once (the mean is over a set of vertices).
    """
    p, g = _pair(pred, gt)
    context = f"pred shape {_shape(pred)}, gt shape {_shape(gt)}, template shape {_shape(template)}"
    t = _template(template, g.shape[1], context, g)
    idx = _indices(upper_idx, "upper_idx", g.shape[1], context, g)
    return float(_dynamics(g, t, idx) - _dynamics(p, t, idx))


def mve_per_frame(pred: ArrayLike, gt: ArrayLike) -> np.ndarray:
    """Per-frame mean vertex error (T,): the mean over vertices of the L2 error."""
    p, g = _pair(pred, gt)
    return _numpy((((p - g) ** 2).sum(-1) ** 0.5).mean(1))


def mve(pred: ArrayLike, gt: ArrayLike) -> float:
    """Mean vertex error of one sequence: the mean over frames and vertices of the L2 error."""
    p, g = _pair(pred, gt)
    return float((((p - g) ** 2).sum(-1) ** 0.5).mean())


def per_vertex_error(pred: ArrayLike, gt: ArrayLike) -> np.ndarray:
    """Mean L2 error of each vertex over the frames (V,), e.g. to colour the template with."""
    p, g = _pair(pred, gt)
    return _numpy((((p - g) ** 2).sum(-1) ** 0.5).mean(0))


def lip_opening(vertices: ArrayLike, upper_lip_idx: ArrayLike, lower_lip_idx: ArrayLike) -> np.ndarray:
    """Lip opening per frame (T,): the distance between the centroids of the upper and lower lip vertex sets."""
    shape = _shape(vertices)
    v = _as_sequence(_to_float(vertices, "vertices"), "vertices", "upper and lower lip indices")
    context = f"vertices shape {shape}"
    _check_finite(v, "vertices", context)
    up = _indices(upper_lip_idx, "upper_lip_idx", v.shape[1], context, v)
    low = _indices(lower_lip_idx, "lower_lip_idx", v.shape[1], context, v)
    gap = v[:, up].mean(1) - v[:, low].mean(1)  # (T, 3)
    return _numpy((gap**2).sum(-1) ** 0.5)


# ----------------------------------------------------------------------------- test-set aggregation


def summarize(per_sequence: Mapping[str, Mapping[str, float]]) -> dict[str, float | int]:
    """Overall figures from per-sequence ones (as in :func:`evaluate_sequences`'s ``per_sequence``).

    LVE and MVE are frame-weighted (the mean over all frames of all sequences, as published); FDD is
    the mean over sequences, with ``fdd_abs`` its absolute value. Per-sequence results gathered from
    several processes can be merged into one dict and summarized here.
    """
    if not per_sequence:
        raise InputError("no sequences to summarize", "evaluate at least one sequence")
    for name, m in per_sequence.items():
        missing = [k for k in ("frames", "lve", "mve", "fdd") if k not in m]
        if missing:
            raise InputError(f"per-sequence results for '{name}' lack {missing}",
                             "pass the per_sequence dict of evaluate_sequences or SequenceMetrics.compute")
    frames = {name: int(m["frames"]) for name, m in per_sequence.items()}
    n_frames = sum(frames.values())
    lve_all = math.fsum(float(m["lve"]) * frames[n] for n, m in per_sequence.items()) / n_frames
    mve_all = math.fsum(float(m["mve"]) * frames[n] for n, m in per_sequence.items()) / n_frames
    if any(m["fdd"] is None for m in per_sequence.values()):  # a mesh without an upper-face mask
        fdd_all = None
    else:
        fdd_all = math.fsum(float(m["fdd"]) for m in per_sequence.values()) / len(per_sequence)
    return {
        "lve": lve_all,
        "fdd": fdd_all,
        "fdd_abs": None if fdd_all is None else abs(fdd_all),
        "mve": mve_all,
        "n_sequences": len(per_sequence),
        "n_frames": n_frames,
    }


class SequenceMetrics:
    """Accumulates LVE, FDD and MVE sequence by sequence (e.g. inside a validation loop).

    >>> acc = SequenceMetrics(lip_idx, upper_idx)
    >>> for name, pred, gt, template in batches:
    ...     acc.update(name, pred, gt, template)
    >>> report = acc.compute()  # {"per_sequence": {...}, "overall": {...}}
    """

    def __init__(self, lip_idx: ArrayLike, upper_idx: Optional[ArrayLike]):
        """``upper_idx`` None: a mesh without an upper-face mask, whose FDD is None."""
        self.lip_idx = lip_idx
        self.upper_idx = upper_idx
        self.per_sequence: dict[str, dict[str, float | int]] = {}

    def update(self, name: str, pred: ArrayLike, gt: ArrayLike, template: ArrayLike) -> dict[str, float | int]:
        """Evaluate one sequence; returns and stores its ``{"lve", "fdd", "mve", "frames"}``."""
        if name in self.per_sequence:
            raise InputError(f"sequence '{name}' was evaluated twice", "give each sequence a unique name")
        try:
            p, g = _pair(pred, gt)
            context = f"pred shape {_shape(pred)}, gt shape {_shape(gt)}, template shape {_shape(template)}"
            t = _template(template, g.shape[1], context, g)
            lip = _indices(self.lip_idx, "lip_idx", g.shape[1], context, g)
            upper = None if self.upper_idx is None else _indices(self.upper_idx, "upper_idx", g.shape[1], context, g)
        except InputError as exc:
            raise InputError(f"sequence '{name}': {exc.problem}", exc.fix) from exc
        err = ((p - g) ** 2).sum(-1)  # (T, V) squared L2 error
        result = {
            "lve": float(_amax(err[:, lip], 1).mean()),
            "fdd": None if upper is None else float(_dynamics(g, t, upper) - _dynamics(p, t, upper)),
            "mve": float((err**0.5).mean()),
            "frames": int(g.shape[0]),
        }
        self.per_sequence[name] = result
        return result

    def compute(self) -> dict[str, dict]:
        """``{"per_sequence": {name: {...}}, "overall": summarize(per_sequence)}``."""
        return {"per_sequence": {k: dict(v) for k, v in self.per_sequence.items()}, "overall": summarize(self.per_sequence)}


def evaluate_sequences(
    preds: Mapping[str, ArrayLike],
    gts: Mapping[str, ArrayLike],
    templates: Mapping[str, ArrayLike] | ArrayLike,
    lip_idx: ArrayLike,
    upper_idx: ArrayLike,
) -> dict[str, dict]:
    """LVE, FDD and MVE of every sequence of a test set, and the overall figures.

    ``preds``, ``gts`` and ``templates`` are keyed by sequence name (``templates`` may also be one
    (V, 3) array shared by all sequences). Returns ``{"per_sequence": {name: {"lve", "fdd", "mve",
    "frames"}}, "overall": {"lve", "fdd", "fdd_abs", "mve", "n_sequences", "n_frames"}}`` where the
    overall LVE and MVE are frame-weighted and FDD is the mean over sequences (see :func:`summarize`).
    """
    for what, arg in (("preds", preds), ("gts", gts)):
        if not isinstance(arg, Mapping):
            raise InputError(f"{what} is a {type(arg).__name__}, not a mapping of sequence name -> array",
                             f"pass {what} as a dict keyed by sequence name (or use lve/fdd/mve on one sequence)")
    if not gts:
        raise InputError("no ground-truth sequences to evaluate", "pass at least one sequence")
    missing = sorted(set(gts) - set(preds))
    extra = sorted(set(preds) - set(gts))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no prediction for {len(missing)} sequence(s): {', '.join(missing[:5])}")
        if extra:
            parts.append(f"{len(extra)} prediction(s) without ground truth: {', '.join(extra[:5])}")
        raise InputError("; ".join(parts), "predict exactly the sequences of the ground-truth set")
    if isinstance(templates, Mapping):
        no_template = sorted(set(gts) - set(templates))
        if no_template:
            raise InputError(f"no template for {len(no_template)} sequence(s): {', '.join(no_template[:5])}",
                             "pass a template for every sequence (or one (V, 3) template for all)")
    acc = SequenceMetrics(lip_idx, upper_idx)
    for name in gts:
        template = templates[name] if isinstance(templates, Mapping) else templates
        acc.update(name, preds[name], gts[name], template)
    return acc.compute()
