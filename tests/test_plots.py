"""Evaluation plots: each writes a real, non-blank PNG; bad inputs are refused and leave no file."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import real_file

from jambatalk import plots
from jambatalk.errors import InputError


def _read_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(str(path))


def _assert_non_trivial(image, min_h, min_w):
    h, w = image.shape[:2]
    assert h >= min_h and w >= min_w
    rgb = image[..., :3]
    assert rgb.std() > 0.02  # not a blank or single-colour image
    # More than a few colours: drawn content, not just a frame.
    assert len(np.unique((rgb.reshape(-1, 3) * 255).astype(np.uint8), axis=0)) > 20
    return rgb


def _grid_mesh(n=12):
    """A small curved sheet (a cap of a sphere) facing +z, with its triangles."""
    x, y = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    z = np.sqrt(4 - x**2 - y**2)
    verts = np.stack([x, y, z], -1).reshape(-1, 3)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return verts, faces


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_vertex_error_plot_with_faces_and_points(tmp_path):
    verts, faces = _grid_mesh()
    errors = 0.001 * (verts[:, 0] + 1)  # error grows from left to right
    for name, f in (("mesh.png", faces), ("points.png", None)):
        plots.plot_vertex_error(tmp_path / name, verts, f, errors)
        rgb = _assert_non_trivial(_read_png(tmp_path / name), 300, 300)
        # The colour map is drawn: both ends of viridis (dark purple, yellow) are present.
        assert (rgb[..., 2] - rgb[..., 1] > 0.2).any() and (rgb[..., 0] + rgb[..., 1] - 2 * rgb[..., 2] > 0.8).any()
    assert _leftovers(tmp_path) == ["mesh.png", "points.png"]


def test_vertex_error_plot_on_flame(tmp_path):
    from jambatalk.mesh import load_mesh

    verts, faces = load_mesh(real_file("FLAME_sample.ply"))
    errors = np.exp(-(((verts[:, 1] - verts[:, 1].mean()) / 0.03) ** 2)) * 0.002
    plots.plot_vertex_error(tmp_path / "flame.png", verts, faces, errors)
    _assert_non_trivial(_read_png(tmp_path / "flame.png"), 300, 300)


def test_lip_opening_plot(tmp_path):
    t = np.arange(90) / 30
    gt = 0.01 + 0.005 * np.sin(2 * np.pi * t)
    pred = gt + 0.001 * np.cos(3 * t)
    plots.plot_lip_opening(tmp_path / "lips.png", gt, pred, fps=30, title="subject sentence01")
    rgb = _assert_non_trivial(_read_png(tmp_path / "lips.png"), 200, 500)
    assert ((rgb[..., 0] > 0.8) & (rgb[..., 2] < 0.3)).any()  # the orange prediction line


def test_loss_curves_plot(tmp_path):
    history = {"train/loss": [(s, 1.0 / (s + 1)) for s in range(50)], "val/loss": [(s, 2.0 / (s + 1)) for s in (0, 25, 49)]}
    plots.plot_loss_curves(tmp_path / "loss.png", history)
    _assert_non_trivial(_read_png(tmp_path / "loss.png"), 300, 500)
    # Non-positive and non-finite values are accepted (linear axis, bad points dropped).
    plots.plot_loss_curves(tmp_path / "loss2.png", {"diff": [(0, -1.0), (1, 0.5), (2, float("nan")), (3, 0.2)]})
    _assert_non_trivial(_read_png(tmp_path / "loss2.png"), 300, 500)


def test_loss_curves_use_log_scale_only_for_positive_values(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    scales = []
    real = Axes.set_yscale
    monkeypatch.setattr(Axes, "set_yscale", lambda self, value, **kw: (scales.append(value), real(self, value, **kw)))
    plots.plot_loss_curves(tmp_path / "a.png", {"loss": [(0, 1.0), (1, 0.1)]})
    assert scales == ["log"]
    plots.plot_loss_curves(tmp_path / "b.png", {"loss": [(0, 1.0), (1, 0.0)]})
    assert scales == ["log"]


def test_plot_replaces_an_existing_file_atomically(tmp_path):
    target = tmp_path / "lips.png"
    target.write_bytes(b"old")
    plots.plot_lip_opening(target, np.ones(10), np.ones(10), fps=25, title="x")
    assert target.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError):
        plots.plot_lip_opening(target, np.ones(10), np.ones(9), fps=25, title="x")
    assert target.read_bytes()[:4] == b"\x89PNG"  # a failed plot keeps the previous file whole
    assert _leftovers(tmp_path) == ["lips.png"]


BAD_CALLS = [
    ("lip lengths differ", lambda p: plots.plot_lip_opening(p, np.ones(10), np.ones(12), 30, "t"), r"\(10,\).*\(12,\)"),
    ("lip curve 2-D", lambda p: plots.plot_lip_opening(p, np.ones((10, 2)), np.ones(10), 30, "t"), r"\(10, 2\)"),
    ("lip empty", lambda p: plots.plot_lip_opening(p, np.ones(0), np.ones(0), 30, "t"), "non-zero length"),
    ("lip nan", lambda p: plots.plot_lip_opening(p, np.full(5, np.nan), np.ones(5), 30, "t"), "non-finite"),
    ("bad fps", lambda p: plots.plot_lip_opening(p, np.ones(5), np.ones(5), 0, "t"), "fps is 0"),
    ("errors length", lambda p: plots.plot_vertex_error(p, np.zeros((10, 3)), None, np.ones(9)), r"\(9,\).*\(10, 3\)"),
    ("template shape", lambda p: plots.plot_vertex_error(p, np.zeros((10, 2)), None, np.ones(10)), r"\(10, 2\)"),
    ("faces range", lambda p: plots.plot_vertex_error(p, np.zeros((10, 3)), [[0, 1, 10]], np.ones(10)), "0..10"),
    ("faces shape", lambda p: plots.plot_vertex_error(p, np.zeros((10, 3)), [[0, 1]], np.ones(10)), r"\(1, 2\)"),
    ("history empty", lambda p: plots.plot_loss_curves(p, {}), "empty"),
    ("history all nan", lambda p: plots.plot_loss_curves(p, {"l": [(0, float("nan"))]}), "no finite"),
    ("history not pairs", lambda p: plots.plot_loss_curves(p, {"l": [1.0, 2.0]}), "\\(step, value\\)"),
]


@pytest.mark.parametrize("label,call,pattern", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_inputs_are_refused_and_leave_no_file(tmp_path, label, call, pattern):
    with pytest.raises(InputError, match=pattern):
        call(tmp_path / "plot.png")
    assert _leftovers(tmp_path) == []


def test_failure_while_drawing_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken(self, *args, **kwargs):
        with open(args[0], "wb") as f:
            f.write(b"\x89PNG half")  # a partial write, then a failure
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.plot_lip_opening(tmp_path / "lips.png", np.ones(5), np.ones(5), 30, "t")
    assert _leftovers(tmp_path) == []


def test_output_path_is_checked(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        plots.plot_loss_curves(tmp_path / "missing" / "loss.png", {"l": [(0, 1.0)]})
    with pytest.raises(InputError, match=r"\.png"):
        plots.plot_loss_curves(tmp_path / "loss.jpg", {"l": [(0, 1.0)]})
    assert _leftovers(tmp_path) == []


def test_missing_matplotlib_gives_a_clear_error(tmp_path, monkeypatch):
    import sys

    from jambatalk.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(MissingDependencyError, match="matplotlib.*pip install"):
        plots.plot_loss_curves(tmp_path / "loss.png", {"l": [(0, 1.0)]})
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("dataset, scale, unit", [("vocaset", 1000.0, "mm"), ("biwi3895", 1000.0, "mm"),
                                                  ("biwi", 1.0, "normalised units")])
def test_evaluation_plots_show_each_datasets_units(dataset, scale, unit, tmp_path, monkeypatch):
    """BIWI's 23370-vertex meshes are divided by the square root of their area: their errors were shown x1000 as mm."""
    from jambatalk import evaluate
    from jambatalk.data import get_spec

    calls = {}
    monkeypatch.setattr(plots, "plot_vertex_error", lambda *a, **k: calls.setdefault("vertex", k))
    monkeypatch.setattr(plots, "plot_lip_opening", lambda *a, **k: calls.setdefault("lips", k))
    template = np.random.default_rng(0).normal(size=(40, 3))
    item = {"template": template, "name": "seq"}
    motion = np.repeat(template[None], 5, axis=0)
    evaluate._plots(tmp_path, get_spec(dataset), tmp_path, tmp_path / "run" / "best", (item, motion, motion),
                    np.zeros(40), np.arange(10), lambda v, up, low: np.zeros(len(v)))
    assert {k: calls[k]["scale"] for k in calls} == {"vertex": scale, "lips": scale}
    assert {k: calls[k]["unit"] for k in calls} == {"vertex": unit, "lips": unit}
