"""Synthetic attack inputs with a known membership signal, for the attack tests.

Every model's logit-scaled confidence on point ``n`` is

    φ_mn = d_n + shift_{y_n} + signal · keep_mn + noise · ε_mn,

with a per-point difficulty ``d_n ~ N(0, difficulty²)`` shared by all models (some points are hard for every
model), a per-class offset, and a membership effect ``signal`` (members are fitted better). The released
output puts ``p_y = sigmoid(φ)`` on the label and splits ``1 − p_y`` over the other classes with fixed
per-point weights. Model 0 is the target, the others its references. Population points are drawn the same way
and are members of no model. The membership design is the harness's (every point IN for exactly half of the
models, ``targets.membership``) or, with ``balanced=False``, independent coin flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_expit

from attacks.base import AttackData
from targets.membership import membership_matrix


@dataclass(frozen=True)
class Synthetic:
    data: AttackData
    membership: np.ndarray  # the target's keep [N]
    phi_target: np.ndarray  # the φ the target's release encodes [N]


def release_from_phi(phi: np.ndarray, labels: np.ndarray, other_weights: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Log-probabilities ``[..., N, C]`` with ``log(p_y / (1 − p_y)) = φ``; ``other_weights [N, C]`` sum to 1 off
    the label and split ``1 − p_y`` over the wrong classes."""
    n_classes = other_weights.shape[-1]
    on_label = np.arange(n_classes) == labels[:, None]
    with np.errstate(divide="ignore"):
        log_w = np.log(other_weights)
    log_probs = np.where(on_label, log_expit(phi)[..., None], log_expit(-phi)[..., None] + log_w)
    return log_probs.astype(dtype)


def synthetic(
    n: int = 1000,
    n_models: int = 9,
    n_classes: int = 4,
    signal: float = 1.0,
    difficulty: float = 2.0,
    noise: float = 0.5,
    class_shift: float = 0.0,
    n_population: int = 500,
    balanced: bool = True,
    seed: int = 0,
) -> Synthetic:
    rng = np.random.default_rng(seed)

    def points(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels = rng.integers(n_classes, size=m)
        base = rng.normal(0.0, difficulty, size=m) + shifts[labels]
        weights = rng.dirichlet(np.ones(n_classes), size=m) if n_classes > 1 else np.ones((m, 1))
        weights = np.where(np.arange(n_classes) == labels[:, None], 0.0, weights)
        weights = weights / np.maximum(weights.sum(1, keepdims=True), 1e-300)
        return labels, base, weights

    shifts = rng.normal(0.0, class_shift, size=n_classes)
    labels, base, weights = points(n)
    keep = membership_matrix(n_models, n, seed) if balanced else rng.random((n_models, n)) < 0.5
    phi = base + signal * keep + noise * rng.normal(size=(n_models, n))
    release = release_from_phi(phi, labels, weights)
    pop_labels, pop_base, pop_weights = points(n_population)
    pop_phi = pop_base + noise * rng.normal(size=(n_models, n_population))
    pop_release = release_from_phi(pop_phi, pop_labels, pop_weights)
    data = AttackData(
        release[0], labels, release[1:], keep[1:],
        population_target=pop_release[0], population_references=pop_release[1:], population_labels=pop_labels,
    )
    return Synthetic(data, keep[0], phi[0])


def pairwise_auc(scores: np.ndarray, members: np.ndarray) -> float:
    """The AUC by its definition, a slow reference: the fraction of (member, non-member) pairs that the scores
    order correctly, ties counting one half."""
    member, other = scores[members.astype(bool)][:, None], scores[~members.astype(bool)][None, :]
    return float(((member > other) + 0.5 * (member == other)).mean())
