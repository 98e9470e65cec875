"""The audit protocol's randomness: the pool/test split and the membership matrix ``keep[M, N]``."""

from __future__ import annotations

import numpy as np


def split_pool_test(
    y: np.ndarray, test_fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Split record indices into the audited pool and a test set used for utility only.

    With ``stratify`` the class proportions of the pool and the test set match the whole dataset's.
    """
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    pool, test = train_test_split(
        indices, test_size=test_fraction, random_state=seed % 2**32, stratify=y if stratify else None
    )
    return np.sort(pool), np.sort(test)


def membership_matrix(n_models: int, n_points: int, seed: int) -> np.ndarray:
    """A boolean ``keep[M, N]``: ``keep[m, i]`` says whether model ``m`` trains on pool point ``i``.

    Every point is IN for exactly half of the models (for odd ``M``, ``M // 2`` or ``M // 2 + 1`` at
    random), so each point has both IN and OUT references whichever model is the target (Carlini et al.
    2022). Each model then trains on about half of the pool.
    """
    if n_models < 2:
        raise ValueError("the membership matrix needs at least two models")
    rng = np.random.default_rng(seed)
    ranks = rng.random((n_models, n_points)).argsort(axis=0).argsort(axis=0)
    n_in = n_models // 2 + (rng.random(n_points) < 0.5) * (n_models % 2)
    return ranks < n_in
