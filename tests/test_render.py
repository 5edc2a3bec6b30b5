"""Offscreen rendering: images, cameras, normals, colours, backends and bad input."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import real_file

from jambatalk.errors import InputError, MissingDependencyError
from jambatalk.render import (
    CAMERA_PRESETS,
    Camera,
    Renderer,
    colormap,
    error_colors,
    fit_camera,
    resolve_camera,
)
from jambatalk.render.backends import VertexNormals, create_backend
from jambatalk.render.shapes import dome_mesh

BG = np.array([255, 255, 255], dtype=np.uint8)


def _mask(img: np.ndarray, bg=BG) -> np.ndarray:
    return (img != bg).any(axis=-1)


@pytest.fixture(scope="module")
def flame():
    from jambatalk.mesh import load_mesh

    return load_mesh(real_file("FLAME_sample.ply"))


@pytest.fixture(scope="module")
def dome():
    return dome_mesh(1500)


@pytest.fixture(scope="module")
def flame_renderer(flame):
    with Renderer(flame[1], size=160, camera="flame") as r:
        yield r


def _open_jaw(vertices: np.ndarray, amount: float) -> np.ndarray:
    """Move the vertices below the mouth down, more the lower they are (a crude jaw opening)."""
    v = vertices.copy()
    lo, hi = v[:, 1].min(), v[:, 1].max()
    cut = lo + 0.4 * (hi - lo)
    weight = np.clip((cut - v[:, 1]) / (cut - lo), 0.0, 1.0)
    v[:, 1] -= amount * weight
    return v


def test_flame_render_covers_face(flame, flame_renderer):
    vertices, _ = flame
    img = flame_renderer.render(vertices)
    assert img.shape == (160, 160, 3) and img.dtype == np.uint8
    mask = _mask(img)
    assert 0.15 < mask.mean() < 0.7, mask.mean()
    assert not mask[0].any() and not mask[-1, :10].any() and not mask[:, 0].any()  # background around the head
    assert mask[80, 80]  # the face is in the middle
    face = img[mask].astype(float)
    assert face.std() > 5  # shaded, not one flat colour


def test_generated_mesh_fit_camera_centres_it(dome):
    vertices, faces = dome
    with Renderer(faces, size=(128, 96), camera="fit") as r:
        img = r.render(vertices)
    assert img.shape == (96, 128, 3)
    mask = _mask(img)
    rows, cols = np.nonzero(mask)
    # framed with a margin: touches no border, fills most of the height, centred
    assert rows.min() > 0 and rows.max() < 95 and cols.min() > 0 and cols.max() < 127
    assert rows.max() - rows.min() > 0.6 * 96
    assert abs((cols.min() + cols.max()) / 2 - 63.5) < 4 and abs((rows.min() + rows.max()) / 2 - 47.5) < 4


def test_silhouette_changes_when_the_jaw_moves(flame, flame_renderer):
    vertices, _ = flame
    closed = _mask(flame_renderer.render(vertices))
    opened = _mask(flame_renderer.render(_open_jaw(vertices, 0.03)))
    changed = closed != opened
    assert changed.sum() > 50
    rows_closed, rows_open = np.nonzero(closed)[0], np.nonzero(opened)[0]
    assert rows_open.max() > rows_closed.max()  # the chin/neck reaches lower in the image
    assert not changed[: 40].any()  # the top of the head did not move


def test_renders_are_byte_identical(flame, flame_renderer):
    vertices, faces = flame
    first = flame_renderer.render(vertices)
    flame_renderer.render(_open_jaw(vertices, 0.02))
    again = flame_renderer.render(vertices)
    assert first.tobytes() == again.tobytes()
    with Renderer(faces, size=160, camera="flame") as other:
        assert other.render(vertices).tobytes() == first.tobytes()


def test_interleaved_renderers_keep_their_own_context(dome, flame):
    (dv, df), (fv, ff) = dome, flame
    with Renderer(df, size=64) as a, Renderer(ff, size=96, camera="flame") as b:
        a1, b1 = a.render(dv), b.render(fv)
        a2, b2 = a.render(dv), b.render(fv)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)
    assert a1.shape == (64, 64, 3) and b1.shape == (96, 96, 3)


def test_vertex_colours_change_face_pixels_only(flame, flame_renderer):
    vertices, _ = flame
    plain = flame_renderer.render(vertices)
    red = np.zeros((len(vertices), 3), np.float32)
    red[:, 0] = 1.0
    coloured = flame_renderer.render(vertices, colors=red)
    mask = _mask(plain)
    assert np.array_equal(_mask(coloured), mask)
    assert np.array_equal(coloured[~mask], plain[~mask])
    face = coloured[mask].astype(int)
    assert (face[:, 0] > face[:, 1] + 40).mean() > 0.9  # red dominates on the face
    # uint8 colours are accepted as 0..255
    assert np.array_equal(flame_renderer.render(vertices, colors=(red * 255).astype(np.uint8)), coloured)


def test_background_option(dome):
    vertices, faces = dome
    with Renderer(faces, size=48, background=(0.0, 0.0, 0.0)) as r:
        img = r.render(vertices)
    assert (img[0, 0] == 0).all() and img[24, 24].max() > 60


def test_pixel_shading_matches_vertex_shading_silhouette(flame):
    vertices, faces = flame
    with Renderer(faces, size=96, camera="flame", shading="pixel") as r1, \
            Renderer(faces, size=96, camera="flame", shading="vertex") as r2:
        a, b = r1.render(vertices), r2.render(vertices)
    assert np.array_equal(_mask(a), _mask(b))
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 8


def test_vertex_normals_match_a_loop_reference(rng):
    vertices, faces = dome_mesh(60)
    vertices = vertices + 0.01 * rng.standard_normal(vertices.shape).astype(np.float32)
    expected = np.zeros_like(vertices, dtype=np.float64)
    for a, b, c in faces:
        n = np.cross(vertices[b] - vertices[a], vertices[c] - vertices[a])
        for i in (a, b, c):
            expected[i] += n
    used = np.linalg.norm(expected, axis=1) > 0
    expected[used] /= np.linalg.norm(expected[used], axis=1, keepdims=True)
    got = VertexNormals(faces, len(vertices))(vertices)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (np.linalg.norm(got[~used], axis=1) == 0).all()  # vertices in no face get no normal


def test_error_colors_scale_with_error():
    gt = np.zeros((2, 3, 3), np.float32)
    pred = gt.copy()
    pred[0, 1, 0] = 0.5
    pred[1, 2, 2] = 1.0
    colors = error_colors(pred, gt)
    assert colors.shape == (2, 3, 3)
    np.testing.assert_allclose(colors[1, 2], colormap(1.0))
    np.testing.assert_allclose(colors[0, 1], colormap(0.5))
    np.testing.assert_allclose(colors[0, 0], colormap(0.0))
    assert not np.allclose(colormap(0.0), colormap(1.0))
    # a fixed scale: an error of vmax or more saturates
    np.testing.assert_allclose(error_colors(pred, gt, vmax=0.5)[0, 1], colormap(1.0))
    # flat (T, 3V) input and a longer prediction (cut to the ground truth's length)
    longer = np.concatenate([pred, pred[:1]]).reshape(3, 9)
    np.testing.assert_allclose(error_colors(longer, gt), colors)
    with pytest.raises(InputError, match="vertices"):
        error_colors(np.zeros((2, 4, 3)), gt)


def test_camera_presets_and_fit():
    assert {"flame", "biwi", "fit"} <= set(CAMERA_PRESETS)
    assert resolve_camera("flame") is CAMERA_PRESETS["flame"]
    assert resolve_camera("VOCASET") is CAMERA_PRESETS["flame"]
    with pytest.raises(InputError, match="unknown camera preset 'nope'.*flame.*fit.*vocaset.*auto"):
        resolve_camera("nope")
    with pytest.raises(InputError, match="needs vertices"):
        resolve_camera("fit")
    vertices, _ = dome_mesh(500)
    for name in ("auto", "AUTO", None):  # auto (the CLI's default) is fit
        assert resolve_camera(name, vertices) == fit_camera(vertices)
    for aspect in (1.0, 2.0, 0.5):
        cam = fit_camera(vertices, aspect)
        homo = np.c_[vertices, np.ones(len(vertices))] @ (cam.projection_matrix(aspect) @ cam.view_matrix()).T
        ndc = homo[:, :3] / homo[:, 3:]
        assert np.abs(ndc).max() <= 1.0  # everything in view and inside the clipping range
        assert max(np.abs(ndc[:, 0]).max(), np.abs(ndc[:, 1]).max()) > 0.75  # and framed tightly
    with pytest.raises(InputError, match="same point"):
        Camera(eye=(0, 0, 0), target=(0, 0, 0))


def test_orthographic_camera(dome):
    vertices, faces = dome
    cam = Camera(eye=(0, 0, 1), target=(0, 0, 0), ortho_scale=0.15)
    with Renderer(faces, size=64, camera=cam) as r:
        mask = _mask(r.render(vertices))
    rows = np.nonzero(mask.any(axis=1))[0]
    # the dome is 0.22 high; the view 0.30: it covers about 0.22 / 0.30 of the rows
    assert abs((rows.max() - rows.min() + 1) / 64 - 0.22 / 0.30) < 0.06


def test_bad_input_messages(dome):
    vertices, faces = dome
    with pytest.raises(InputError, match="faces index vertex"):
        Renderer(faces, size=32, bounds_vertices=vertices[:100])
    with Renderer(faces, size=32) as r:
        with pytest.raises(InputError, match="faces index vertex .* only 100 vertices"):
            r.render(vertices[:100])
        bad = vertices.copy()
        bad[3, 1] = np.nan
        with pytest.raises(InputError, match="non-finite"):
            r.render(bad)
        with pytest.raises(InputError, match="colors have shape"):
            r.render(vertices, colors=np.zeros((5, 3)))
        with pytest.raises(InputError, match="output buffer"):
            r.render_into(vertices, np.empty((32, 32, 4), np.uint8))
    with pytest.raises(InputError, match="closed"):
        r.render(vertices)
    with pytest.raises(InputError, match="negative"):
        Renderer(-np.ones((2, 3), int), size=32)
    with pytest.raises(InputError, match="image size"):
        Renderer(faces, size=0)
    with pytest.raises(InputError, match="unknown render backend 'vulkan'"):
        Renderer(faces, size=32, backend="vulkan")


def test_missing_osmesa_names_the_system_package(monkeypatch):
    monkeypatch.setattr("jambatalk.render.backends._find_osmesa", lambda: None)
    with pytest.raises(MissingDependencyError, match="libosmesa6"):
        create_backend("osmesa", np.array([[0, 1, 2]]), 3, (8, 8))


def test_missing_moderngl_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "moderngl", None)
    with pytest.raises(MissingDependencyError, match=r"jambatalk\[render\]"):
        create_backend("moderngl", np.array([[0, 1, 2]]), 3, (8, 8))


def test_osmesa_matches_egl_when_installed(flame):
    from jambatalk.render.backends import _find_osmesa

    if not _find_osmesa():
        pytest.skip("libOSMesa is not installed (Debian: libosmesa6)")
    vertices, faces = flame
    with Renderer(faces, size=96, camera="flame", backend="osmesa") as a, \
            Renderer(faces, size=96, camera="flame", backend="egl") as b:
        assert a.backend_name == "moderngl-osmesa"
        np.testing.assert_array_equal(a.render(vertices), b.render(vertices))


def test_pyrender_backend_when_installed(flame):
    from jambatalk.render.backends import _import_pyrender

    try:
        _import_pyrender()
    except ImportError:
        pytest.skip("pyrender is not installed")
    vertices, faces = flame
    with Renderer(faces, size=96, camera="flame", backend="pyrender") as a, \
            Renderer(faces, size=96, camera="flame", backend="egl") as b:
        ma, mb = _mask(a.render(vertices)), _mask(b.render(vertices))
    assert (ma != mb).mean() < 0.02  # same camera, same silhouette


def test_dataset_spec_names_resolve_to_their_camera():
    try:
        from jambatalk.data import get_spec, list_specs

        specs = [get_spec(n) for n in list_specs()]
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"dataset spec registry unavailable ({exc})")
    named = [s for s in specs if s.name.lower() not in CAMERA_PRESETS and s.camera != "fit"]
    if not named:
        pytest.skip("no dataset spec with a fixed camera under a name of its own")
    for spec in named:  # a spec name stands for the camera preset the spec names
        assert resolve_camera(spec.name) is CAMERA_PRESETS[spec.camera]


def test_bfloat16_tensors_are_taken_as_vertices_and_errors():
    """Tensors from a bfloat16 model (autocast on a GPU) failed: numpy has no bfloat16."""
    import torch

    from jambatalk.render.renderer import check_sequence

    pred = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]).bfloat16()
    np.testing.assert_array_equal(check_sequence(pred), [[[0, 0, 0], [1, 0, 0]]])
    np.testing.assert_allclose(error_colors(pred, pred.float() + 0.25, vmax=0.5)[0, 0], colormap(np.sqrt(3) / 2))
