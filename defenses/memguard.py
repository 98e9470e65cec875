"""MemGuard (Jia, Salem, Backes, Zhang and Gong, CCS 2019): noise on the released probability vector that
fools the defender's own membership classifier, without changing the predicted label."""

from __future__ import annotations

from typing import Any

import numpy as np

from defenses.base import Defense
from privkernel.registry import DEFENSES, Param

#: Relative margin by which the predicted class stays above the others when lowering it would create a tie.
LABEL_MARGIN = 1e-4


def _top_and_rest(log_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask of the predicted class (first argmax), its log-probability and the log of the others' total mass."""
    from scipy.special import logsumexp  # imported here: scipy is not needed to register the defense

    log_probs = np.asarray(log_probs, dtype=np.float64)
    is_top = np.arange(log_probs.shape[-1]) == log_probs.argmax(-1)[..., None]
    log_top = np.where(is_top, log_probs, 0.0).sum(-1)
    with np.errstate(divide="ignore"):
        log_rest = logsumexp(np.where(is_top, -np.inf, log_probs), axis=-1)
    return is_top, log_top, log_rest


def defender_logit(log_probs: np.ndarray, threshold: float) -> np.ndarray:
    """Logit of the defender's membership classifier ``g`` on released log-probabilities ``[..., C]`` → ``[...]``.

    ``g(s) = σ(logit(max_j s_j) − logit(threshold))``: the confidence-threshold classifier, which calls a query
    a member when its top probability exceeds ``threshold`` and answers exactly 0.5 at the threshold.
    """
    _, log_top, log_rest = _top_and_rest(log_probs)
    return log_top - log_rest - (np.log(threshold) - np.log1p(-threshold))


def defender_output(log_probs: np.ndarray, threshold: float) -> np.ndarray:
    """``g(s)`` in ``[0, 1]`` (see :func:`defender_logit`)."""
    return 1.0 / (1.0 + np.exp(-defender_logit(log_probs, threshold)))


def memguard_noise(log_probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Phase I: the least-L1 change of every probability vector that brings ``g`` to 0.5 and keeps the label.

    The top probability ``a`` is moved to ``threshold`` τ and the other classes are rescaled together by
    ``(1 − τ)/(1 − a)``, so the vector still sums to 1 and the others keep their order. Any valid vector whose top
    probability is τ is at least ``2·|a − τ|`` away in L1, which this one attains. When lowering the top to τ would
    let the second class reach it, the top stops just above the tie (by a relative :data:`LABEL_MARGIN`): ``g``
    then moves toward 0.5 without reaching it.

    Returns
    -------
    noisy, distortion
        The changed log-probabilities ``[..., C]`` (float64) and the L1 distance ``‖s' − s‖₁`` per query ``[...]``.
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    n_classes = log_probs.shape[-1]
    is_top, log_top, log_rest = _top_and_rest(log_probs)
    top = np.exp(log_top)
    second = np.exp(np.where(is_top, -np.inf, log_probs).max(-1))
    rest = np.exp(log_rest)
    # the smallest top probability that stays strictly above the rescaled second class
    with np.errstate(divide="ignore", invalid="ignore"):
        tie = np.where(rest > 0, second / (rest + second), 1.0 / n_classes)
    new_top = np.where(top > threshold, np.maximum(threshold, tie * (1.0 + LABEL_MARGIN)), threshold)
    new_top = np.minimum(new_top, np.maximum(top, threshold))  # never beyond the original or the threshold
    with np.errstate(divide="ignore", invalid="ignore"):
        log_scale = np.log1p(-new_top) - log_rest  # others × (1 − new top)/(1 − top)
        uniform = np.log1p(-new_top) - np.log(max(n_classes - 1, 1))  # others all 0: share the mass evenly
        others = np.where((rest > 0)[..., None], log_probs + log_scale[..., None], uniform[..., None])
    noisy = np.where(is_top, np.log(new_top)[..., None], others)
    distortion = 2.0 * np.abs(top - new_top)
    return noisy, distortion


def release_probability(distortion: np.ndarray, budget: float) -> np.ndarray:
    """Phase II: the probability of releasing the noisy vector, ``min(1, ε / d)`` (1 where ``d = 0``), so that
    the expected L1 distortion of every query, ``p · d``, is at most ε."""
    with np.errstate(divide="ignore"):
        return np.where(distortion > budget, budget / np.maximum(distortion, 1e-300), 1.0)


def memguard_problem(params: dict[str, Any], *, task: str | None, n_classes: int | None) -> str | None:
    """Grid-load check (the ``check`` tag): the threshold must exceed ``1 / n_classes``."""
    if n_classes is not None and params["threshold"] <= 1.0 / n_classes:
        return (
            f"threshold={params['threshold']} is at most 1/{n_classes}, below every top probability of a "
            f"{n_classes}-class model; choose a threshold above {1.0 / n_classes:.3g}"
        )
    return None


@DEFENSES.register(
    "memguard",
    description="MemGuard (Jia et al. 2019): label-preserving noise on the probabilities that drives the "
    "defender's membership classifier to 0.5, released with a probability that keeps the expected L1 "
    "distortion within the budget.",
    params=[
        Param("budget", float, 0.5, "ε: bound on the expected L1 distortion of each released probability vector",
              low=0.0, high=2.0, low_inclusive=False),
        Param("threshold", float, 0.75, "top probability at which the defender's classifier answers 0.5",
              low=0.0, high=1.0, low_inclusive=False, high_inclusive=False),
    ],
    tasks=("classification",),
    check=memguard_problem,
)
class MemGuard(Defense):
    """MemGuard's two phases on each query's probability vector.

    Jia, Salem, Backes, Zhang and Gong, "MemGuard: defending against black-box membership inference attacks via
    adversarial examples", ACM CCS 2019. Phase I finds noise that turns the probability vector into an adversarial
    example for the defender's own membership classifier ``g``: ``g`` answers 0.5, the predicted label is
    unchanged and the vector stays a probability distribution. Phase II releases the noisy vector with
    probability ``p = min(1, ε / d)`` (``d`` its L1 distortion) and the original otherwise, so the expected
    distortion of every query is at most ε.

    Parameters
    ----------
    budget
        ε, the bound on the expected L1 distortion per query (the L1 distance between two probability vectors is
        at most 2). The default 0.5 lets a binary model's top probability move anywhere between 0.5 and 1 at the
        default threshold, and lies inside the range of budgets Jia et al. sweep; a single released vector may
        be distorted by more than ε, but then only with probability ε / d.
    threshold
        τ, the top probability at which ``g`` answers 0.5; it must exceed ``1 / n_classes`` (checked when the grid
        loads). The right value depends on the model and the data: sweep it.

    Notes
    -----
    The defender's classifier. In the paper the defender trains ``g`` (a neural network on the sorted confidence
    vector) on the target's outputs on its training members and on a held-out set of non-members. This hook sees
    only the released outputs ``[M, N, C]`` of a batch of queries, not which of them are members, and a
    classifier fitted on each batch would treat the audited records and the population records differently.
    So ``g`` is fixed in advance: the confidence-threshold classifier ``g(s) = σ(logit(max s) − logit(τ))``
    (Salem et al., NDSS 2019; Song and Mittal, USENIX Security 2021), the same function for every model and
    query (:func:`defender_logit`). For it, Phase I has an exact solution (:func:`memguard_noise`: the top
    probability moved to τ, the others rescaled), so no gradient search is needed; with a learned ``g`` Phase I
    would be the paper's iterative search. Against ``g``, every released noisy vector has ``g = 0.5`` unless
    the label would be lost; the attacks of this benchmark read the true class's probability, which equals the
    top one on correctly classified records.

    The randomness of Phase II comes from the ``rng`` of :meth:`release` (seeded per cell). Probabilities below
    float32's range are released as ``-inf``.
    """

    release_only = True

    def __init__(self, budget: float = 0.5, threshold: float = 0.75) -> None:
        super().__init__(budget=budget, threshold=threshold)
        self.budget = budget
        self.threshold = threshold

    def release(self, log_probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy, distortion = memguard_noise(log_probs, self.threshold)
        chosen = rng.random(distortion.shape) < release_probability(distortion, self.budget)
        return np.where(chosen[..., None], noisy, log_probs).astype(log_probs.dtype)
