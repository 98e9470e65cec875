"""What a defense may change: the architecture, the optimizer, the loss, the whole training procedure, and what
is released to the attacker.

A defense is registered as a class; the harness builds it with the grid's parameters and hands it to the training
and to the observation step, for the target and the reference models alike. Attacks are therefore adaptive by
construction: the references are trained and released exactly as the target is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from targets.engines import ENGINES
from targets.ensemble import Ensemble, Inputs, TrainingLog

#: What a release can show the attacker: the full probability vector, or the predicted label only.
RELEASES = ("probabilities", "labels")


class Defense:
    """No defense; subclasses override the hooks they need.

    Attributes
    ----------
    releases
        What the attacker sees of a model's output, one of :data:`RELEASES`. With ``"labels"``,
        :meth:`release` returns one-hot log-probabilities (``0`` on the label, ``-inf`` elsewhere) and attacks
        that need probabilities are skipped with a recorded reason.
    release_only
        True for defenses that change only what is released: their models are the undefended ones (the
        cache shares them with the ``none`` cells of the grid).
    """

    releases = "probabilities"
    release_only = False

    def __init__(self, **params: Any) -> None:
        self.params = params

    def architecture_overrides(self) -> dict[str, Any]:
        """Architecture parameters this defense sets (e.g. ``{"dropout": 0.5}``)."""
        return {}

    def optimizer_overrides(self) -> dict[str, Any]:
        """Optimizer settings this defense sets (e.g. ``{"weight_decay": 1e-3}``)."""
        return {}

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean training loss per model: outputs ``[M, B, C]``, labels ``[M, B]`` → ``[M]``.

        Cross-entropy for class labels (integers); squared error for regression targets (floats, ``C = 1``).
        """
        if labels.is_floating_point():
            return ((outputs[..., 0] - labels) ** 2).mean(dim=1)
        per_point = F.cross_entropy(outputs.flatten(0, 1), labels.flatten(), reduction="none")
        return per_point.view(labels.shape).mean(dim=1)

    def train(
        self, ensemble: Ensemble, X: Inputs, y: torch.Tensor, keep: np.ndarray, *, engine: str, seed: int,
        **training: Any,
    ) -> TrainingLog:
        """Train the ensemble; the default runs the chosen engine with this defense's loss and optimizer."""
        return ENGINES[engine](ensemble, X, y, keep, self.loss, seed=seed, **training, **self.optimizer_overrides())

    def release(self, log_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What the attacker receives for ``log_probs[M, N, C]``; identity when nothing is hidden."""
        return log_probs
