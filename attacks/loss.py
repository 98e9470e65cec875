"""The LOSS attack (Yeom et al. 2018): members have lower loss."""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData, true_class_loss
from attacks.requirements import Release, always
from privkernel.registry import ATTACKS


@ATTACKS.register(
    "loss",
    description="Negative loss of the target on each point (Yeom et al. 2018): cross-entropy, or the squared "
    "residual for regression; needs no references.",
    requires=always(Release("probabilities")),
    tasks=("classification", "regression"),
)
def loss_attack(data: AttackData) -> np.ndarray:
    """Score = −loss(x): log p_y(x) from the released log-probabilities, or −(ŷ(x) − y)² for regression."""
    if data.task == "regression":
        return -data.residuals()[0] ** 2
    return -true_class_loss(data.target, data.labels)
