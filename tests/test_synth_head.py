"""The procedural head: geometry, topology, regions and weights; Head.from_template on FLAME."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import real_file

from jambatalk.errors import InputError
from jambatalk.synth import head as head_mod
from jambatalk.synth.head import REQUIRED_REGIONS, WEIGHT_NAMES, Head, default_head
from jambatalk.synth.motion import PARAM_NAMES, deform


def test_head_size_and_flame_convention():
    h = default_head()
    assert 2000 <= h.n_vertices <= 4000
    assert h.vertices.dtype == np.float32 and h.faces.dtype == np.int64
    lo, hi = h.vertices.min(0), h.vertices.max(0)
    assert 0.2 <= hi[1] - lo[1] <= 0.35  # metres, y up
    assert np.abs(h.vertices.mean(0)).max() < 1e-3  # centred like FLAME's template
    nose_tip = h.vertices[np.argmax(h.vertices[:, 2])]  # the face looks along +z
    assert abs(nose_tip[0]) < 0.005
    mouth_y = h.vertices[h.regions["lips"], 1].mean()
    eyes_y = h.vertices[h.regions["eyelids"], 1].mean()
    assert mouth_y < nose_tip[1] < eyes_y


def test_mesh_is_valid_and_consistently_wound():
    trimesh = pytest.importorskip("trimesh")
    h = default_head()
    f = h.faces
    assert f.min() >= 0 and f.max() < h.n_vertices
    assert np.all((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2]))
    mesh = trimesh.Trimesh(h.vertices, f, process=False)
    assert mesh.area_faces.min() > 0
    assert mesh.is_winding_consistent
    assert mesh.volume > 0  # outward normals
    used = np.zeros(h.n_vertices, bool)
    used[f.ravel()] = True
    assert used.all()


def test_regions_and_weights():
    h = default_head()
    for name in REQUIRED_REGIONS:
        idx = h.regions[name]
        assert idx.dtype == np.int64 and idx.size > 0 and idx.min() >= 0 and idx.max() < h.n_vertices
    assert not np.intersect1d(h.regions["upper_lip"], h.regions["lower_lip"]).size
    assert np.mean(h.vertices[h.regions["upper_lip"], 1]) > np.mean(h.vertices[h.regions["lower_lip"], 1])
    for name in WEIGHT_NAMES:
        w = h.weights[name]
        assert w.shape == (h.n_vertices,) and w.min() >= 0 and w.max() <= 1
    # the slit: upper and lower edges coincide at rest, the jaw moves only the lower one
    up, low = h.regions["mouth_upper_edge"], h.regions["mouth_lower_edge"]
    assert len(up) == len(low) and np.allclose(h.vertices[up], h.vertices[low])
    assert np.all(h.weights["jaw"][low] > 0.99) and np.all(h.weights["jaw"][up] < 0.01)
    assert h.weights["jaw"][h.regions["upper_face"]].max() == 0


def test_deterministic_and_read_only():
    a, b = head_mod._build(), head_mod._build()
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    assert default_head() is default_head()
    with pytest.raises(ValueError):
        default_head().vertices[0, 0] = 1.0


def test_from_template_rejects_missing_lips():
    h = default_head()
    with pytest.raises(InputError, match="lips"):
        Head.from_template(h.vertices, h.faces, {"forehead": [0, 1, 2]})
    with pytest.raises(InputError, match="indexes past"):
        Head.from_template(h.vertices, h.faces, {"lips": [0, 1, h.n_vertices + 5]})


def test_from_template_refuses_a_lip_region_made_for_another_mesh():
    """FLAME's lip indices are all in range on the bigger BIWI mesh, but land all over it: refused, where the BIWI
    mesh's own lip region (its whole mouth area) is taken."""
    from jambatalk.mesh import load_mesh
    from jambatalk.pickles import load_data

    vertices, faces = load_mesh(real_file("BIWI.ply"))
    with open(real_file("FLAME_masks.pkl"), "rb") as f:
        flame = load_data(f)
    assert flame["lips"].max() < len(vertices)
    with pytest.raises(InputError, match=r"'lips' region is scattered .* median 2\d% .*made for another mesh"):
        Head.from_template(vertices, faces, flame)
    with open(real_file("BIWI_lip.pkl"), "rb") as f:
        biwi_lips = np.asarray(load_data(f))
    assert len(Head.from_template(vertices, faces, {"lips": biwi_lips}).regions["lower_lip"])


def test_from_template_flame():
    from jambatalk.mesh import load_mesh

    vertices, faces = load_mesh(real_file("FLAME_sample.ply"))
    with open(real_file("FLAME_masks.pkl"), "rb") as f:
        masks = pickle.load(f, encoding="latin1")
    h = Head.from_template(vertices, faces, masks)
    assert set(REQUIRED_REGIONS) <= set(h.regions)
    assert len(h.regions["upper_face"]) == len(np.unique(np.concatenate([masks["forehead"], masks["eye_region"]])))
    params = np.zeros((2, len(PARAM_NAMES)), np.float32)
    params[1, PARAM_NAMES.index("jaw")] = 0.8
    out = deform(h, params)
    assert np.array_equal(out[0], h.vertices)
    moved = np.linalg.norm(out[1] - out[0], axis=-1)
    assert moved[h.regions["lower_lip"]].mean() > 5e-3  # the jaw opens the mouth
    assert moved[h.regions["upper_lip"]].mean() < 0.3 * moved[h.regions["lower_lip"]].mean()
    assert moved[masks["forehead"]].max() == 0
