"""Metric-based attacks of Song & Mittal (USENIX Security 2021), and the stable per-point signals they share.

Song, L. and Mittal, P. "Systematic Evaluation of Privacy Risks of Machine Learning Models", USENIX Security 2021.

Each attack computes a value ``v(x)`` of the target's output (correctness, confidence, −entropy or −modified
entropy; higher = more member-like) and a threshold learned on models whose membership the attacker knows, per
class by default (the paper's class-dependent thresholds): the reference models' outputs on the audited records,
or, in the classic setting, shadow models' outputs on their own shadow records. The thresholds follow the authors'
code (inspire-group/membership-inference-evaluation, ``_thre_setting``): the candidates are the observed values, a
record is flagged when ``v ≥ τ``, and ties go to the first best candidate. The returned score is ``v(x) − τ_{y(x)}``
with decision threshold 0: "score ≥ 0" is exactly the thresholded decision, and the ROC curve compares
class-normalized values.

The statistics here (:func:`entropy`, :func:`modified_entropy`) are shared by the other attack modules; the
true-class signals come from :mod:`attacks.signals`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attacks.base import AttackData, AttackOutput
from attacks.requirements import Release, always
from attacks.roc import balanced_accuracy_has_signal, best_threshold
from attacks.signals import (
    LOG_FLOOR,
    clean_log_probs,
    in_model_chunks,
    true_class_log_probs,
    true_class_loss,
    true_class_mask,
)
from privkernel.registry import ATTACKS, Param

THRESHOLDS_PARAM = Param(
    "thresholds", str, "class",
    "threshold chosen on the references (or shadow models) per class (Song & Mittal) or one for all classes",
    choices=("class", "global"),
)
PLACEMENT_PARAM = Param(
    "placement", str, "observed",
    "observed: the threshold is the best observed reference value (Song & Mittal's code); midpoint: halfway "
    "between it and the next lower value",
    choices=("observed", "midpoint"),
)


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
    on_label = true_class_mask(n_classes, labels)
    log_p_y, log_rest = true_class_log_probs(lp, labels)
    p = np.exp(lp)
    is_top = np.arange(n_classes) == lp.argmax(-1)[..., None]
    log_rest_of_top = np.maximum(logsumexp(np.where(is_top, -np.inf, lp), axis=-1), LOG_FLOOR)
    log_one_minus_p = np.where(is_top, log_rest_of_top[..., None], np.log1p(-np.minimum(p, 0.5)))
    wrong_terms = np.where(on_label, 0.0, p * log_one_minus_p).sum(-1)
    return -np.exp(log_rest) * log_p_y - wrong_terms


def thresholded_scores(
    target_values: np.ndarray,
    reference_values: np.ndarray,
    reference_keep: np.ndarray,
    labels: np.ndarray,
    thresholds: str,
    placement: str = "observed",
    reference_labels: np.ndarray | None = None,
) -> AttackOutput:
    """``v(x) − τ`` with ``τ`` maximising balanced accuracy on the references, per class or global.

    Each ``τ`` follows Song & Mittal's rule (:func:`attacks.roc.best_threshold`): an observed reference value,
    ``>=`` flags a member, exact integer comparison of the accuracies, the first best candidate in the authors'
    order (members' values before non-members', each reference's records in turn). ``v − τ ≥ 0`` holds exactly
    when ``v ≥ τ`` (float subtraction of finite values is zero only for equal values), so the returned
    :attr:`AttackOutput.threshold` ``0`` is the class-wise decision itself.

    Parameters
    ----------
    target_values
        The target's value of each audited point ``[N]`` (higher = more member-like).
    reference_values, reference_keep
        The references' values ``[R, Nr]`` and their membership ``[R, Nr]``: the references' values on the audited
        points (``Nr = N``), or shadow models' on their own shadow records.
    labels
        True classes of the audited points ``[N]``.
    thresholds
        ``"class"``: for each class ``c``, ``τ_c`` is chosen on the reference values of the points of class ``c``;
        a class without both IN and OUT reference points uses the global threshold (counted in
        ``info["classes_global_fallback"]``; the authors' code would leave such a class at its initial threshold
        0). ``"global"``: one ``τ`` for every point.
    placement
        ``"observed"`` (the authors') or ``"midpoint"``: see :func:`attacks.roc.best_threshold`.
    reference_labels
        Classes of the reference points ``[Nr]``; None: ``labels`` (the references saw the audited points).

    Returns
    -------
    AttackOutput
        Scores ``[N]``, threshold 0, the thresholds by class, and ``info`` with the global threshold, the fallback
        count and how many classes had no threshold beating chance.
    """
    keep = np.asarray(reference_keep, dtype=bool)
    labels = np.asarray(labels)
    reference_labels = labels if reference_labels is None else np.asarray(reference_labels)

    def choose(values: np.ndarray, member: np.ndarray) -> tuple[float, bool]:
        tau = best_threshold(values, member, placement)  # candidates: members' values, then non-members'
        return tau, balanced_accuracy_has_signal(values, member, tau)

    tau_global, global_signal = choose(reference_values.ravel(), keep.ravel())
    info: dict[str, float] = {"global_threshold": tau_global, "global_no_signal": int(not global_signal)}
    if thresholds == "global":
        return AttackOutput(target_values - tau_global, info, threshold=0.0)
    classes = np.unique(np.concatenate([labels, reference_labels]))
    taus: dict[int, float] = {}
    fallback = no_signal = 0
    for c in classes:
        in_class = reference_labels == c
        values, member = reference_values[:, in_class].ravel(), keep[:, in_class].ravel()
        if member.all() or not member.any():
            taus[int(c)] = tau_global
            fallback += 1
            continue
        taus[int(c)], signal = choose(values, member)
        no_signal += not signal
    info.update(classes_global_fallback=fallback, classes_no_signal=no_signal, n_classes=len(classes))
    tau_of_point = np.array([taus[int(c)] for c in classes])[np.searchsorted(classes, labels)]
    return AttackOutput(target_values - tau_of_point, info, threshold=0.0, class_thresholds=taus)


def learned_threshold_scores(
    data: AttackData, value: Callable[[np.ndarray, np.ndarray], np.ndarray], thresholds: str, placement: str,
    attack: str,
) -> AttackOutput:
    """Song & Mittal's attack with statistic ``value(outputs, labels)`` (higher = member): thresholds learned on
    the shadow models' records when given, else on the references (:meth:`AttackData.labelled_outputs`), see
    :func:`thresholded_scores`. With neither, the score is the statistic itself, with no threshold: its AUC and TPR
    at low FPR are still measured (``info["thresholds_learned"] = 0``).

    Raises
    ------
    ValueError
        When the outputs to learn on are all IN or all OUT.
    """
    learn = data.labelled_outputs()
    if learn is None:
        return AttackOutput(value(data.target, data.labels), {"thresholds_learned": 0})
    if learn.keep.all() or not learn.keep.any():
        raise ValueError(
            f"attack {attack!r} learns its thresholds on the {learn.source}' records and needs both members and "
            "non-members among them; use a membership split where each model has both"
        )
    out = thresholded_scores(value(data.target, data.labels), in_model_chunks(value, learn.outputs, learn.labels),
                             learn.keep, data.labels, thresholds, placement, reference_labels=learn.labels)
    out.info["thresholds_learned"] = 1
    return out


@ATTACKS.register(
    "correctness",
    description="Member iff the target predicts the true class (Song & Mittal 2021; Yeom et al. 2018).",
    version=2,
    requires=always(Release("labels")),
    tasks=("classification",),
)
def correctness_attack(data: AttackData) -> AttackOutput:
    """Score ``1[argmax_i p_i(x) = y]``: members are more often classified correctly.

    Song & Mittal (USENIX Security 2021), Sec. 3.1 (prediction correctness): a record is a member when the target
    classifies it correctly (decision threshold 1), so the attack accuracy is ``½ (train acc + 1 − test acc)`` as
    in the authors' code. Needs no references; the score takes only the values 0 and 1.
    """
    predicted = np.asarray(data.target).argmax(-1)
    return AttackOutput((predicted == np.asarray(data.labels)).astype(np.float64), {"thresholds_learned": 0},
                        threshold=1.0)


@ATTACKS.register(
    "confidence",
    description="Confidence p_y of the target in the true class, thresholded per class on the references "
    "(Song & Mittal 2021).",
    params=[THRESHOLDS_PARAM, PLACEMENT_PARAM],
    version=2,
    requires=always(Release("probabilities")),
    tasks=("classification",),
)
def confidence_attack(data: AttackData, thresholds: str = "class", placement: str = "observed") -> AttackOutput:
    """Score ``p_y(x) − τ_y``: members get higher confidence in their true class.

    Song & Mittal (USENIX Security 2021), Sec. 3.2, with class-dependent thresholds ``τ_c`` chosen on the
    reference models to maximise balanced accuracy (see :func:`thresholded_scores`). ``p_y`` is
    ``exp(−true_class_loss)``; in float64 it cannot separate points with ``Σ_{j≠y} p_j < 1e−16`` (use
    ``loss`` for a log-scale ranking).
    """
    return learned_threshold_scores(data, confidence, thresholds, placement, "confidence")


@ATTACKS.register(
    "entropy",
    description="Negative prediction entropy of the target, thresholded per class on the references "
    "(Song & Mittal 2021).",
    params=[THRESHOLDS_PARAM, PLACEMENT_PARAM],
    version=2,
    requires=always(Release("probabilities")),
    tasks=("classification",),
)
def entropy_attack(data: AttackData, thresholds: str = "class", placement: str = "observed") -> AttackOutput:
    """Score ``−H(p(x)) − τ_y`` with ``H(p) = −Σ_i p_i log p_i``: members get lower-entropy predictions.

    Song & Mittal (USENIX Security 2021), Sec. 3.2 (prediction entropy); class-dependent thresholds as in
    :func:`thresholded_scores`.
    """
    return learned_threshold_scores(data, lambda lp, y: -entropy(lp), thresholds, placement, "entropy")


@ATTACKS.register(
    "modified_entropy",
    description="Negative modified entropy Mentr of the target, thresholded per class on the references "
    "(Song & Mittal 2021).",
    params=[THRESHOLDS_PARAM, PLACEMENT_PARAM],
    version=2,
    requires=always(Release("probabilities")),
    tasks=("classification",),
)
def modified_entropy_attack(
    data: AttackData, thresholds: str = "class", placement: str = "observed"
) -> AttackOutput:
    """Score ``−Mentr(p(x), y) − τ_y`` with ``Mentr(p, y) = −(1−p_y) log p_y − Σ_{i≠y} p_i log(1−p_i)``.

    Song & Mittal (USENIX Security 2021), Sec. 3.2 (modified prediction entropy): unlike the entropy it is
    monotone decreasing in ``p_y`` and increasing in every wrong ``p_i``. See :func:`modified_entropy` for the
    stable computation and :func:`thresholded_scores` for the thresholds.
    """
    return learned_threshold_scores(data, lambda lp, y: -modified_entropy(lp, y), thresholds, placement,
                                    "modified_entropy")
