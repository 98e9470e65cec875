"""Datasets that ship with the installed packages (nothing is downloaded at run time)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.registry import DATASETS


@dataclass(frozen=True)
class Dataset:
    """Features and labels of a whole dataset, before the pool/test split.

    ``X`` is float32 with one row per record; ``y`` holds class indices (int64) for classification.
    """

    X: np.ndarray
    y: np.ndarray
    task: str
    n_classes: int

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"X has {len(self.X)} rows but y has {len(self.y)}")


def standardize(X: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column (constant columns are left at zero)."""
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0)
    return ((X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


@DATASETS.register(
    "breast_cancer",
    description="Wisconsin diagnostic breast cancer (569 tumours, 30 features, 2 classes; scikit-learn's bundled file).",
    task="classification",
    inputs="vector",
    size=569,
)
def breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return Dataset(standardize(X), y.astype(np.int64), task="classification", n_classes=2)
