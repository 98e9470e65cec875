"""Gaussian noise on the released probabilities: a release-only defense written against the hooks alone."""

from __future__ import annotations

import numpy as np

from defenses.base import Defense
from privkernel.registry import DEFENSES, Param


@DEFENSES.register(
    "gaussian_release",
    description="Add N(0, std²) noise to every released probability, clip at 1e-12 and renormalise; the models "
    "are the undefended ones.",
    params=[Param("std", float, 0.1, "standard deviation of the noise on each probability", low=0.0, high=10.0)],
    tasks=("classification",),
)
class GaussianRelease(Defense):
    """Perturb each query's probability vector ``p`` to ``q ∝ max(p + ε, 10⁻¹²)``, ``ε ~ N(0, std² I)``, drawn from
    the observation step's seeded stream; ``std = 0`` releases ``p`` itself. The predicted label may change."""

    release_only = True

    def __init__(self, std: float = 0.1) -> None:
        super().__init__(std=std)
        self.std = std

    def release(self, log_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy = np.maximum(np.exp(log_probs) + rng.normal(0.0, self.std, log_probs.shape), 1e-12)
        return np.log(noisy / noisy.sum(-1, keepdims=True)).astype(log_probs.dtype)
