"""The LOSS attack (Yeom et al. 2018): members have lower loss."""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData, AttackOutput
from attacks.requirements import Release, always
from attacks.roc import best_threshold
from attacks.signals import true_class_loss
from privkernel.registry import ATTACKS


def negative_loss(outputs: np.ndarray, labels: np.ndarray, task: str) -> np.ndarray:
    """−loss of each record: ``log p_y`` (accurate where ``p_y`` rounds to 1), or ``−(ŷ − y)²`` for regression."""
    if task == "regression":
        return -((np.asarray(outputs, dtype=np.float64)[..., 0] - np.asarray(labels, dtype=np.float64)) ** 2)
    return -true_class_loss(outputs, labels)


@ATTACKS.register(
    "loss",
    description="Negative loss of the target on each point (Yeom et al. 2018): cross-entropy, or the squared "
    "residual for regression; needs no references.",
    requires=always(Release("probabilities")),
    tasks=("classification", "regression"),
)
def loss_attack(data: AttackData) -> AttackOutput:
    """Score = −loss(x): log p_y(x) from the released log-probabilities, or −(ŷ(x) − y)² for regression.

    With shadow models (the classic setting, :attr:`AttackData.shadow_outputs`) the attacker also learns one
    threshold on their losses by Song & Mittal's rule (:func:`attacks.roc.best_threshold`), at which the balanced
    accuracy is measured; otherwise the harness chooses it on the calibration audits.
    """
    scores = negative_loss(data.target, data.labels, data.task)
    if data.shadow_outputs is None:
        return AttackOutput(scores)
    shadow = data.labelled_outputs()
    values = negative_loss(shadow.outputs, shadow.labels, data.task)
    return AttackOutput(scores, {"thresholds_learned": 1},
                        threshold=best_threshold(values.ravel(), shadow.keep.ravel()))
