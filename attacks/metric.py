"""Metric-based attacks of Song & Mittal (USENIX Security 2021), and the stable per-point signals they share.

Song, L. and Mittal, P. "Systematic Evaluation of Privacy Risks of Machine Learning Models", USENIX Security 2021.

Each attack computes a value ``v(x)`` of the target's output (correctness, confidence, −entropy or −modified
entropy; higher = more member-like) and a threshold chosen on the reference models, per class by default
(the paper's class-dependent thresholds). The returned score is ``v(x) − τ_{y(x)}``: "score ≥ 0" is exactly the
thresholded decision, and the ROC curve compares class-normalized values.

The helpers here (:func:`clean_log_probs`, :func:`true_class_log_probs`, :func:`entropy`,
:func:`modified_entropy`) are shared by the other attack modules.
"""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData, AttackOutput, true_class_loss
from attacks.requirements import Release, always
from attacks.roc import best_threshold
from privkernel.registry import ATTACKS, Param

#: Floor of a released log-probability: log of the smallest positive float32 (≈ −103.3). A release may hold
#: exact zeros (rounding, top-k, label-only defenses); flooring them keeps every signal finite while leaving
#: any probability a float32 softmax can produce unchanged.
LOG_FLOOR = float(np.log(np.finfo(np.float32).smallest_subnormal))

THRESHOLDS_PARAM = Param(
    "thresholds", str, "class",
    "threshold chosen on the references per class (Song & Mittal) or one for all classes",
    choices=("class", "global"),
)


def clean_log_probs(log_probs: np.ndarray) -> np.ndarray:
    """Released log-probabilities as float64, clipped to ``[LOG_FLOOR, 0]`` (−inf becomes ``LOG_FLOOR``)."""
    return np.clip(np.asarray(log_probs, dtype=np.float64), LOG_FLOOR, 0.0)


def _on_label(n_classes: int, labels: np.ndarray) -> np.ndarray:
    """Boolean mask ``[N, C]`` of each point's true class (broadcasts against ``[..., N, C]``)."""
    return np.arange(n_classes) == np.asarray(labels)[:, None]


def true_class_log_probs(log_probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log p_y`` and ``log(1 − p_y)`` of each point, both accurate to the release's precision.

    ``log p_y`` is ``−true_class_loss`` (exact also where ``p_y`` rounds to 1); ``log(1 − p_y)`` is
    ``log Σ_{j≠y} p_j`` computed by a log-sum-exp over the other classes, never from ``1 − p_y``.
    Both are floored at :data:`LOG_FLOOR` so that degenerate releases (one class, one-hot) stay finite.

    Parameters
    ----------
    log_probs
        Released log-probabilities ``[..., N, C]``.
    labels
        True classes ``[N]``.
    """
    from scipy.special import logsumexp

    lp = clean_log_probs(log_probs)
    on_label = _on_label(lp.shape[-1], labels)
    log_p_y = np.maximum(-true_class_loss(lp, labels), LOG_FLOOR)
    log_rest = np.maximum(logsumexp(np.where(on_label, -np.inf, lp), axis=-1), LOG_FLOOR)
    return log_p_y, log_rest


def confidence(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Probability ``p_y`` of the true class, ``exp(−true_class_loss)`` of the cleaned release."""
    return np.exp(-true_class_loss(clean_log_probs(log_probs), labels))


def entropy(log_probs: np.ndarray) -> np.ndarray:
    """Shannon entropy ``−Σ_i p_i log p_i`` (nats) of each output ``[..., N, C]`` → ``[..., N]``."""
    lp = clean_log_probs(log_probs)
    return -(np.exp(lp) * lp).sum(-1)


def modified_entropy(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal's modified entropy ``Mentr(p, y) = −(1−p_y) log p_y − Σ_{i≠y} p_i log(1−p_i)``.

    It is 0 for a confident correct prediction and grows without bound for a confident wrong one (unlike
    the entropy, it knows the label). Computed stably: ``1 − p_y`` and ``log p_y`` come from
    :func:`true_class_log_probs`; for ``i ≠ y``, ``log(1 − p_i) = log1p(−p_i)`` except for the most likely
    class, whose ``p_i`` may be close to 1 and which uses ``log Σ_{j≠i} p_j`` instead (every other class has
    ``p_i ≤ 1/2``, where ``log1p`` is exact).

    Parameters
    ----------
    log_probs
        Released log-probabilities ``[..., N, C]``.
    labels
        True classes ``[N]``.
    """
    from scipy.special import logsumexp

    lp = clean_log_probs(log_probs)
    n_classes = lp.shape[-1]
    on_label = _on_label(n_classes, labels)
    log_p_y, log_rest = true_class_log_probs(lp, labels)
    p = np.exp(lp)
    is_top = np.arange(n_classes) == lp.argmax(-1)[..., None]
    log_rest_of_top = np.maximum(logsumexp(np.where(is_top, -np.inf, lp), axis=-1), LOG_FLOOR)
    log_one_minus_p = np.where(is_top, log_rest_of_top[..., None], np.log1p(-np.minimum(p, 0.5)))
    wrong_terms = np.where(on_label, 0.0, p * log_one_minus_p).sum(-1)
    return -np.exp(log_rest) * log_p_y - wrong_terms


def _require_references(data: AttackData, attack: str) -> None:
    if data.n_references == 0:
        raise ValueError(
            f"attack {attack!r} needs reference models to choose its threshold; "
            "run it with at least 2 models (protocol.n_models >= 2)"
        )
    keep = np.asarray(data.reference_keep, dtype=bool)
    if keep.all() or not keep.any():
        raise ValueError(
            f"attack {attack!r} needs both IN and OUT points among the reference models; "
            "use a membership split where each point is IN for some models and OUT for others"
        )


def _threshold(values: np.ndarray, membership: np.ndarray) -> tuple[float, bool]:
    """Balanced-accuracy threshold of ``attacks.roc.best_threshold`` and whether it has any signal.

    Where no threshold beats chance, ``best_threshold`` answers ``+inf`` ("nobody is a member"); the same
    decision on the references is kept, with finite scores, by the smallest float above every value.
    """
    tau = best_threshold(values, membership)
    if np.isinf(tau):
        return float(np.nextafter(values.max(), np.inf)), False
    return tau, True


def thresholded_scores(
    target_values: np.ndarray,
    reference_values: np.ndarray,
    reference_keep: np.ndarray,
    labels: np.ndarray,
    thresholds: str,
) -> AttackOutput:
    """``v(x) − τ`` with ``τ`` maximising balanced accuracy on the references, per class or global.

    Parameters
    ----------
    target_values
        The target's value of each pool point ``[N]`` (higher = more member-like).
    reference_values, reference_keep
        The references' values ``[R, N]`` and their membership ``[R, N]``.
    labels
        True classes ``[N]``.
    thresholds
        ``"class"``: for each class ``c``, ``τ_c`` is chosen on all ``R`` references' values of the pool points
        of class ``c``; a class without both IN and OUT reference points uses the global threshold (counted in
        ``info["classes_global_fallback"]``). ``"global"``: one ``τ`` for every point.

    Returns
    -------
    AttackOutput
        Scores ``[N]`` and ``info`` with the global threshold and the fallback counts.
    """
    keep = np.asarray(reference_keep, dtype=bool)
    labels = np.asarray(labels)
    tau_global, global_signal = _threshold(reference_values.ravel(), keep.ravel())
    info: dict[str, float] = {"global_threshold": tau_global, "global_no_signal": int(not global_signal)}
    if thresholds == "global":
        return AttackOutput(target_values - tau_global, info)
    classes, class_index = np.unique(labels, return_inverse=True)
    taus = np.empty(len(classes))
    fallback = no_signal = 0
    for i in range(len(classes)):
        in_class = class_index == i
        values, member = reference_values[:, in_class].ravel(), keep[:, in_class].ravel()
        if member.all() or not member.any():
            taus[i] = tau_global
            fallback += 1
            continue
        taus[i], signal = _threshold(values, member)
        no_signal += not signal
    info.update(classes_global_fallback=fallback, classes_no_signal=no_signal, n_classes=len(classes))
    return AttackOutput(target_values - taus[class_index], info)


def _metric_attack(data: AttackData, name: str, value, thresholds: str) -> AttackOutput:
    _require_references(data, name)
    return thresholded_scores(
        value(data.target), value(data.references), data.reference_keep, data.labels, thresholds
    )


@ATTACKS.register(
    "correctness",
    description="Member iff the target predicts the true class (Song & Mittal 2021; Yeom et al. 2018).",
    requires=always(Release("labels")),
    tasks=("classification",),
)
def correctness_attack(data: AttackData) -> np.ndarray:
    """Score ``1[argmax_i p_i(x) = y]``: members are more often classified correctly.

    Song & Mittal (USENIX Security 2021), Sec. 3.1 (prediction correctness). Needs no references; the
    score takes only the values 0 and 1.
    """
    predicted = np.asarray(data.target).argmax(-1)
    return (predicted == np.asarray(data.labels)).astype(np.float64)


@ATTACKS.register(
    "confidence",
    description="Confidence p_y of the target in the true class, thresholded per class on the references "
    "(Song & Mittal 2021).",
    params=[THRESHOLDS_PARAM],
    requires=always(Release("probabilities")),
    tasks=("classification",),
)
def confidence_attack(data: AttackData, thresholds: str = "class") -> AttackOutput:
    """Score ``p_y(x) − τ_y``: members get higher confidence in their true class.

    Song & Mittal (USENIX Security 2021), Sec. 3.2, with class-dependent thresholds ``τ_c`` chosen on the
    reference models to maximise balanced accuracy (see :func:`thresholded_scores`). ``p_y`` is
    ``exp(−true_class_loss)``; in float64 it cannot separate points with ``Σ_{j≠y} p_j < 1e−16`` (use
    ``loss`` for a log-scale ranking).
    """
    return _metric_attack(data, "confidence", lambda lp: confidence(lp, data.labels), thresholds)


@ATTACKS.register(
    "entropy",
    description="Negative prediction entropy of the target, thresholded per class on the references "
    "(Song & Mittal 2021).",
    params=[THRESHOLDS_PARAM],
    requires=always(Release("probabilities")),
    tasks=("classification",),
)
def entropy_attack(data: AttackData, thresholds: str = "class") -> AttackOutput:
    """Score ``−H(p(x)) − τ_y`` with ``H(p) = −Σ_i p_i log p_i``: members get lower-entropy predictions.

    Song & Mittal (USENIX Security 2021), Sec. 3.2 (prediction entropy); class-dependent thresholds as in
    :func:`thresholded_scores`.
    """
    return _metric_attack(data, "entropy", lambda lp: -entropy(lp), thresholds)


@ATTACKS.register(
    "modified_entropy",
    description="Negative modified entropy Mentr of the target, thresholded per class on the references "
    "(Song & Mittal 2021).",
    params=[THRESHOLDS_PARAM],
    requires=always(Release("probabilities")),
    tasks=("classification",),
)
def modified_entropy_attack(data: AttackData, thresholds: str = "class") -> AttackOutput:
    """Score ``−Mentr(p(x), y) − τ_y`` with ``Mentr(p, y) = −(1−p_y) log p_y − Σ_{i≠y} p_i log(1−p_i)``.

    Song & Mittal (USENIX Security 2021), Sec. 3.2 (modified prediction entropy): unlike the entropy it is
    monotone decreasing in ``p_y`` and increasing in every wrong ``p_i``. See :func:`modified_entropy` for the
    stable computation and :func:`thresholded_scores` for the thresholds.
    """
    return _metric_attack(data, "modified_entropy", lambda lp: -modified_entropy(lp, data.labels), thresholds)
