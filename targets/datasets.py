"""Datasets that ship with the installed packages, a seeded synthetic one, and loaders for the user's own files.

Nothing is downloaded at run time: scikit-learn's bundled files (``breast_cancer``, ``digits``, ``diabetes``),
the ChEMBL assay that RDKit's wheel ships (``chembl_activity``), seeded generators (``synthetic_purchase``,
``synthetic_volumes``), and the user's CSV (``csv``) or NumPy archive (``npz``).

Every dataset is a registered function returning a :class:`Dataset`. Its tags say what it holds: ``task``
("classification" or "regression") and ``inputs`` ("vector", "image" with ``X[N, C, H, W]``, "volume" with
``X[N, D, H, W]`` or ``X[N, C, D, H, W]``, or "graph" with ``X`` a dict of arrays); where they depend on the
parameters the tag is a callable of the validated parameters. Bad input raises :class:`~privkernel.errors.BenchError`
naming the problem and the fix. Rows are never dropped silently: loaders with ``drop_invalid`` drop bad rows only
when asked, and then report how many (a warning, the log, and :attr:`Dataset.notes`).
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privkernel.errors import BenchError
from privkernel.registry import DATASETS, Param
from targets.featurizers import FEATURIZERS, featurize

log = logging.getLogger(__name__)

TASKS = ("classification", "regression")

Features = np.ndarray | dict[str, np.ndarray]


@dataclass(frozen=True)
class Dataset:
    """Features and labels of a whole dataset, before the pool/test split.

    ``X`` is float32 with one row per record, or for graphs a dict of float32 arrays sharing their first
    dimension. ``y`` holds class indices (int64) for classification, or float32 targets for regression (then
    ``n_classes`` is 1). ``notes`` records provenance worth reporting (rows joined, rows dropped).
    """

    X: Features
    y: np.ndarray
    task: str
    n_classes: int
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        rows = {k: len(v) for k, v in self.X.items()} if isinstance(self.X, Mapping) else {"X": len(self.X)}
        if len(set(rows.values())) > 1:
            raise ValueError(f"the arrays of X do not share their first dimension: {rows}")
        n = next(iter(rows.values()))
        if n != len(self.y):
            raise ValueError(f"X has {n} rows but y has {len(self.y)}")
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {TASKS}")
        if self.task == "regression" and self.n_classes != 1:
            raise ValueError(f"a regression dataset has n_classes=1, not {self.n_classes}")

    def __len__(self) -> int:
        return len(self.y)


def standardize(X: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column (constant columns are left at zero)."""
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0)
    return ((X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def _shown(items: Sequence[str], limit: int = 5) -> str:
    return "; ".join(items[:limit]) + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def _notice(text: str) -> None:
    """Report a change to the data (rows dropped) through the log and a warning."""
    log.warning(text)
    warnings.warn(text, stacklevel=3)


def task_tag(params: Mapping[str, Any]) -> str:
    return params["task"]


def molecule_params(default_features: str = "ecfp4") -> list[Param]:
    return [
        Param("features", str, default_features, "molecular featurization", choices=tuple(FEATURIZERS)),
        Param("n_bits", int, 2048, "fingerprint length (ECFP, RDKit path)", low=16, high=65536),
        Param("counts", bool, False, "count fingerprints (occurrences) instead of bits (ECFP, RDKit path)"),
    ]


# --- scikit-learn's bundled datasets -----------------------------------------------------------------------------


@DATASETS.register(
    "breast_cancer",
    description="Wisconsin diagnostic breast cancer (569 tumours, 30 features, 2 classes; "
    "scikit-learn's bundled file).",
    task="classification",
    inputs="vector",
    n_classes=2,
    size=569,
)
def breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return Dataset(standardize(X), y.astype(np.int64), task="classification", n_classes=2)


@DATASETS.register(
    "digits",
    description="Handwritten digits (1,797 8×8 grey images as X[N, 1, 8, 8] in [0, 1], 10 balanced classes; "
    "scikit-learn's bundled file).",
    task="classification",
    inputs="image",
    n_classes=10,
    size=1797,
)
def digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = (bunch.images[:, None, :, :] / 16.0).astype(np.float32)  # pixel values are 0..16
    return Dataset(X, bunch.target.astype(np.int64), task="classification", n_classes=10)


@DATASETS.register(
    "diabetes",
    description="Diabetes progression (442 patients, 10 standardized features; target: disease progression after "
    "one year, standardized; regression; scikit-learn's bundled file).",
    task="regression",
    inputs="vector",
    n_classes=1,
    size=442,
)
def diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True, scaled=False)
    y_std = standardize(y[:, None])[:, 0]
    return Dataset(standardize(X), y_std.astype(np.float32), task="regression", n_classes=1)


# --- ChEMBL assay shipped with RDKit -----------------------------------------------------------------------------

CHEMBL_ASSAY = "CHEMBL2321810"
CHEMBL_DEFAULT_THRESHOLD = 7.5


def chembl_files() -> tuple[Path, Path]:
    """The SMILES and activity files of the ChEMBL assay in the installed RDKit (``Contrib/FreeWilson/data``)."""
    try:
        from rdkit import RDConfig

        contrib = Path(RDConfig.RDContribDir)
    except ImportError as err:
        raise BenchError(f"chembl_activity needs RDKit ({err}); install it with `pip install rdkit`") from None
    folder = contrib / "FreeWilson" / "data"
    smi, act = folder / f"{CHEMBL_ASSAY}.smi", folder / f"{CHEMBL_ASSAY}_act.csv"
    for path in (smi, act):
        if not path.is_file():
            raise BenchError(
                f"chembl_activity: {path} is missing from the installed RDKit; install the full RDKit wheel "
                "(`pip install rdkit`), whose Contrib folder ships this assay"
            )
    return smi, act


def chembl_table() -> tuple[list[str], np.ndarray, list[str], str]:
    """SMILES, pIC50, compound ids and a note on the join of the two files, joined by compound id."""
    import pandas as pd

    smi_path, act_path = chembl_files()
    smiles = pd.read_csv(smi_path, sep=r"\s+", header=None, names=["smiles", "id"], dtype=str)
    activity = pd.read_csv(act_path, dtype={"Name": str})
    if smiles["id"].duplicated().any() or activity["Name"].duplicated().any():
        raise BenchError(f"chembl_activity: duplicate compound ids in {smi_path} or {act_path}; reinstall RDKit")
    joined = smiles.merge(activity, left_on="id", right_on="Name", how="inner", validate="one_to_one")
    note = (
        f"{CHEMBL_ASSAY}: joined {len(joined)} molecules by id ({len(smiles)} SMILES in {smi_path.name}, "
        f"{len(activity)} activities in {act_path.name})"
    )
    if len(joined) < max(len(smiles), len(activity)):
        _notice(note + "; the unmatched ids are left out")
    else:
        log.info(note)
    return joined["smiles"].tolist(), joined["Act"].to_numpy(np.float64), joined["id"].tolist(), note


def chembl_threshold_problem(
    params: Mapping[str, Any], *, task: str | None = None, n_classes: int | None = None
) -> str | None:
    """Grid-load check (the ``check`` tag): a classification threshold must leave molecules on both sides.
    ``task`` and ``n_classes`` (the dataset's own) are not needed."""
    if params["task"] != "classification":
        return None
    _, pic50, _, _ = chembl_table()
    if not pic50.min() < params["threshold"] <= pic50.max():
        return (f"threshold={params['threshold']:g} puts every molecule in one class (pIC50 ranges "
                f"{pic50.min():.2f}–{pic50.max():.2f}); choose a threshold inside that range, e.g. the default "
                f"{CHEMBL_DEFAULT_THRESHOLD}")
    return None


@DATASETS.register(
    "chembl_activity",
    description=(
        f"ChEMBL assay {CHEMBL_ASSAY} as shipped in RDKit's wheel (Contrib/FreeWilson/data): 1,017 molecules "
        "joined by id with their pIC50 (4.27–9.22, median 6.44). classification: active = pIC50 ≥ threshold; "
        f"the default {CHEMBL_DEFAULT_THRESHOLD} gives 232 actives (22.8 %, the minority class 1) and 785 inactives "
        "(77.2 %). regression: y = pIC50 (float32, not standardized). features: ECFP4/6, MACCS, RDKit path "
        "fingerprints or a graph."
    ),
    params=[
        Param("task", str, "classification", "classification (active vs inactive) or regression (pIC50)",
              choices=TASKS),
        Param("threshold", float, CHEMBL_DEFAULT_THRESHOLD, "active = pIC50 ≥ threshold (classification)",
              low=0.0, high=14.0),
        *molecule_params(),
    ],
    task=task_tag,
    inputs=lambda p: FEATURIZERS[p["features"]].inputs,
    layout=lambda p: FEATURIZERS[p["features"]].version,
    n_classes=lambda p: 2 if p["task"] == "classification" else 1,
    check=chembl_threshold_problem,
    size=1017,
)
def chembl_activity(
    task: str = "classification",
    threshold: float = CHEMBL_DEFAULT_THRESHOLD,
    features: str = "ecfp4",
    n_bits: int = 2048,
    counts: bool = False,
) -> Dataset:
    smiles, pic50, ids, note = chembl_table()
    y = (pic50 >= threshold).astype(np.int64)
    if task == "classification" and y.min() == y.max():
        raise BenchError(
            f"chembl_activity: threshold={threshold:g} puts every molecule in one class (pIC50 ranges "
            f"{pic50.min():.2f}–{pic50.max():.2f}); choose a threshold inside that range, e.g. the default "
            f"{CHEMBL_DEFAULT_THRESHOLD}"
        )
    X, _ = featurize(smiles, features, n_bits, counts, row_names=[f"id {i}" for i in ids], source=CHEMBL_ASSAY)
    if task == "regression":
        return Dataset(X, pic50.astype(np.float32), task="regression", n_classes=1, notes=(note,))
    return Dataset(X, y, task="classification", n_classes=2, notes=(note,))


# --- synthetic ------------------------------------------------------------------------------------------------

SYNTHETIC_DENSITY = 0.2


@DATASETS.register(
    "synthetic_purchase",
    description=(
        "SYNTHETIC stand-in shaped like Purchase-100 (binary features, many classes); not real purchase data. "
        f"Each class has a random binary prototype (bits on with probability {SYNTHETIC_DENSITY}); a record is its "
        "class's prototype with every bit flipped independently with probability `flip`. Classes are balanced "
        "(sizes differ by at most one). At the defaults a logistic regression trained on half the records fits "
        "them perfectly and reaches about 75 % test accuracy."
    ),
    params=[
        Param("n_records", int, 2000, "number of records", low=2, high=10_000_000),
        Param("n_features", int, 600, "number of binary features", low=1, high=1_000_000),
        Param("n_classes", int, 100, "number of classes", low=2, high=100_000),
        Param("flip", float, 0.36, "probability that a record's bit differs from its class prototype",
              low=0.0, high=0.5),
        Param("seed", int, 0, "seed of the generator (prototypes, labels and flips)", low=0),
    ],
    task="classification",
    inputs="vector",
    n_classes=lambda p: p["n_classes"],
)
def synthetic_purchase(
    n_records: int = 2000, n_features: int = 600, n_classes: int = 100, flip: float = 0.36, seed: int = 0
) -> Dataset:
    if n_records < n_classes:
        raise BenchError(
            f"synthetic_purchase: n_records={n_records} is smaller than n_classes={n_classes}, so some classes "
            "would be empty; raise n_records or lower n_classes"
        )
    rng = np.random.default_rng(seed)
    prototypes = rng.random((n_classes, n_features)) < SYNTHETIC_DENSITY
    y = rng.permutation(np.arange(n_records) % n_classes).astype(np.int64)
    X = prototypes[y] ^ (rng.random((n_records, n_features)) < flip)
    return Dataset(X.astype(np.float32), y, task="classification", n_classes=n_classes)


# --- the user's files -----------------------------------------------------------------------------------------


def _existing_file(path: str | None, loader: str) -> Path:
    if path is None:
        raise BenchError(
            f"{loader}: parameter 'path' is required; give the file to load, e.g. params: {{path: data.{loader}}}"
        )
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise BenchError(f"{loader}: {file} {what}; give the path of an existing .{loader} file")
    return file


def _class_indices(labels: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """Map arbitrary labels to class indices 0..K-1 in sorted order of the labels."""
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise BenchError(f"{where}: the labels hold {len(classes)} class ({classes.tolist()}); classification needs "
                         "at least 2 — check the label column, or use task: regression")
    return y.astype(np.int64).reshape(-1), len(classes)


def _bad_rows(kind: str, lines: list[str], n: int, source: str, drop_invalid: bool, fix: str) -> None:
    """Raise for bad rows, or (with ``drop_invalid``) report how many are dropped."""
    if not lines:
        return
    if not drop_invalid:
        raise BenchError(
            f"{source}: {len(lines)} of {n} rows have {kind} — {_shown(lines)}; {fix}, or set drop_invalid: true "
            "to drop them"
        )
    _notice(f"{source}: dropped {len(lines)} of {n} rows with {kind} (drop_invalid=true) — {_shown(lines)}")


@DATASETS.register(
    "csv",
    description=(
        "The user's CSV file (header on line 1). label_col holds the target: any labels for classification "
        "(mapped to class indices in sorted order), numbers for regression. With smiles_col the features come from "
        "that column's SMILES (`features`); without it every other numeric column is a feature (standardized; "
        "non-numeric columns are skipped with a warning). Rows with a missing label, a missing feature value or "
        "an invalid SMILES raise an error naming their line, unless drop_invalid drops them (and reports the count)."
    ),
    params=[
        Param("path", str, None, "CSV file to load (required)"),
        Param("label_col", str, "label", "column holding the label or regression target"),
        Param("smiles_col", str, None, "column holding SMILES; unset: the other numeric columns are the features"),
        Param("task", str, "classification", "classification or regression", choices=TASKS),
        *molecule_params(),
        Param("drop_invalid", bool, False, "drop (and report) bad rows instead of stopping"),
    ],
    task=task_tag,
    inputs=lambda p: FEATURIZERS[p["features"]].inputs if p["smiles_col"] is not None else "vector",
    layout=lambda p: FEATURIZERS[p["features"]].version if p["smiles_col"] is not None else 1,
    files=("path",),
)
def csv(
    path: str | None = None,
    label_col: str = "label",
    smiles_col: str | None = None,
    task: str = "classification",
    features: str = "ecfp4",
    n_bits: int = 2048,
    counts: bool = False,
    drop_invalid: bool = False,
) -> Dataset:
    import pandas as pd

    file = _existing_file(path, "csv")
    source = f"csv {file}"
    try:  # everything as text first, so that line numbers and the raw values can be reported
        table = pd.read_csv(file, dtype=str, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise BenchError(f"{source}: the file is empty; it needs a header line and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[-1]
        raise BenchError(f"{source}: malformed CSV ({reason}); fix the file so every row has the header's fields, "
                         "comma-separated, UTF-8") from None
    table.index = np.arange(len(table)) + 2  # the line number of each row: the header is line 1
    blank = table.isna().all(axis=1)
    if blank.any():
        log.info("%s: skipped %d blank lines", source, int(blank.sum()))
    table = table[~blank]

    columns = [str(c) for c in table.columns]
    needed = [label_col] + ([smiles_col] if smiles_col is not None else [])
    for column in needed:
        if column not in table.columns:
            raise BenchError(
                f"{source}: no column {column!r}; the file's columns are: {', '.join(map(repr, columns))} — set "
                f"{'label_col' if column == label_col else 'smiles_col'} to one of them"
            )
    if smiles_col == label_col:
        raise BenchError(f"{source}: label_col and smiles_col are both {label_col!r}; give two different columns")
    n = len(table)
    notes: list[str] = []
    bad_total = 0

    # labels
    raw = table[label_col]
    if task == "regression":
        values = pd.to_numeric(raw, errors="coerce")
        bad = ~np.isfinite(values.to_numpy(np.float64))
        kind = f"a missing or non-numeric {label_col!r}"
        fix = "give every row a numeric target"
    else:
        bad = raw.isna().to_numpy()
        kind = f"a missing {label_col!r}"
        fix = "give every row a label"
    lines = [f"line {i}: {label_col}={v!r}" if isinstance(v, str) else f"line {i}: {label_col} is empty"
             for i, v in raw[bad].items()]
    _bad_rows(kind, lines, n, source, drop_invalid, fix)
    bad_total += len(lines)
    table = table[~bad]

    if smiles_col is None:
        others = [c for c in table.columns if c != label_col]
        numeric = {c: pd.to_numeric(table[c], errors="coerce") for c in others}
        feature_cols = [c for c in others if numeric[c].notna().sum() == table[c].notna().sum() > 0]
        skipped = [c for c in others if c not in feature_cols]
        if skipped:
            text = f"{source}: skipped non-numeric columns {', '.join(map(repr, skipped))} (not used as features)"
            _notice(text)
            notes.append(text)
        if not feature_cols:
            raise BenchError(
                f"{source}: no numeric feature column besides {label_col!r} (columns: {', '.join(columns)}); "
                "add numeric columns, or give smiles_col for molecules"
            )
        matrix = pd.DataFrame({c: numeric[c] for c in feature_cols}).to_numpy(np.float64)
        bad = ~np.isfinite(matrix).all(axis=1)
        lines = []
        for i, row in zip(table.index[bad], matrix[bad], strict=True):
            missing = [c for c, v in zip(feature_cols, row, strict=True) if not np.isfinite(v)]
            lines.append(f"line {i}: missing {', '.join(map(repr, missing))}")
        _bad_rows("missing feature values", lines, n, source, drop_invalid, "fill in the values")
        bad_total += len(lines)
        table, X = table[~bad], standardize(matrix[~bad])
        if len(table) == 0:
            raise BenchError(f"{source}: no row left to load; check the file")
    else:
        X, ok = featurize(
            table[smiles_col].tolist(), features, n_bits, counts,
            row_names=[f"line {i}" for i in table.index], drop_invalid=drop_invalid, source=source,
        )
        bad_total += int((~ok).sum())
        table = table[ok]

    if bad_total:
        notes.append(f"{source}: dropped {bad_total} of {n} rows (drop_invalid=true)")
    if task == "regression":
        y = pd.to_numeric(table[label_col]).to_numpy(np.float32)
        return Dataset(X, y, task="regression", n_classes=1, notes=tuple(notes))
    labels = table[label_col]
    as_numbers = pd.to_numeric(labels, errors="coerce")
    key = as_numbers.to_numpy(np.float64) if as_numbers.notna().all() else labels.to_numpy(str)  # 2 < 10 numerically
    y, n_classes = _class_indices(key, source)
    return Dataset(X, y, task="classification", n_classes=n_classes, notes=tuple(notes))


NPZ_LAYOUTS: dict[str, dict[int, str]] = {
    "vector": {2: "[N, F]"},
    "image": {4: "[N, C, H, W]"},
    "volume": {4: "[N, D, H, W]", 5: "[N, C, D, H, W]"},
}
"""For each ``inputs`` kind of the ``npz`` loader, the ranks of ``X`` it accepts and their layouts."""


@DATASETS.register(
    "npz",
    description=(
        "The user's NumPy archive (.npz) with arrays X (numeric; [N, F] for vector inputs, [N, C, H, W] for image "
        "inputs, [N, D, H, W] or [N, C, D, H, W] for volume inputs such as MRI scans) and y ([N]: any labels for "
        "classification, mapped to class indices in sorted order; numbers for regression). Loaded with "
        "allow_pickle=False: object arrays are refused."
    ),
    params=[
        Param("path", str, None, ".npz file to load (required)"),
        Param("task", str, "classification", "classification or regression", choices=TASKS),
        Param("inputs", str, "vector", "vector: X[N, F]; image: X[N, C, H, W]; volume: X[N, D, H, W] or "
              "X[N, C, D, H, W]", choices=tuple(NPZ_LAYOUTS)),
    ],
    files=("path",),
    task=task_tag,
    inputs=lambda p: p["inputs"],
)
def npz(path: str | None = None, task: str = "classification", inputs: str = "vector") -> Dataset:
    file = _existing_file(path, "npz")
    source = f"npz {file}"
    save_hint = "save it with numpy.savez(path, X=X, y=y) from numeric arrays"
    try:
        archive = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        # a plain pickle (or any file that is neither .npy nor .npz) lands here: never unpickle it
        raise BenchError(f"{source}: not a readable .npz archive ({str(err).splitlines()[0]}); {save_hint}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise BenchError(f"{source}: holds a single .npy array, not an .npz archive with X and y; {save_hint}")
    with archive:
        missing = [k for k in ("X", "y") if k not in archive.files]
        if missing:
            raise BenchError(
                f"{source}: no array {' or '.join(map(repr, missing))}; the archive holds "
                f"{', '.join(map(repr, archive.files)) or 'nothing'} — {save_hint}"
            )
        arrays = {}
        for key in ("X", "y"):
            try:
                arrays[key] = archive[key]
            except ValueError as err:
                if "Object arrays" in str(err) or "allow_pickle" in str(err):
                    raise BenchError(
                        f"{source}: array {key!r} is an object (pickled) array, refused because unpickling can "
                        f"run code; convert it to a numeric array (e.g. {key}.astype(np.float32)) and {save_hint}"
                    ) from None
                raise BenchError(f"{source}: cannot read array {key!r} ({err}); {save_hint}") from None
            except (OSError, EOFError, zipfile.BadZipFile) as err:
                raise BenchError(f"{source}: cannot read array {key!r} ({err}); {save_hint}") from None
    X, labels = arrays["X"], arrays["y"]

    layouts = NPZ_LAYOUTS[inputs]
    if X.ndim not in layouts:
        need = " or ".join(str(d) for d in layouts)
        shapes = " or ".join(layouts.values())
        fits = [kind for kind, kinds in NPZ_LAYOUTS.items() if X.ndim in kinds]
        fix = f"set inputs: {' or '.join(fits)} if that is what X holds, or reshape X" if fits else "reshape X"
        raise BenchError(f"{source}: X has shape {X.shape}, but inputs={inputs} needs {need} dimensions "
                         f"({shapes}); {fix}")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise BenchError(f"{source}: X has dtype {X.dtype}; it must be numeric (convert it with X.astype(np.float32))")
    if labels.ndim != 1 or len(labels) != len(X):
        raise BenchError(f"{source}: y has shape {labels.shape}; it must be one value per row of X, shape ({len(X)},)")
    X = X.astype(np.float32)
    nonfinite = np.flatnonzero(~np.isfinite(X.reshape(len(X), -1)).all(axis=1))
    if len(nonfinite):
        raise BenchError(f"{source}: {len(nonfinite)} rows of X hold NaN or infinity (first: rows "
                         f"{', '.join(map(str, nonfinite[:5]))}); fix or remove them")
    if task == "regression":
        if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
            raise BenchError(f"{source}: y has dtype {labels.dtype}; regression needs numbers")
        y = labels.astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            raise BenchError(f"{source}: {len(bad)} values of y are NaN or infinite (first: rows "
                             f"{', '.join(map(str, bad[:5]))}); fix or remove them")
        return Dataset(X, y, task="regression", n_classes=1)
    if np.issubdtype(labels.dtype, np.floating) and not np.isfinite(labels).all():
        raise BenchError(f"{source}: y holds NaN or infinite labels; fix or remove those rows")
    y, n_classes = _class_indices(labels, source)
    return Dataset(X, y, task="classification", n_classes=n_classes)


# --- synthetic volumes ------------------------------------------------------------------------------------------

VOLUME_RADII = (0.25, 0.6)
"""Smallest and largest blob radius of ``synthetic_volumes``, in units of the volume's half-width."""
VOLUME_CENTRE = 0.35
"""Blob centres of ``synthetic_volumes`` are uniform in ``[-VOLUME_CENTRE, VOLUME_CENTRE]³`` (half-width units),
so that the largest blob stays inside the volume."""
VOLUME_MAX_VOXELS = 2**28
"""The most voxels (``n_samples × size³``) ``synthetic_volumes`` generates: 1 GiB of float32."""


def synthetic_volumes_problem(
    params: Mapping[str, Any], *, task: str | None = None, n_classes: int | None = None
) -> str | None:
    """Grid-load check (the ``check`` tag): the volumes must fit in memory. ``task`` and ``n_classes`` are not
    needed."""
    voxels = params["n_samples"] * params["size"] ** 3
    if voxels > VOLUME_MAX_VOXELS:
        return (f"n_samples × size³ = {voxels:,} voxels exceeds {VOLUME_MAX_VOXELS:,} (1 GiB of float32); lower "
                "n_samples or size")
    return None


@DATASETS.register(
    "synthetic_volumes",
    description=(
        "SYNTHETIC volumes for tests and demos only; not real MRI, and nothing learned on it says anything about "
        "brains. Each record is a size³ volume X[N, D, H, W] (float32) holding one soft-edged bright ball at a "
        f"random centre (uniform in ±{VOLUME_CENTRE} of the half-width) on a dark background, plus Gaussian voxel "
        "noise (`noise`). A latent 'age' a, uniform in [0, 1], sets the ball's radius linearly from "
        f"{VOLUME_RADII[0]} to {VOLUME_RADII[1]} of the half-width. regression: y = (a − 0.5)·√12 (a stand-in "
        "for brain age, unit variance) plus Gaussian noise (`target_noise`): up to that noise the target is a smooth, "
        "increasing function of the ball's volume, which a 3-D CNN can learn; the position carries no signal. "
        "classification: "
        "class 1 when that regression target is at least its median (2 balanced classes). Deterministic given `seed`."
    ),
    params=[
        Param("n_samples", int, 200, "number of volumes", low=2, high=10_000_000),
        Param("size", int, 12, "edge of every volume in voxels (D = H = W = size)", low=4, high=256),
        Param("noise", float, 0.1, "standard deviation of the Gaussian noise added to every voxel", low=0.0,
              high=10.0),
        Param("target_noise", float, 0.1, "standard deviation of the Gaussian noise added to the (unit-variance) "
              "target", low=0.0, high=10.0),
        Param("task", str, "regression", "regression (the 'age' stand-in) or classification (above/below its "
              "median)", choices=TASKS),
        Param("seed", int, 0, "seed of the generator (ages, centres, voxel and target noise)", low=0),
    ],
    task=task_tag,
    inputs="volume",
    n_classes=lambda p: 2 if p["task"] == "classification" else 1,
    check=synthetic_volumes_problem,
)
def synthetic_volumes(
    n_samples: int = 200,
    size: int = 12,
    noise: float = 0.1,
    target_noise: float = 0.1,
    task: str = "regression",
    seed: int = 0,
) -> Dataset:
    """Seeded synthetic volumes whose target is set by the radius of a ball at a random position.

    Parameters
    ----------
    n_samples, size
        Number of volumes and their edge in voxels: ``X`` is ``[n_samples, size, size, size]``.
    noise, target_noise
        Standard deviations of the Gaussian noise on every voxel and on the (unit-variance) regression target.
    task
        "regression" (float32 target) or "classification" (int64 class: target at least its median).
    seed
        Seed of NumPy's generator; the same parameters give the same arrays.

    Returns
    -------
    Dataset
        ``X`` float32 ``[N, D, H, W]``; ``y`` as described for ``task``.

    Raises
    ------
    BenchError
        If ``n_samples × size³`` is more than :data:`VOLUME_MAX_VOXELS`.
    """
    problem = synthetic_volumes_problem({"n_samples": n_samples, "size": size})
    if problem:
        raise BenchError(f"synthetic_volumes: {problem}")
    rng = np.random.default_rng(seed)
    age = rng.random(n_samples)
    radius = VOLUME_RADII[0] + (VOLUME_RADII[1] - VOLUME_RADII[0]) * age  # half-width units
    centre = rng.uniform(-VOLUME_CENTRE, VOLUME_CENTRE, size=(n_samples, 3))
    axis = np.linspace(-1.0, 1.0, size)  # voxel centres, half-width units
    X = np.empty((n_samples, size, size, size), dtype=np.float32)
    edge = 1.0 / size  # about half a voxel: the ball's surface is smooth, so its volume varies smoothly with radius
    for start in range(0, n_samples, 256):  # in chunks: the float64 temporaries stay small
        part = slice(start, start + 256)
        c = centre[part]
        distance = np.sqrt(
            (axis[None, :, None, None] - c[:, 0, None, None, None]) ** 2
            + (axis[None, None, :, None] - c[:, 1, None, None, None]) ** 2
            + (axis[None, None, None, :] - c[:, 2, None, None, None]) ** 2
        )
        X[part] = 0.5 * (1.0 - np.tanh((distance - radius[part, None, None, None]) / (2.0 * edge)))
    X += noise * rng.standard_normal(X.shape, dtype=np.float32)
    target = (age - 0.5) * np.sqrt(12.0) + target_noise * rng.standard_normal(n_samples)
    if task == "regression":
        return Dataset(X, target.astype(np.float32), task="regression", n_classes=1)
    y = (target >= np.median(target)).astype(np.int64)
    return Dataset(X, y, task="classification", n_classes=2)
