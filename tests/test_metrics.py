"""LVE, FDD and MVE: equal to the torchmetrics oracle and to plain loop computations; bad inputs refused."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from conftest import real_file

from jambatalk import metrics
from jambatalk.errors import InputError

T, V = 7, 30


def _seq(rng, t=T, v=V):
    return rng.standard_normal((t, v, 3))


def _lve_oracle(pred, gt, idx):
    from torchmetrics.functional.multimodal import lip_vertex_error

    return float(lip_vertex_error(torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(gt, dtype=torch.float64),
                                  [int(i) for i in idx]))


def _fdd_loops(pred, gt, template, upper):
    """s_gt - s_pred written with explicit loops over vertices, frames and coordinates."""

    def s(seq):
        total = 0.0
        for u in upper:
            d = [sum((seq[t][u][c] - template[u][c]) ** 2 for c in range(3)) for t in range(len(gt))]
            mean = sum(d) / len(d)
            total += math.sqrt(sum((x - mean) ** 2 for x in d) / len(d))
        return total / len(upper)

    return s(gt) - s(pred)


def _mve_loops(pred, gt):
    total = 0.0
    for t in range(len(gt)):
        for v in range(len(gt[t])):
            total += math.sqrt(sum((pred[t][v][c] - gt[t][v][c]) ** 2 for c in range(3)))
    return total / (len(gt) * len(gt[0]))


# ----------------------------------------------------------------------------- values


def test_lve_equals_torchmetrics(rng):
    for _ in range(3):
        pred, gt = _seq(rng), _seq(rng)
        idx = rng.choice(V, size=12, replace=False)
        got = metrics.lve(pred, gt, idx)
        assert isinstance(got, float)
        assert got == pytest.approx(_lve_oracle(pred, gt, idx), rel=1e-12)
        per_frame = metrics.lve_per_frame(pred, gt, idx)
        assert per_frame.shape == (T,) and per_frame.dtype == np.float64
        assert per_frame.mean() == pytest.approx(got, rel=1e-12)


def test_lve_is_squared_max_not_root():
    gt = np.zeros((2, 4, 3))
    pred = gt.copy()
    pred[:, 1, 0] = 3.0  # one lip vertex off by 3 -> squared error 9 on every frame
    pred[:, 2, 1] = 1.0  # a smaller error on another lip vertex does not count
    assert metrics.lve(pred, gt, [1, 2]) == pytest.approx(9.0)
    assert metrics.lve(pred, gt, [0, 2]) == pytest.approx(1.0)  # vertex 1 is not a lip vertex here


def test_duplicated_lip_indices_do_not_change_lve(rng):
    pred, gt = _seq(rng), _seq(rng)
    unique = rng.choice(V, size=10, replace=False)
    duplicated = np.concatenate([unique, unique[:4]])
    assert metrics.lve(pred, gt, duplicated) == metrics.lve(pred, gt, unique)
    assert metrics.lve(pred, gt, duplicated) == pytest.approx(_lve_oracle(pred, gt, duplicated), rel=1e-12)


def test_flame_lip_mask_has_duplicates_that_do_not_matter(rng):
    with open(real_file("FLAME_masks.pkl"), "rb") as f:
        lips = np.asarray(pickle.load(f, encoding="latin1")["lips"])
    assert len(lips) > len(np.unique(lips))
    pred, gt = _seq(rng, 3, 5023), _seq(rng, 3, 5023)
    assert metrics.lve(pred, gt, lips) == metrics.lve(pred, gt, np.unique(lips))
    assert metrics.lve(pred, gt, lips) == pytest.approx(_lve_oracle(pred, gt, lips), rel=1e-12)


def test_fdd_equals_loop_computation(rng):
    pred, gt, template = _seq(rng), _seq(rng), rng.standard_normal((V, 3))
    upper = rng.choice(V, size=9, replace=False)
    got = metrics.fdd(pred, gt, template, upper)
    assert isinstance(got, float)
    assert got == pytest.approx(_fdd_loops(pred.tolist(), gt.tolist(), template.tolist(), upper), rel=1e-10)
    # Signed: swapping prediction and ground truth flips the sign.
    assert metrics.fdd(gt, pred, template, upper) == pytest.approx(-got, rel=1e-12)
    assert got == pytest.approx(metrics.face_dynamics(gt, template, upper) - metrics.face_dynamics(pred, template, upper))


def test_duplicated_upper_face_indices_count_once(rng):
    pred, gt, template = _seq(rng), _seq(rng), rng.standard_normal((V, 3))
    unique = rng.choice(V, size=9, replace=False)
    duplicated = np.concatenate([unique, unique[:5]])
    assert metrics.fdd(pred, gt, template, duplicated) == pytest.approx(
        _fdd_loops(pred.tolist(), gt.tolist(), template.tolist(), unique), rel=1e-10)


def test_flame_upper_face_is_the_827_vertex_union(rng):
    with open(real_file("FLAME_masks.pkl"), "rb") as f:
        masks = pickle.load(f, encoding="latin1")
    concatenated = np.concatenate([masks["forehead"], masks["eye_region"]])
    union = np.union1d(masks["forehead"], masks["eye_region"])
    assert len(union) == 827 < len(concatenated)
    pred, gt, template = _seq(rng, 4, 5023), _seq(rng, 4, 5023), rng.standard_normal((5023, 3))
    assert metrics.fdd(pred, gt, template, concatenated) == metrics.fdd(pred, gt, template, union)
    # Equal to the plain computation over the 827 vertices.
    d = lambda x: ((x[:, union] - template[union]) ** 2).sum(-1).std(0).mean()  # noqa: E731
    assert metrics.fdd(pred, gt, template, concatenated) == pytest.approx(d(gt) - d(pred), rel=1e-12)


def test_fdd_of_a_static_prediction_is_the_gt_dynamics(rng):
    gt, template = _seq(rng), rng.standard_normal((V, 3))
    static = np.repeat(template[None], T, axis=0)  # no motion: its dynamics are zero
    upper = np.arange(V)
    assert metrics.face_dynamics(static, template, upper) == 0.0
    assert metrics.fdd(static, gt, template, upper) == pytest.approx(metrics.face_dynamics(gt, template, upper))
    assert metrics.fdd(static, gt, template, upper) > 0
    # A prediction livelier than the ground truth: FDD is negative, its absolute value is reported too.
    report = metrics.evaluate_sequences({"a": gt}, {"a": static}, template, [0], upper)
    assert report["overall"]["fdd"] == pytest.approx(-metrics.face_dynamics(gt, template, upper), rel=1e-12)
    assert report["overall"]["fdd"] < 0
    assert report["overall"]["fdd_abs"] == pytest.approx(-report["overall"]["fdd"], rel=1e-12)


def test_mve_and_per_vertex_error_equal_loop_computation(rng):
    pred, gt = _seq(rng), _seq(rng)
    got = metrics.mve(pred, gt)
    assert isinstance(got, float)
    assert got == pytest.approx(_mve_loops(pred.tolist(), gt.tolist()), rel=1e-12)
    pve = metrics.per_vertex_error(pred, gt)
    assert pve.shape == (V,)
    for v in (0, 13, V - 1):
        expected = sum(math.sqrt(sum((pred[t, v, c] - gt[t, v, c]) ** 2 for c in range(3))) for t in range(T)) / T
        assert pve[v] == pytest.approx(expected, rel=1e-12)
    assert metrics.mve_per_frame(pred, gt).mean() == pytest.approx(got, rel=1e-12)


def test_lip_opening_is_distance_between_lip_centroids():
    t = np.arange(5, dtype=np.float64)
    v = np.zeros((5, 6, 3))
    v[:, 0, 1] = v[:, 1, 1] = 0.5 + t  # upper lip at y = 0.5 + t
    v[:, 1, 0] = 2.0  # x differs inside the upper lip set: the centroid's x is 1
    v[:, 2, 0] = 1.0  # lower lip at (1, -1, 0) every frame
    v[:, 2, 1] = -1.0
    v[:, 3, 2] = 9.0  # not a lip vertex
    opening = metrics.lip_opening(v, [0, 1], [2])
    np.testing.assert_allclose(opening, 1.5 + t, rtol=1e-12)


# ----------------------------------------------------------------------------- length, layout, tensors


def test_prediction_is_cut_to_ground_truth_length(rng):
    gt = _seq(rng)
    pred = np.concatenate([_seq(rng), np.full((4, V, 3), np.nan)])  # extra frames, even NaN, are ignored
    template, idx = rng.standard_normal((V, 3)), np.arange(0, V, 3)
    cut = pred[:T]
    assert metrics.lve(pred, gt, idx) == metrics.lve(cut, gt, idx)
    assert metrics.fdd(pred, gt, template, idx) == metrics.fdd(cut, gt, template, idx)
    assert metrics.mve(pred, gt) == metrics.mve(cut, gt)
    assert metrics.lve(pred, gt, idx) == pytest.approx(_lve_oracle(pred, gt, idx), rel=1e-12)


def test_flat_layout_equals_vertex_layout(rng):
    pred, gt, template, idx = _seq(rng), _seq(rng), rng.standard_normal((V, 3)), np.arange(5)
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    assert metrics.lve(flat(pred), flat(gt), idx) == metrics.lve(pred, gt, idx)
    assert metrics.fdd(flat(pred), gt, template.reshape(-1), idx) == metrics.fdd(pred, gt, template, idx)
    assert metrics.mve(flat(pred), gt) == metrics.mve(pred, gt)


def test_read_only_arrays_mixed_with_tensors_give_no_warning(rng):
    """A read-only numpy array beside a tensor (a memory-mapped ground truth, a prediction tensor) is
    evaluated as a writable one, without torch's warning about non-writable arrays."""
    import warnings

    pred, gt, template, idx = _seq(rng), _seq(rng), rng.standard_normal((V, 3)), np.arange(0, V, 2)
    want = (metrics.lve(pred, gt, idx), metrics.fdd(pred, gt, template, idx))
    for a in (gt, template, idx):
        a.flags.writeable = False
    was = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch gives this warning once per process otherwise
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            got = (metrics.lve(torch.from_numpy(pred), gt, idx), metrics.fdd(torch.from_numpy(pred), gt, template, idx))
        finally:
            torch.set_warn_always(was)
    assert got == pytest.approx(want, rel=1e-12)


def test_a_tensor_template_with_numpy_sequences(rng):
    """A model's template (a tensor) beside numpy sequences raised numpy's TypeError (ndarray - Tensor)."""
    pred, gt, template, idx = _seq(rng), _seq(rng), rng.standard_normal((V, 3)), np.arange(0, V, 2)
    for t in (torch.from_numpy(template), torch.from_numpy(template).float()):
        want = template if t.dtype == torch.float64 else t.numpy()
        assert metrics.fdd(pred, gt, t, idx) == metrics.fdd(pred, gt, want, idx)
        np.testing.assert_array_equal(metrics.face_dynamics(gt, t, idx), metrics.face_dynamics(gt, want, idx))
        report = metrics.evaluate_sequences({"a": pred}, {"a": gt}, {"a": t}, idx, idx)
        assert report == metrics.evaluate_sequences({"a": pred}, {"a": gt}, {"a": want}, idx, idx)
    with pytest.raises(InputError, match="template has dtype bool"):
        metrics.fdd(pred, gt, torch.zeros(V, 3, dtype=torch.bool), idx)


def test_cpu_tensors_give_the_same_as_numpy(rng):
    pred, gt, template, idx = _seq(rng), _seq(rng), rng.standard_normal((V, 3)), np.arange(0, V, 2)
    tp, tg, tt = (torch.from_numpy(x) for x in (pred, gt, template))
    tp.requires_grad_(True)
    assert metrics.lve(tp, tg, torch.from_numpy(idx)) == pytest.approx(metrics.lve(pred, gt, idx), rel=1e-14)
    assert metrics.fdd(tp, tg, tt, idx) == pytest.approx(metrics.fdd(pred, gt, template, idx), rel=1e-12)
    assert metrics.mve(tp, tg) == pytest.approx(metrics.mve(pred, gt), rel=1e-14)
    assert isinstance(metrics.mve(tp, tg), float)
    np.testing.assert_allclose(metrics.per_vertex_error(tp, gt), metrics.per_vertex_error(pred, gt), rtol=1e-14)
    # float32 tensors are evaluated in float64: the same as numpy on the float32 values.
    p32, g32 = tp.detach().float(), tg.float()
    assert metrics.lve(p32, g32, idx) == pytest.approx(
        metrics.lve(p32.numpy().astype(np.float64), g32.numpy().astype(np.float64), idx), rel=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensors_give_the_same_as_numpy(rng):
    pred, gt, template, idx = _seq(rng), _seq(rng), rng.standard_normal((V, 3)), np.arange(0, V, 2)
    tp, tg, tt = (torch.from_numpy(x).cuda() for x in (pred, gt, template))
    report = metrics.evaluate_sequences({"a": tp}, {"a": tg}, {"a": tt}, idx, idx)
    expected = metrics.evaluate_sequences({"a": pred}, {"a": gt}, {"a": template}, idx, idx)
    for key in ("lve", "fdd", "mve"):
        assert report["overall"][key] == pytest.approx(expected["overall"][key], rel=1e-12)


# ----------------------------------------------------------------------------- aggregation


def _constant_lip_error(t, d):
    """A sequence pair whose LVE is exactly d**2 on every frame (one lip vertex off by d)."""
    gt = np.zeros((t, V, 3))
    pred = gt.copy()
    pred[:, 0, 2] = d
    return pred, gt


def test_overall_lve_and_mve_are_frame_weighted(rng):
    (pa, ga), (pb, gb) = _constant_lip_error(2, 1.0), _constant_lip_error(8, 2.0)
    template = np.zeros((V, 3))
    report = metrics.evaluate_sequences({"a": pa, "b": pb}, {"a": ga, "b": gb}, template, [0, 1], [5, 6])
    seq = report["per_sequence"]
    assert seq["a"]["lve"] == pytest.approx(1.0) and seq["b"]["lve"] == pytest.approx(4.0)
    frame_weighted = (2 * 1.0 + 8 * 4.0) / 10
    mean_of_means = (1.0 + 4.0) / 2
    assert report["overall"]["lve"] == pytest.approx(frame_weighted)
    assert report["overall"]["lve"] != pytest.approx(mean_of_means)
    # Frame-weighted == the metric over all frames of all sequences put end to end.
    both_p, both_g = np.concatenate([pa, pb]), np.concatenate([ga, gb])
    assert report["overall"]["lve"] == pytest.approx(_lve_oracle(both_p, both_g, [0, 1]), rel=1e-12)
    assert report["overall"]["mve"] == pytest.approx(metrics.mve(both_p, both_g), rel=1e-12)
    assert report["overall"]["mve"] != pytest.approx((seq["a"]["mve"] + seq["b"]["mve"]) / 2)
    assert report["overall"]["n_frames"] == 10 and report["overall"]["n_sequences"] == 2


def test_evaluate_sequences_matches_single_sequence_functions(rng):
    names = ["s1", "s2", "s3"]
    lengths = {"s1": 5, "s2": 9, "s3": 3}
    gts = {n: _seq(rng, lengths[n]) for n in names}
    preds = {n: _seq(rng, lengths[n] + 2) for n in names}  # longer: cut to gt
    templates = {n: rng.standard_normal((V, 3)) for n in names}
    lip, upper = rng.choice(V, 8, replace=False), rng.choice(V, 6, replace=False)
    report = metrics.evaluate_sequences(preds, gts, templates, lip, upper)
    fdds = []
    for n in names:
        got = report["per_sequence"][n]
        assert got["frames"] == lengths[n]
        assert got["lve"] == pytest.approx(metrics.lve(preds[n], gts[n], lip), rel=1e-12)
        assert got["fdd"] == pytest.approx(metrics.fdd(preds[n], gts[n], templates[n], upper), rel=1e-12)
        assert got["mve"] == pytest.approx(metrics.mve(preds[n], gts[n]), rel=1e-12)
        fdds.append(got["fdd"])
    assert report["overall"]["fdd"] == pytest.approx(np.mean(fdds), rel=1e-12)
    assert report["overall"]["fdd_abs"] == pytest.approx(abs(np.mean(fdds)), rel=1e-12)
    # Per-sequence results merged from several workers summarize to the same overall figures.
    part1 = metrics.evaluate_sequences({"s1": preds["s1"]}, {"s1": gts["s1"]}, templates, lip, upper)
    part2 = metrics.evaluate_sequences({n: preds[n] for n in names[1:]}, {n: gts[n] for n in names[1:]},
                                       templates, lip, upper)
    merged = metrics.summarize({**part1["per_sequence"], **part2["per_sequence"]})
    for key, value in report["overall"].items():
        assert merged[key] == pytest.approx(value, rel=1e-12)


def test_evaluate_sequences_refuses_missing_names(rng):
    gts = {"a": _seq(rng), "b": _seq(rng)}
    with pytest.raises(InputError, match="no prediction for 1 sequence.*b"):
        metrics.evaluate_sequences({"a": gts["a"]}, gts, np.zeros((V, 3)), [0], [1])
    with pytest.raises(InputError, match="without ground truth: c"):
        metrics.evaluate_sequences({**gts, "c": gts["a"]}, gts, np.zeros((V, 3)), [0], [1])
    with pytest.raises(InputError, match="no template for 1 sequence.*b"):
        metrics.evaluate_sequences(gts, gts, {"a": np.zeros((V, 3))}, [0], [1])
    with pytest.raises(InputError, match="sequence 'b'.*vertex counts"):
        metrics.evaluate_sequences(gts, {"a": gts["a"], "b": _seq(rng, T, V + 1)}, np.zeros((V, 3)), [0], [1])
    with pytest.raises(InputError, match="no ground-truth"):
        metrics.evaluate_sequences({}, {}, np.zeros((V, 3)), [0], [1])


# ----------------------------------------------------------------------------- refusals


def _z(*shape):
    return np.zeros(shape)


BAD_PAIRS = [
    ("vertex counts differ", _z(5, 10, 3), _z(5, 11, 3), "different vertex counts"),
    ("flat vertex counts differ", _z(5, 30), _z(5, 33), "different vertex counts"),
    ("pred shorter", _z(4, 10, 3), _z(5, 10, 3), "fewer than gt"),
    ("pred 1-D", _z(30), _z(5, 10, 3), "expected \\(T, V, 3\\)"),
    ("pred batched", _z(1, 5, 10, 3), _z(5, 10, 3), "drop the batch dimension"),
    ("gt coords not 3", _z(5, 10, 3), _z(5, 10, 2), "expected \\(T, V, 3\\)"),
    ("flat not divisible by 3", _z(5, 10, 3), _z(5, 31), "expected \\(T, V, 3\\)"),
    ("gt empty", _z(5, 10, 3), _z(0, 10, 3), "empty"),
    ("no vertices", _z(5, 0, 3), _z(5, 0, 3), "empty"),
]


@pytest.mark.parametrize("label,pred,gt,pattern", BAD_PAIRS, ids=[b[0] for b in BAD_PAIRS])
@pytest.mark.parametrize("fn", ["lve", "fdd", "mve"])
def test_bad_shapes_are_refused_naming_both_shapes(label, pred, gt, pattern, fn):
    args = {"lve": lambda: metrics.lve(pred, gt, [0]),
            "fdd": lambda: metrics.fdd(pred, gt, _z(10, 3), [0]),
            "mve": lambda: metrics.mve(pred, gt)}[fn]
    with pytest.raises(InputError, match=pattern) as exc:
        args()
    assert str(pred.shape) in str(exc.value) and str(gt.shape) in str(exc.value)


def test_torch_bad_shapes_are_refused_too():
    with pytest.raises(InputError, match=r"\(5, 10, 3\).*\(5, 11, 3\)"):
        metrics.mve(torch.zeros(5, 10, 3), torch.zeros(5, 11, 3))


def test_non_finite_values_are_refused(rng):
    pred, gt = _seq(rng), _seq(rng)
    bad = gt.copy()
    bad[2, 3, 1] = np.nan
    with pytest.raises(InputError, match=r"gt has non-finite.*\(7, 30, 3\)"):
        metrics.lve(pred, bad, [0])
    with pytest.raises(InputError, match="pred has non-finite"):
        metrics.mve(torch.from_numpy(np.where(np.isnan(bad), np.inf, pred)), gt)
    template = np.zeros((V, 3))
    template[0, 0] = np.inf
    with pytest.raises(InputError, match="template has non-finite"):
        metrics.fdd(pred, gt, template, [0])


@pytest.mark.parametrize("template_shape", [(V - 1, 3), (V, 2), (3 * V + 3,), (1, V, 3)])
def test_template_of_another_shape_is_refused(rng, template_shape):
    pred, gt = _seq(rng), _seq(rng)
    with pytest.raises(InputError, match="template has shape") as exc:
        metrics.fdd(pred, gt, np.zeros(template_shape), [0])
    assert str(template_shape) in str(exc.value) and str(gt.shape) in str(exc.value)


@pytest.mark.parametrize("idx,pattern", [
    ([0, V], f"indices from 0 to {V} but the sequences have {V} vertices"),
    ([-1, 2], f"indices from -1 to 2 but the sequences have {V} vertices"),
    ([], "non-empty 1-D"),
    ([[0, 1], [2, 3]], "non-empty 1-D"),
    ([0.0, 1.0], "non-empty 1-D"),
    (np.ones(V - 1, dtype=bool), f"boolean mask of shape \\({V - 1},\\)"),
])
def test_bad_indices_are_refused(rng, idx, pattern):
    pred, gt = _seq(rng), _seq(rng)
    with pytest.raises(InputError, match=pattern) as exc:
        metrics.lve(pred, gt, idx)
    assert str(pred.shape) in str(exc.value)
    with pytest.raises(InputError, match=pattern):
        metrics.fdd(pred, gt, np.zeros((V, 3)), idx)


def test_boolean_mask_equals_indices(rng):
    pred, gt = _seq(rng), _seq(rng)
    mask = np.zeros(V, dtype=bool)
    mask[[2, 5, 11]] = True
    assert metrics.lve(pred, gt, mask) == metrics.lve(pred, gt, [2, 5, 11])


def test_ragged_lists_incomplete_results_and_a_lone_frame_get_clear_errors():
    with pytest.raises(InputError, match="could not be read as an array.*every frame the same size"):
        metrics.lve([[1.0, 2.0, 3.0], [1.0, 2.0]], np.zeros((2, 3)), [0])
    with pytest.raises(InputError, match=r"results for 'a' lack \['frames'"):
        metrics.summarize({"a": {}})
    frame = np.zeros((100, 3))  # one frame of 100 vertices, which reads as 100 frames of one vertex
    with pytest.raises(InputError, match=r"pass one frame of V vertices as \(1, V, 3\)"):
        metrics.lve(frame, frame, np.arange(10))


def test_evaluate_sequences_refuses_lists_in_place_of_dicts(rng):
    seqs = [_seq(rng), _seq(rng)]
    with pytest.raises(InputError, match="preds is a list, not a mapping"):
        metrics.evaluate_sequences(seqs, {"a": seqs[0]}, np.zeros((V, 3)), np.arange(2), np.arange(2))
    with pytest.raises(InputError, match="gts is a list, not a mapping"):
        metrics.evaluate_sequences({"a": seqs[0]}, seqs, np.zeros((V, 3)), np.arange(2), np.arange(2))


def test_a_mesh_without_an_upper_face_mask_gets_lve_and_mve_and_no_fdd():
    """The reduced 3895-vertex BIWI mesh has lips but no upper-face mask: jambatalk test stopped with no metric
    at all; LVE and MVE are computed as with a mask, and FDD is None (null in report.json)."""
    rng = np.random.default_rng(0)
    gt, pred = rng.normal(size=(2, 12, 40, 3))
    template = rng.normal(size=(40, 3))
    lips, upper = np.arange(5, 15), np.arange(20, 30)
    with_mask, without = metrics.SequenceMetrics(lips, upper), metrics.SequenceMetrics(lips, None)
    a, b = with_mask.update("s", pred, gt, template), without.update("s", pred, gt, template)
    assert b["fdd"] is None and a["fdd"] is not None
    assert (b["lve"], b["mve"]) == (a["lve"], a["mve"]) == (metrics.lve(pred, gt, lips), metrics.mve(pred, gt))
    overall = without.compute()["overall"]
    assert overall["fdd"] is None and overall["fdd_abs"] is None and overall["lve"] == a["lve"]
