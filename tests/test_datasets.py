from pathlib import Path

import numpy as np
import pytest
import rdkit
from rdkit import Chem

from privkernel.errors import BenchError
from privkernel.registry import DATASETS
from targets import datasets as ds
from targets import featurizers as fz


def load(name, **params):
    """Load a dataset the way the pipeline does: parameters validated (defaults filled in) by the registry."""
    component = DATASETS.get(name)
    kwargs = component.validate(params)
    return component.obj(**kwargs), kwargs


def tag(name, tag_name, **params):
    component = DATASETS.get(name)
    value = component.tags[tag_name]
    return value(component.validate(params)) if callable(value) else value


def test_digits_is_an_image_dataset_of_ten_balanced_classes():
    data, _ = load("digits")
    assert data.X.shape == (1797, 1, 8, 8) and data.X.dtype == np.float32
    assert data.X.min() == 0.0 and data.X.max() == 1.0
    assert data.y.dtype == np.int64 and data.n_classes == 10 and data.task == "classification"
    counts = np.bincount(data.y)
    assert len(counts) == 10 and counts.min() >= 170 and counts.max() <= 185
    assert tag("digits", "inputs") == "image"


def test_diabetes_is_a_standardized_regression():
    data, _ = load("diabetes")
    assert data.X.shape == (442, 10) and data.X.dtype == np.float32
    assert data.y.dtype == np.float32 and data.task == "regression" and data.n_classes == 1
    np.testing.assert_allclose(data.X.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.X.std(0), 1, atol=1e-4)
    assert abs(data.y.mean()) < 1e-5 and abs(data.y.std() - 1) < 1e-4
    assert tag("diabetes", "task") == "regression"


def test_a_regression_dataset_has_one_output_and_rows_must_match():
    with pytest.raises(ValueError, match="n_classes=1"):
        ds.Dataset(np.zeros((3, 2), np.float32), np.zeros(3, np.float32), "regression", 2)
    with pytest.raises(ValueError, match="share their first dimension"):
        ds.Dataset({"a": np.zeros((3, 2)), "b": np.zeros((4,))}, np.zeros(3, np.int64), "classification", 2)


# --- chembl_activity ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chembl():
    return load("chembl_activity")[0]


@pytest.fixture(scope="module")
def chembl_table():
    return ds.chembl_table()


def test_chembl_files_are_found_inside_the_installed_rdkit():
    smi, act = ds.chembl_files()
    root = Path(rdkit.__file__).resolve().parent
    assert smi.resolve().is_relative_to(root) and act.resolve().is_relative_to(root)
    assert smi.name == "CHEMBL2321810.smi" and act.name == "CHEMBL2321810_act.csv"


def test_chembl_joins_about_a_thousand_molecules_by_id(chembl_table):
    smiles, pic50, ids, note = chembl_table
    assert 1000 <= len(smiles) == len(pic50) == len(ids) <= 1030
    assert "joined 1017 molecules by id" in note
    assert all(Chem.MolFromSmiles(s) is not None for s in smiles[:50])
    assert 4 < pic50.min() and pic50.max() < 10
    # the join is by id, not by line: every activity belongs to its own compound
    activity = dict(zip(ids, pic50, strict=True))
    assert activity["1520012"] == pytest.approx(5.48) and activity["1520009"] == pytest.approx(5.50)


def test_chembl_default_classes_are_the_documented_minority(chembl, chembl_table):
    _, pic50, _, _ = chembl_table
    component = DATASETS.get("chembl_activity")
    threshold = component.validate({})["threshold"]
    assert threshold == ds.CHEMBL_DEFAULT_THRESHOLD
    assert chembl.X.shape == (len(pic50), 2048) and chembl.X.dtype == np.float32
    assert set(np.unique(chembl.X)) == {0.0, 1.0}
    assert chembl.y.dtype == np.int64 and chembl.n_classes == 2
    np.testing.assert_array_equal(chembl.y, pic50 >= threshold)
    counts = np.bincount(chembl.y)
    assert counts[1] < counts[0] and 0.15 <= chembl.y.mean() <= 0.30  # the actives (class 1) are the minority
    share = f"{100 * chembl.y.mean():.1f} %"
    assert f"{counts[1]} actives ({share}" in component.description  # the description tells the truth


def test_chembl_threshold_regression_and_bad_threshold(chembl_table):
    _, pic50, _, _ = chembl_table
    data, _ = load("chembl_activity", threshold=6.0, n_bits=64)
    assert data.X.shape == (len(pic50), 64) and data.y.mean() == pytest.approx((pic50 >= 6.0).mean())
    reg, _ = load("chembl_activity", task="regression", n_bits=64)
    assert reg.task == "regression" and reg.n_classes == 1 and reg.y.dtype == np.float32
    np.testing.assert_allclose(reg.y, pic50, rtol=1e-6)
    assert tag("chembl_activity", "task", task="regression") == "regression"
    with pytest.raises(BenchError, match=r"threshold=12 puts every molecule in one class .*4\.27–9\.22"):
        load("chembl_activity", threshold=12.0)


def test_chembl_fingerprint_options(chembl):
    counted, _ = load("chembl_activity", features="ecfp6", n_bits=1024, counts=True)
    assert counted.X.shape == (len(chembl.y), 1024) and counted.X.max() > 1
    path, _ = load("chembl_activity", features="rdkit_path", n_bits=512)
    assert path.X.shape == (len(chembl.y), 512)
    np.testing.assert_array_equal(path.y, chembl.y)
    maccs, _ = load("chembl_activity", features="maccs")
    assert maccs.X.shape == (len(chembl.y), 167) and maccs.X[:, 0].sum() == 0


def test_chembl_graph_features(chembl_table):
    smiles, _, _, _ = chembl_table
    data, _ = load("chembl_activity", features="graph")
    assert tag("chembl_activity", "inputs", features="graph") == "graph"
    assert tag("chembl_activity", "inputs") == "vector"
    atoms, bonds, mask = data.X["atoms"], data.X["bonds"], data.X["mask"]
    n, a = mask.shape
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    e = 2 * max(m.GetNumBonds() for m in mols)
    assert n == len(smiles) and atoms.shape == (n, a, fz.ATOM_FEATURES) and bonds.shape == (n, e, 3)
    heavy = np.array([m.GetNumAtoms() for m in mols])
    np.testing.assert_array_equal(mask.sum(1), heavy)
    np.testing.assert_array_equal(data.X["bond_mask"].sum(1), [2 * m.GetNumBonds() for m in mols])
    assert a == heavy.max()
    assert (atoms.sum(-1)[mask == 0] == 0).all()


# --- synthetic_purchase -----------------------------------------------------------------------------------------


def test_synthetic_purchase_shape_balance_and_seed():
    data, params = load("synthetic_purchase")
    assert (params["n_records"], params["n_features"], params["n_classes"]) == (2000, 600, 100)
    assert data.X.shape == (2000, 600) and data.X.dtype == np.float32 and set(np.unique(data.X)) == {0.0, 1.0}
    assert data.y.dtype == np.int64 and data.n_classes == 100
    np.testing.assert_array_equal(np.bincount(data.y, minlength=100), 20)
    again, _ = load("synthetic_purchase")
    other, _ = load("synthetic_purchase", seed=1)
    np.testing.assert_array_equal(data.X, again.X)
    assert not np.array_equal(data.X, other.X)
    small, _ = load("synthetic_purchase", n_records=105, n_features=20, n_classes=10)
    assert small.X.shape == (105, 20) and np.ptp(np.bincount(small.y)) <= 1
    assert "SYNTHETIC" in DATASETS.get("synthetic_purchase").description
    with pytest.raises(BenchError, match="n_records=5 is smaller than n_classes=10"):
        load("synthetic_purchase", n_records=5, n_classes=10)


def test_synthetic_purchase_records_resemble_their_class_prototype():
    data, _ = load("synthetic_purchase", flip=0.1)
    centroids = np.stack([data.X[data.y == k].mean(0) for k in range(100)])
    nearest = (data.X @ centroids.T - 0.5 * (centroids**2).sum(1)).argmax(1)  # nearest centroid, Euclidean
    assert (nearest == data.y).mean() > 0.99


# --- csv --------------------------------------------------------------------------------------------------------


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_numeric_columns_are_features_and_labels_become_classes(tmp_path):
    path = write(tmp_path, "id,a,b,label\nx1,1,10,cat\nx2,2,20,dog\nx3,3,35,cat\nx4,4,41,bird\n")
    with pytest.warns(UserWarning, match="skipped non-numeric columns 'id'"):
        data, _ = load("csv", path=path)
    assert data.X.shape == (4, 2) and data.X.dtype == np.float32
    np.testing.assert_allclose(data.X.mean(0), 0, atol=1e-6)
    np.testing.assert_array_equal(data.y, [1, 2, 1, 0])  # bird, cat, dog in sorted order
    assert data.n_classes == 3 and tag("csv", "inputs", path=path) == "vector"
    numeric = write(tmp_path, "f,y\n1,10\n2,2\n3,10\n", "numeric.csv")
    data, _ = load("csv", path=numeric, label_col="y")
    np.testing.assert_array_equal(data.y, [1, 0, 1])  # 2 < 10 as numbers, not as text
    reg, _ = load("csv", path=numeric, label_col="y", task="regression")
    assert reg.y.dtype == np.float32 and reg.y.tolist() == [10, 2, 10] and reg.n_classes == 1


MOLECULE_CSV = "smiles,active\nCCO,1\nc1ccccc1,0\nC1CC,1\nCC(=O)O,0\nCCN,1\n"


def test_csv_smiles_are_featurized(tmp_path):
    path = write(tmp_path, MOLECULE_CSV.replace("C1CC", "C1CC1"))
    data, _ = load("csv", path=path, label_col="active", smiles_col="smiles", features="ecfp4", n_bits=256)
    np.testing.assert_array_equal(data.X, fz.ecfp(["CCO", "c1ccccc1", "C1CC1", "CC(=O)O", "CCN"], 2, 256))
    np.testing.assert_array_equal(data.y, [1, 0, 1, 0, 1])
    graph, _ = load("csv", path=path, label_col="active", smiles_col="smiles", features="graph")
    assert set(graph.X) == {"atoms", "mask", "bonds", "bond_mask"} and len(graph.X["mask"]) == 5
    assert tag("csv", "inputs", path=path, smiles_col="smiles", features="graph") == "graph"


def test_csv_bad_smiles_names_the_line_or_is_dropped_and_counted(tmp_path):
    path = write(tmp_path, MOLECULE_CSV)
    with pytest.raises(BenchError) as err:
        load("csv", path=path, label_col="active", smiles_col="smiles")
    assert "line 4: 'C1CC'" in str(err.value) and "drop_invalid" in str(err.value)
    with pytest.warns(UserWarning, match="dropped 1 of 5 rows with invalid SMILES"):
        data, _ = load("csv", path=path, label_col="active", smiles_col="smiles", drop_invalid=True)
    assert len(data.y) == 4 and data.X.shape == (4, 2048)
    np.testing.assert_array_equal(data.y, [1, 0, 0, 1])  # labels stay aligned with their molecules
    assert any("dropped 1 of 5 rows" in note for note in data.notes)


def test_csv_missing_column_names_it_and_the_available_ones(tmp_path):
    path = write(tmp_path, MOLECULE_CSV)
    with pytest.raises(BenchError, match=r"no column 'activity'; the file's columns are: 'smiles', 'active'"):
        load("csv", path=path, label_col="activity", smiles_col="smiles")
    with pytest.raises(BenchError, match=r"no column 'SMILES'.*set smiles_col"):
        load("csv", path=path, label_col="active", smiles_col="SMILES")


def test_csv_missing_values_bad_targets_and_malformed_files(tmp_path):
    path = write(tmp_path, "a,b,label\n1,2,x\n3,,y\n5,6,\n7,8,z\n")
    with pytest.raises(BenchError, match=r"1 of 4 rows have a missing 'label' — line 4: label is empty"):
        load("csv", path=path)
    with pytest.warns(UserWarning) as record:
        data, _ = load("csv", path=path, drop_invalid=True)
    assert len(data.y) == 2 and any("line 3: missing 'b'" in str(w.message) for w in record)
    regression = write(tmp_path, "a,y\n1,0.5\n2,high\n", "reg.csv")
    with pytest.raises(BenchError, match=r"non-numeric 'y' — line 3: y='high'"):
        load("csv", path=regression, label_col="y", task="regression")
    malformed = write(tmp_path, "a,label\n1,x\n2,y,extra\n", "bad.csv")
    with pytest.raises(BenchError, match="malformed CSV"):
        load("csv", path=malformed)
    with pytest.raises(BenchError, match="the file is empty"):
        load("csv", path=write(tmp_path, "", "empty.csv"))
    with pytest.raises(BenchError, match="1 class"):
        load("csv", path=write(tmp_path, "a,label\n1,x\n2,x\n", "one.csv"))


def test_file_loaders_need_an_existing_path(tmp_path):
    for name in ("csv", "npz"):
        with pytest.raises(BenchError, match="parameter 'path' is required"):
            load(name)
        with pytest.raises(BenchError, match="does not exist"):
            load(name, path=str(tmp_path / f"nothing.{name}"))


# --- npz --------------------------------------------------------------------------------------------------------


def test_npz_loads_numeric_arrays(tmp_path):
    path = tmp_path / "d.npz"
    X = np.arange(24, dtype=np.float64).reshape(6, 4)
    np.savez(path, X=X, y=np.array([3, 5, 3, 5, 9, 9]))
    data, _ = load("npz", path=str(path))
    assert data.X.dtype == np.float32 and data.X.shape == (6, 4) and data.n_classes == 3
    np.testing.assert_array_equal(data.y, [0, 1, 0, 1, 2, 2])
    reg, _ = load("npz", path=str(path), task="regression")
    assert reg.y.dtype == np.float32 and reg.y.tolist() == [3, 5, 3, 5, 9, 9]
    images = tmp_path / "img.npz"
    np.savez(images, X=np.zeros((4, 1, 3, 3)), y=np.array([0, 1, 0, 1]))
    assert load("npz", path=str(images), inputs="image")[0].X.shape == (4, 1, 3, 3)
    with pytest.raises(BenchError, match="needs 2 dimensions"):
        load("npz", path=str(images))


def test_npz_refuses_object_arrays_and_names_missing_keys(tmp_path):
    objects = tmp_path / "objects.npz"
    np.savez(objects, X=np.array([[1, "a"], [None, 2]], dtype=object), y=np.array([0, 1]))
    with pytest.raises(BenchError, match="'X' is an object \\(pickled\\) array, refused"):
        load("npz", path=str(objects))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, features=np.zeros((2, 2)), y=np.array([0, 1]))
    with pytest.raises(BenchError, match="no array 'X'; the archive holds 'features', 'y'"):
        load("npz", path=str(wrong))
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94.")  # a pickle, not an archive
    with pytest.raises(BenchError, match="not a readable .npz archive"):
        load("npz", path=str(pickled))
