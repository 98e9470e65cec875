"""What a defense may change: the training loss of the models and what is released to the attacker.

A defense is registered as a class; the harness builds it with the grid's parameters and hands it both to the
ensemble trainer and to the observation step, for the target and the reference models alike. Attacks are
therefore adaptive by construction: the references are trained and released exactly as the target is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


class Defense:
    """No defense; subclasses override the hooks they need.

    Attributes
    ----------
    releases
        What the attacker sees of a model's output: ``"probabilities"`` (the full vector).
    """

    releases = "probabilities"

    def __init__(self, **params: object) -> None:
        self.params = params

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean training loss per model: outputs ``[M, B, C]``, labels ``[M, B]`` → ``[M]``."""
        per_point = F.cross_entropy(outputs.flatten(0, 1), labels.flatten(), reduction="none")
        return per_point.view(labels.shape).mean(dim=1)

    def release(self, log_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What the attacker receives for ``log_probs[M, N, C]``; identity when nothing is hidden."""
        return log_probs
