"""Dataset spec registry: splits, mask and topology resolution, real mask files."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from conftest import real_file

from jambatalk.data import (
    DatasetSpec,
    IndexSource,
    MeshSource,
    SplitDef,
    get_spec,
    list_specs,
    load_flame_masks,
    load_region_txt,
    register_spec,
)
from jambatalk.errors import DatasetError

VOCA_TRAIN = ["FaceTalk_170728_03272_TA", "FaceTalk_170904_00128_TA", "FaceTalk_170725_00137_TA",
              "FaceTalk_170915_00223_TA", "FaceTalk_170811_03274_TA", "FaceTalk_170913_03279_TA",
              "FaceTalk_170904_03276_TA", "FaceTalk_170912_03278_TA"]


def test_registry_lists_builtins_and_rejects_unknown_names():
    assert {"vocaset", "biwi", "biwi3895", "synthetic"} <= set(list_specs())
    with pytest.raises(DatasetError) as err:
        get_spec("vocasett")
    assert "vocasett" in str(err.value) and "vocaset" in err.value.fix and "biwi3895" in err.value.fix
    spec = get_spec("biwi")
    assert get_spec(spec) is spec


def test_register_spec_refuses_duplicates_unless_replaced():
    spec = DatasetSpec(name="test_registry_tmp", fps=10.0, vertex_count=4, camera="fit",
                       splits={"train": SplitDef(("a",), ("s1",))})
    register_spec(spec, replace=True)
    with pytest.raises(DatasetError, match="already registered"):
        register_spec(spec)
    again = DatasetSpec(name="test_registry_tmp", fps=20.0, vertex_count=4, camera="fit",
                        splits={"train": SplitDef(("a",), ("s1",))})
    register_spec(again, replace=True)
    assert get_spec("test_registry_tmp").fps == 20.0


def test_vocaset_facts_and_splits():
    spec = get_spec("vocaset")
    assert (spec.fps, spec.source_fps, spec.n_vertices, spec.frame_step, spec.camera) == (30.0, 60.0, 5023, 2, "flame")
    train = spec.expected_names("train")
    assert len(train) == 8 * 40
    assert train[0] == "FaceTalk_170728_03272_TA_sentence01" and train[39] == "FaceTalk_170728_03272_TA_sentence40"
    assert list(spec.train_subjects()) == VOCA_TRAIN
    val, test = spec.expected_names("val"), spec.expected_names("test")
    assert val == [f"{s}_sentence{i:02d}" for s in ("FaceTalk_170811_03275_TA", "FaceTalk_170908_03277_TA")
                   for i in range(21, 41)]
    assert test == [f"{s}_sentence{i:02d}" for s in ("FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA")
                    for i in range(21, 41)]
    assert spec.subject_index("FaceTalk_170912_03278_TA") == 7
    assert spec.subject_index("FaceTalk_170809_00138_TA") == -1
    with pytest.raises(DatasetError, match="no split 'dev'"):
        spec.expected_names("dev")


def test_biwi_facts_and_splits():
    spec = get_spec("biwi")
    assert (spec.fps, spec.n_vertices, spec.frame_step) == (25.0, 23370, 1)
    seen = ["F2", "F3", "F4", "M3", "M4", "M5"]
    assert spec.expected_names("train") == [f"{s}_e{i:02d}" for s in seen for i in range(1, 33)]
    assert spec.expected_names("val") == [f"{s}_e{i:02d}" for s in seen for i in range(33, 37)]
    assert spec.expected_names("test") == spec.expected_names("test_a") == [f"{s}_e{i:02d}" for s in seen
                                                                             for i in range(37, 41)]
    unseen = ["F1", "F5", "F6", "F7", "F8", "M1", "M2", "M6"]
    assert spec.expected_names("test_b") == [f"{s}_e{i:02d}" for s in unseen for i in range(37, 41)]
    assert len(spec.expected_names("test_a")) == 24 and len(spec.expected_names("test_b")) == 32
    b3895 = get_spec("biwi3895")
    assert b3895.n_vertices == 3895 and b3895.expected_names("train") == spec.expected_names("train")


def test_region_txt_and_flame_pickle_loaders(tmp_path):
    (tmp_path / "r.txt").write_text("4, 1, 4,\n 9,7")
    assert load_region_txt(tmp_path / "r.txt").tolist() == [4, 1, 4, 9, 7]
    (tmp_path / "bad.txt").write_text("1, two, 3")
    with pytest.raises(DatasetError, match="other than integers"):
        load_region_txt(tmp_path / "bad.txt")
    masks = {"lips": np.array([3, 1, 3]), "forehead": np.array([5, 2]), "eye_region": np.array([2, 7])}
    with open(tmp_path / "FLAME_masks.pkl", "wb") as f:
        pickle.dump(masks, f, protocol=2)
    loaded = load_flame_masks(tmp_path / "FLAME_masks.pkl")
    assert loaded["lips"].dtype == np.int64 and loaded["lips"].tolist() == [3, 1, 3]
    spec = get_spec("vocaset")
    # lips as given (duplicates kept), upper as the sorted union
    assert spec.lip_indices(tmp_path).tolist() == [3, 1, 3]
    assert spec.upper_indices(tmp_path).tolist() == [2, 5, 7]


def test_missing_mask_and_topology_name_the_file_and_readme(tmp_path):
    with pytest.raises(DatasetError) as err:
        get_spec("vocaset").lip_indices(tmp_path)
    assert "FLAME_masks.pkl" in str(err.value) and str(tmp_path) in str(err.value)
    assert "vocaset/README.md" in err.value.fix
    with pytest.raises(DatasetError) as err:
        get_spec("biwi").faces([tmp_path, tmp_path / "other"])
    assert "BIWI.ply" in str(err.value) and "BIWI/README.md" in err.value.fix
    with pytest.raises(DatasetError, match="does not exist"):
        get_spec("biwi").lip_indices(path=tmp_path / "nope.txt")
    with pytest.raises(DatasetError, match="defines no upper-face mask"):
        get_spec("biwi3895").upper_indices(tmp_path)
    with pytest.raises(DatasetError, match="no face list"):
        get_spec("biwi3895").faces(tmp_path)


def test_search_folders_are_tried_in_order_and_regions_subfolder(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    (second / "regions").mkdir(parents=True)
    first.mkdir()
    (second / "regions" / "lve.txt").write_text("1, 2, 3")
    (second / "fdd.txt").write_text("5, 6")
    spec = get_spec("biwi")
    assert spec.lip_indices([first, second]).tolist() == [1, 2, 3]
    assert spec.upper_indices([first, second]).tolist() == [5, 6]
    (first / "lve.txt").write_text("7")
    assert spec.lip_indices([first, second]).tolist() == [7]


def test_indices_past_the_mesh_are_rejected(tmp_path):
    (tmp_path / "lve.txt").write_text("0, 23370")
    with pytest.raises(DatasetError, match="past the mesh's 23370 vertices"):
        get_spec("biwi").lip_indices(tmp_path)


def test_index_source_validates_its_fields():
    with pytest.raises(DatasetError, match="format"):
        IndexSource(files=("a",), format="csv")
    with pytest.raises(DatasetError, match="combine"):
        IndexSource(files=("a",), combine="merge")
    with pytest.raises(DatasetError, match="fps"):
        DatasetSpec(name="x", fps=0.0, vertex_count=3, camera="fit", splits={"train": SplitDef(("a",), ("b",))})


def _touch_sequence(root, name):
    np.save(root / "vertices_npy" / f"{name}.npy", np.zeros((2, 6), np.float32))
    (root / "wav" / f"{name}.wav").write_bytes(b"")


def test_sequences_keep_spec_order_and_report_missing(tmp_path):
    spec = DatasetSpec(name="tiny", fps=25.0, vertex_count=2, camera="fit",
                       splits={"train": SplitDef(("B", "A"), ("s2", "s1"))})
    with pytest.raises(DatasetError, match="no vertices_npy"):
        spec.sequences("train", tmp_path)
    (tmp_path / "vertices_npy").mkdir()
    (tmp_path / "wav").mkdir()
    with pytest.raises(DatasetError, match="4 of 4 sequences"):
        spec.sequences("train", tmp_path)
    for name in ("A_s1", "B_s1", "A_s2"):
        _touch_sequence(tmp_path, name)
    (tmp_path / "wav" / "A_s2.wav").unlink()
    with pytest.warns(UserWarning, match=r"2 of 4 sequences .*B_s2 \(vertices and audio\).*A_s2 \(audio\)"):
        assert spec.sequences("train", tmp_path) == ["B_s1", "A_s1"]
    with pytest.raises(DatasetError, match="2 of 4"):
        spec.sequences("train", tmp_path, strict=True)


def test_split_file_specs_read_splits_json(tmp_path):
    spec = DatasetSpec(name="filesplit", fps=30.0, vertex_count=2, camera="fit", split_file="splits.json")
    (tmp_path / "vertices_npy").mkdir()
    (tmp_path / "wav").mkdir()
    with pytest.raises(DatasetError, match="splits.json"):
        spec.sequences("train", tmp_path)
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["spk1_a", "spk0_b", "spk1_c"], "val": ["spk9_d"]}))
    for name in ("spk1_a", "spk0_b", "spk1_c", "spk9_d"):
        _touch_sequence(tmp_path, name)
    assert spec.sequences("train", tmp_path) == ["spk1_a", "spk0_b", "spk1_c"]
    assert spec.train_subjects(tmp_path) == ("spk1", "spk0")
    assert spec.subject_index("spk9", tmp_path) == -1
    assert spec.split_names(tmp_path) == ["train", "val"]


def test_synthetic_spec_uses_the_procedural_head():
    head_mod = pytest.importorskip("jambatalk.synth.head")
    head = head_mod.default_head()
    spec = get_spec("synthetic")
    assert spec.fps == 30.0 and spec.split_file == "splits.json"
    assert spec.n_vertices == len(head.vertices)
    assert np.array_equal(spec.lip_indices(), np.asarray(head.regions["lips"], dtype=np.int64))
    assert np.array_equal(spec.upper_indices(), np.asarray(head.regions["upper_face"], dtype=np.int64))
    assert np.array_equal(spec.faces(), np.asarray(head.faces))



def test_synthetic_spec_reads_a_corpus_own_head(tmp_path):
    """A corpus folder with template.ply and regions.json (synth --template) overrides the procedural head:
    vertex count, faces and masks come from it, and masks past its vertices or unreadable JSON are refused."""
    trimesh = pytest.importorskip("trimesh")
    sphere = trimesh.creation.icosphere(subdivisions=2)  # 162 vertices
    sphere.export(tmp_path / "template.ply")
    (tmp_path / "regions.json").write_text(json.dumps({"lips": [3, 1, 2], "upper_face": [5, 6]}))
    spec = get_spec("synthetic")
    assert spec.vertex_count_at(tmp_path) == 162 != spec.n_vertices
    assert spec.vertex_count_at(tmp_path / "elsewhere") == spec.n_vertices  # no head there: the built-in one
    assert spec.lip_indices(tmp_path).tolist() == [3, 1, 2]
    assert spec.upper_indices(tmp_path).tolist() == [5, 6]
    assert np.array_equal(spec.faces(tmp_path), sphere.faces)
    (tmp_path / "regions.json").write_text(json.dumps({"lips": [3, 500]}))
    with pytest.raises(DatasetError, match="past the mesh's 162 vertices"):
        spec.lip_indices(tmp_path)
    (tmp_path / "regions.json").write_text("{not json")
    with pytest.raises(DatasetError, match="regions.json' is not readable JSON"):
        spec.lip_indices(tmp_path)


# --------------------------------------------------------------------------- real artefacts


def test_real_flame_topology_and_masks():
    spec = get_spec("vocaset")
    faces = spec.faces(path=real_file("FLAME_sample.ply"))
    assert faces.shape == (9976, 3) and faces.max() == 5022
    masks = real_file("FLAME_masks.pkl")
    lips = spec.lip_indices(path=masks)
    assert lips.shape == (254,) and len(np.unique(lips)) == 250
    with open(masks, "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    assert np.array_equal(lips, np.asarray(raw["lips"]))  # kept as given, order and duplicates
    upper = spec.upper_indices(path=masks)
    assert upper.shape == (827,)
    assert np.array_equal(upper, np.union1d(raw["forehead"], raw["eye_region"]))


def test_real_biwi_topology_and_regions():
    spec = get_spec("biwi")
    assert spec.faces(path=real_file("BIWI.ply")).shape == (46068, 3)
    lips = spec.lip_indices(path=real_file("BIWI_regions_lve.txt"))
    upper = spec.upper_indices(path=real_file("BIWI_regions_fdd.txt"))
    assert lips.shape == (4996,) and upper.shape == (7784,)
    with open(real_file("BIWI_lip.pkl"), "rb") as f:
        assert np.array_equal(np.sort(lips), np.sort(np.asarray(pickle.load(f))))


def test_real_biwi3895_templates_and_lips():
    spec = get_spec("biwi3895")
    templates = spec.templates(path=real_file("BIWI3895_templates.pkl"))
    assert sorted(templates) == sorted(["F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8",
                                        "M1", "M2", "M3", "M4", "M5", "M6"])
    assert all(v.shape == (3895, 3) and v.dtype == np.float32 for v in templates.values())
    lips = spec.lip_indices(path=real_file("BIWI3895_lip.pkl"))
    assert lips.shape == (758,) and lips.max() < 3895
    # the 23370-vertex list of SelfTalk is refused on this mesh instead of indexing garbage
    with pytest.raises(DatasetError, match="past the mesh's 3895 vertices"):
        spec.lip_indices(path=real_file("BIWI_lip.pkl"))
    with pytest.raises(DatasetError, match="3895"):
        get_spec("biwi").templates(path=real_file("BIWI3895_templates.pkl"))


def test_mesh_source_from_files_checks_vertex_count(tmp_path):
    from jambatalk.mesh import save_mesh

    save_mesh(tmp_path / "m.ply", np.random.default_rng(0).normal(size=(5, 3)), np.array([[0, 1, 2], [2, 3, 4]]))
    spec = DatasetSpec(name="m", fps=1.0, vertex_count=6, camera="fit", splits={"t": SplitDef(("a",), ("b",))},
                       faces_source=MeshSource(files=("m.ply",)))
    with pytest.raises(DatasetError, match="5 vertices, not 6"):
        spec.faces(tmp_path)
