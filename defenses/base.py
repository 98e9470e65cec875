"""What a defense may change: the architecture, the optimizer, the training loop's hooks (the loss, the batches, a
gradient transform, an extra step, an end-of-epoch callback) and what is released to the attacker.

A defense is registered as a class; the harness builds it with the grid's parameters and hands it to the training
and to the observation step, for the target and the reference models alike. Attacks are therefore adaptive by
construction: the references are trained and released exactly as the target is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privkernel.lazy import lazy_import
from privkernel.registry import ENGINES
from targets.ensemble import Ensemble, Inputs
from targets.training import TrainingHooks, TrainingLog, TrainingSettings, default_loss

torch = lazy_import("torch")

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
        """Mean training loss per model: outputs ``[M, B, C]``, labels ``[M, B]`` → ``[M]``
        (:func:`targets.training.default_loss` unless a defense shapes it)."""
        return default_loss(outputs, labels)

    def hooks(self) -> TrainingHooks:
        """Fresh training hooks for one run of the training loop; a defense that does more than shape the loss
        returns its own :class:`~targets.training.TrainingHooks` subclass. Cheap: the grid builds them at load
        to ask the training engine whether it runs them."""
        return TrainingHooks(self.loss)

    def train(
        self, ensemble: Ensemble, X: Inputs, y: torch.Tensor, keep: np.ndarray, *, seed: int, epochs: int,
        batch_size: int, lr: float, optimizer: str, momentum: float, schedule: str = "constant", warmup: float = 0.0,
        engine: str = "ensemble", **engine_params: Any,
    ) -> TrainingLog:
        """Train the ensemble in place with this defense's hooks and optimizer settings and the learning-rate
        ``schedule`` with its ``warmup`` (:data:`targets.training.TRAINING_PARAMS`), by the registered training
        engine ``engine`` built with ``engine_params`` (e.g. the federated engine's sites and rounds)."""
        settings = TrainingSettings(epochs, batch_size, lr, optimizer, momentum, schedule=schedule, warmup=warmup,
                                    **self.optimizer_overrides())
        trainer = ENGINES.get(engine).obj(**engine_params)
        return trainer.train(ensemble, X, y, keep, settings, seed=seed, hooks=self.hooks())

    def release(self, log_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What the attacker receives for ``log_probs[M, N, C]``; identity when nothing is hidden."""
        return log_probs
