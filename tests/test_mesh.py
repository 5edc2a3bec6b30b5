"""Template and mesh I/O."""

import pickle

import numpy as np
import pytest
from conftest import real_file

from jambatalk.errors import InputError
from jambatalk.mesh import load_mesh, load_template, save_mesh


def test_flame_sample_loads_with_vertex_order_kept():
    v, f = load_mesh(real_file("FLAME_sample.ply"))
    assert v.shape == (5023, 3) and f.shape == (9976, 3)
    # FLAME's convention: metres, y up, facing +z -> a head about 0.2 m tall
    assert 0.1 < np.ptp(v[:, 1]) < 0.4


def test_obj_ply_npy_pkl_and_array_templates(tmp_path, rng):
    v = rng.normal(size=(30, 3)).astype(np.float32)
    f = np.array([[0, 1, 2], [2, 3, 4], [5, 6, 7]])
    for suffix in (".obj", ".ply"):
        save_mesh(tmp_path / f"m{suffix}", v, f)
        tv, tf = load_template(tmp_path / f"m{suffix}")
        np.testing.assert_allclose(tv, v, atol=1e-6)
        assert tf.tolist() == f.tolist()
    np.save(tmp_path / "t.npy", v.reshape(-1))
    np.testing.assert_array_equal(load_template(tmp_path / "t.npy")[0], v)
    with open(tmp_path / "templates.pkl", "wb") as fh:
        pickle.dump({"S1": v.astype(np.float64)}, fh)
    np.testing.assert_array_equal(load_template(f"{tmp_path / 'templates.pkl'}:S1")[0], v)
    with pytest.raises(InputError, match="choose one of: S1"):
        load_template(f"{tmp_path / 'templates.pkl'}:S9")
    np.testing.assert_array_equal(load_template(v)[0], v)


def test_a_subject_is_read_from_its_templates_pkl_whatever_the_other_entries_hold(tmp_path, rng):
    """'templates.pkl:S1' checks S1 alone: a broken entry beside it neither blocks it nor is blamed for it."""
    v = rng.normal(size=(30, 3)).astype(np.float32)
    with open(tmp_path / "templates.pkl", "wb") as fh:
        pickle.dump({"S1": v, "S2": np.full((30, 3), np.nan), "S3": np.zeros((4, 2))}, fh)
    np.testing.assert_array_equal(load_template(f"{tmp_path / 'templates.pkl'}:S1")[0], v)
    with pytest.raises(InputError, match="template 'S2' in .*non-finite"):
        load_template(f"{tmp_path / 'templates.pkl'}:S2")


def test_a_pkl_without_a_subject_is_refused_saying_what_it_holds(tmp_path, rng):
    with open(tmp_path / "templates.pkl", "wb") as fh:
        pickle.dump({"S1": rng.normal(size=(30, 3)), "S2": rng.normal(size=(30, 3))}, fh)
    with pytest.raises(InputError, match=r"holds 2 entries \(S1, S2\), one template per subject.*:SUBJECT"):
        load_template(tmp_path / "templates.pkl")
    with open(tmp_path / "masks.pkl", "wb") as fh:  # as FLAME_masks.pkl: region -> vertex indices
        pickle.dump({"lips": np.arange(30), "face": np.arange(12)}, fh)
    with pytest.raises(InputError, match=r"holds vertex index lists \(face, lips\), as a mask or region file"):
        load_template(tmp_path / "masks.pkl")


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_a_mesh_file_of_vertices_without_faces_is_a_template(suffix, tmp_path, rng):
    """save_mesh writes a bare vertex array as a face-less file; it reads back as vertices with no faces (the
    model's own are used), and an empty file is still refused."""
    v = rng.normal(size=(12, 3)).astype(np.float32)
    save_mesh(tmp_path / f"cloud{suffix}", v, None)
    tv, tf = load_template(tmp_path / f"cloud{suffix}", n_vertices=12)
    np.testing.assert_allclose(tv, v, atol=1e-6)
    assert tf is None
    (tmp_path / f"empty{suffix}").write_text("")
    with pytest.raises(InputError, match="mesh"):
        load_template(tmp_path / f"empty{suffix}")
    with pytest.raises(InputError, match="is a folder"):
        load_template(tmp_path)


def test_bad_templates(tmp_path):
    with pytest.raises(InputError, match="non-finite"):
        load_template(np.full((4, 3), np.nan))
    with pytest.raises(InputError, match="model animates meshes of 5"):
        load_template(np.zeros((4, 3)), n_vertices=5)
    with pytest.raises(InputError, match="shape"):
        load_template(np.zeros((4, 2)))
    bad = tmp_path / "bad.ply"
    bad.write_text("definitely not a mesh")
    with pytest.raises(InputError, match="mesh"):
        load_template(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_template(tmp_path / "missing.obj")


def test_templates_pickled_under_numpy_1_load_without_a_deprecation_warning(tmp_path):
    """VOCASET's and BIWI's templates.pkl name numpy.core (numpy 1); numpy 2 reads them but warns from inside
    pickle, naming numpy internals. The loader keeps that warning from users."""
    import warnings

    _frombuffer = pytest.importorskip("numpy._core.numeric", reason="numpy 1 reads its own pickles")._frombuffer

    from jambatalk.mesh import load_templates_pkl

    template = np.arange(12, dtype=np.float64).reshape(4, 3)

    class Numpy1Array:  # pickles as numpy 1 wrote arrays: numpy.core.numeric._frombuffer(bytes, dtype, shape)
        def __reduce__(self):
            return _frombuffer, (template.tobytes(), template.dtype, template.shape, "C")

    data = pickle.dumps({"FaceTalk_1": Numpy1Array()}, protocol=3)  # protocol 3: module names end in newlines
    assert b"numpy._core.numeric\n" in data
    (tmp_path / "templates.pkl").write_bytes(data.replace(b"numpy._core.numeric\n", b"numpy.core.numeric\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_templates_pkl(tmp_path / "templates.pkl")
    np.testing.assert_array_equal(loaded["FaceTalk_1"], template)


def test_the_real_subjects_of_one_mesh_fit_each_other_as_templates():
    """The vertex-order checks against the spread of real faces: each of BIWI's 14 subjects (the 3895-vertex mesh)
    fits as a template of a model made on another subject's face; the first with two vertices swapped does not."""
    from jambatalk.data import load_pickle
    from jambatalk.mesh import check_template_fits

    templates = {k: np.asarray(v, dtype=np.float64) for k, v in load_pickle(real_file("BIWI3895_templates.pkl")).items()}
    names = sorted(templates)
    for model in names[:3]:
        for other in names:
            check_template_fits(templates[other], None, templates[model], None, other)
    swapped = templates[names[0]].copy()
    swapped[[10, 2000]] = swapped[[2000, 10]]
    with pytest.raises(InputError, match="has 2 vertices far from their neighbours"):
        check_template_fits(swapped, None, templates[names[1]], None)
