"""The tests' shorthand for one run of the training loop with the plain hooks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from privkernel.registry import ENGINES
from targets.ensemble import Ensemble, Inputs
from targets.training import LossFn, TrainingHooks, TrainingLog, TrainingSettings, default_loss

#: The loop engine draws each model's dropout masks as vmap's ``randomness="different"`` does on the torch that CI
#: installs (2.13); on torch 2.2 and 2.6 (checked by hand) vmap draws other masks, so the two engines agree only in
#: distribution there. Tests of mask-for-mask equality run from 2.13 on.
same_dropout_masks_as_vmap = pytest.mark.skipif(
    tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) < (2, 13),
    reason="the loop engine reproduces vmap's per-model dropout masks on torch >= 2.13 only",
)


def train(
    ensemble: Ensemble, X: Inputs, y: torch.Tensor, keep: np.ndarray, loss: LossFn = default_loss, *,
    engine: str = "ensemble", seed: int, epochs: int, batch_size: int, lr: float, optimizer: str, momentum: float,
    weight_decay: float = 0.0, **engine_params: Any,
) -> TrainingLog:
    """Train ``ensemble`` in place with loss ``loss`` by the registered engine ``engine``."""
    settings = TrainingSettings(epochs, batch_size, lr, optimizer, momentum, weight_decay)
    trainer = ENGINES.get(engine).obj(**engine_params)
    return trainer.train(ensemble, X, y, keep, settings, seed=seed, hooks=TrainingHooks(loss))
