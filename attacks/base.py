"""What an attack receives: the released outputs of one target and of its reference models.

The target's membership is not in here: an attack cannot peek at the answer it is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AttackData:
    """The attacker's view of one audit.

    Attributes
    ----------
    target
        Released outputs of the target on the ``N`` pool points: log-probabilities ``[N, C]``.
    labels
        True labels of the pool points ``[N]``.
    references
        Released outputs of the ``R`` reference models on the same points ``[R, N, C]``.
    reference_keep
        Membership of the pool points in each reference model's training set ``[R, N]``.
    """

    target: np.ndarray
    labels: np.ndarray
    references: np.ndarray
    reference_keep: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.target.shape[0] != n or self.references.shape[1:2] != (n,) or self.reference_keep.shape[1:] != (n,):
            raise ValueError(
                f"inconsistent attack inputs: target {self.target.shape}, labels {self.labels.shape}, "
                f"references {self.references.shape}, reference_keep {self.reference_keep.shape}"
            )


def true_class_loss(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy −log p_y of each point, accurate also when p_y rounds to 1.

    Near p_y = 1 the released log p_y is rounding noise (float32 holds 1 − 1e-7 at best), which would tie
    the most confident points. The other classes' probabilities are still exact, so the loss is computed as
    −log1p(−Σ_{j≠y} p_j) there, and as −log p_y where p_y < 1/2.

    Parameters
    ----------
    log_probs
        Released log-probabilities ``[..., N, C]``.
    labels
        True classes ``[N]``.
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    on_label = np.arange(log_probs.shape[-1]) == np.asarray(labels)[:, None]
    log_p_y = np.where(on_label, log_probs, 0.0).sum(-1)
    p_wrong = np.where(on_label, 0.0, np.exp(log_probs)).sum(-1)
    confident = p_wrong < 0.5
    return np.where(confident, -np.log1p(-np.minimum(p_wrong, 0.5)), -log_p_y)
