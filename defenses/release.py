"""Release-side defenses that coarsen the probability vector: top-k, rounding and label-only.

They change only what the attacker receives; the models are the undefended ones (``release_only``), so their
cells share the trained models of the ``none`` cells. Each keeps the predicted label of every query.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from defenses.base import Defense
from privkernel.registry import DEFENSES, Param


def one_hot_log(log_probs: np.ndarray) -> np.ndarray:
    """``0`` on the argmax of every row (the first one on a tie, as ``np.argmax``), ``-inf`` elsewhere."""
    top = log_probs.argmax(-1)[..., None]
    return np.where(np.arange(log_probs.shape[-1]) == top, 0.0, -np.inf).astype(log_probs.dtype)


def topk_problem(params: dict[str, Any], *, task: str | None, n_classes: int | None) -> str | None:
    """Grid-load check (the ``check`` tag): ``k`` is at most the number of classes."""
    if n_classes is not None and params["k"] > n_classes:
        return f"k={params['k']} exceeds the dataset's {n_classes} classes; choose k between 1 and {n_classes}"
    return None


@DEFENSES.register(
    "topk",
    description="Release only the k largest probabilities, renormalised to sum to 1; the others are 0 "
    "(Shokri et al. 2017).",
    params=[Param("k", int, 3, "number of classes whose probability is released (at most the number of classes)",
                  low=1, high=1_000_000)],
    tasks=("classification",),
    check=topk_problem,
)
class TopK(Defense):
    """Restrict the prediction vector to the top ``k`` classes.

    Shokri, Stronati, Song and Shmatikov, "Membership inference attacks against machine learning models",
    IEEE S&P 2017, Section VI ("restrict the prediction vector to top k classes").

    Parameters
    ----------
    k
        Classes released per query, at most the dataset's number of classes (checked when the grid loads).

    Notes
    -----
    The k largest probabilities are renormalised to sum to 1 and the others are released as 0 (``-inf`` in
    log space). Renormalising keeps the release a probability distribution, which is what every attack reads;
    it also hides the mass of the hidden classes, which an API showing the raw top-k values would reveal
    (``1 − Σ top-k``), so this release discloses no more than such an API. ``k = 1`` discloses the predicted label
    only; ``k = C`` is the identity. The k largest are taken in the order of ``np.argsort`` (stable): on ties the
    class of lower index wins, and the argmax is kept.
    """

    release_only = True

    def __init__(self, k: int = 3) -> None:
        super().__init__(k=k)
        self.k = k

    def release(self, log_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        k = min(self.k, log_probs.shape[-1])
        order = np.argsort(-log_probs, axis=-1, kind="stable")  # descending, lower index first on ties
        shown = np.zeros(log_probs.shape, dtype=bool)
        np.put_along_axis(shown, order[..., :k], True, axis=-1)
        kept = np.where(shown, log_probs.astype(np.float64), -np.inf)
        top = kept.max(axis=-1, keepdims=True)
        log_norm = top + np.log(np.exp(kept - top).sum(axis=-1, keepdims=True))
        return (kept - log_norm).astype(log_probs.dtype)


@DEFENSES.register(
    "rounding",
    description="Release probabilities rounded to a number of decimals; the predicted class stays the largest.",
    params=[Param("decimals", int, 2, "decimal places kept of every probability", low=0, high=15)],
    tasks=("classification",),
)
class Rounding(Defense):
    """Round every probability to ``decimals`` decimal places.

    Shokri et al., IEEE S&P 2017, Section VI ("coarsen precision of the prediction vector"); also Jia et al.,
    "MemGuard", CCS 2019, as a confidence-masking baseline.

    Parameters
    ----------
    decimals
        Decimal places kept (``0`` keeps only 0 or 1).

    Notes
    -----
    The release is ``log(round(p, decimals))``; a probability that rounds to 0 is released as ``-inf``. The
    rounded values need not sum to 1. Rounding is monotone, so the predicted class keeps the largest rounded
    value, but it may tie with another class (``0.504`` and ``0.496`` both round to ``0.5``), and a class that
    is predicted with probability below one half unit (possible with ``decimals = 0``) would round to 0. So
    that the released argmax is the model's prediction for every query, the predicted class is then released as
    the largest other rounded value plus one unit ``10^-decimals``: a distortion of at most 1.5 units on that
    one class, only where rounding alone would lose the label.
    """

    release_only = True

    def __init__(self, decimals: int = 2) -> None:
        super().__init__(decimals=decimals)
        self.decimals = decimals

    def release(self, log_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        unit = 10.0 ** -self.decimals
        rounded = np.round(np.exp(log_probs.astype(np.float64)), self.decimals)
        top = log_probs.argmax(-1)[..., None]
        is_top = np.arange(log_probs.shape[-1]) == top
        best_other = np.where(is_top, -np.inf, rounded).max(axis=-1, keepdims=True)
        on_top = np.take_along_axis(rounded, top, axis=-1)
        lost = on_top <= best_other
        rounded = np.where(is_top & lost, best_other + unit, rounded)
        with np.errstate(divide="ignore"):
            return np.log(rounded).astype(log_probs.dtype)


@DEFENSES.register(
    "label_only",
    description="Release the predicted label only (one-hot); attacks that need probabilities are skipped.",
    tasks=("classification",),
)
class LabelOnly(Defense):
    """Release only the predicted label.

    The limit of confidence masking (Shokri et al., IEEE S&P 2017, Section VI, top-1); label-only attacks
    remain (Choquette-Choo, Tramèr, Carlini and Papernot, "Label-only membership inference attacks",
    ICML 2021; Li and Zhang, CCS 2021).

    Notes
    -----
    The release is a one-hot log-probability vector: ``0`` on the argmax of the model's output (the class of
    lower index on an exact tie) and ``-inf`` elsewhere. ``releases = "labels"`` tells the pipeline to skip
    the attacks that need probabilities, with the reason recorded in the results store.
    """

    releases = "labels"
    release_only = True

    def release(self, log_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return one_hot_log(log_probs)

