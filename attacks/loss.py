"""The LOSS attack (Yeom et al. 2018): members have lower loss."""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData, true_class_loss
from bench.registry import ATTACKS


@ATTACKS.register(
    "loss",
    description="Negative cross-entropy loss of the target on each point (Yeom et al. 2018); needs no references.",
    needs="probabilities",
    tasks=("classification",),
)
def loss_attack(data: AttackData) -> np.ndarray:
    """Score = −loss(x) = log p_y(x), from the released log-probabilities."""
    return -true_class_loss(data.target, data.labels)
