"""ROC curves of attack scores (higher score = more likely a member), and the thresholds attacks learn on them.

A point is predicted a member when its score is at least the threshold. The ROC curve runs over every
distinct score used as a threshold, from "nobody is a member" (FPR = TPR = 0) to "everybody is".
Tied scores move together, so a member tied with a non-member is never separated from it.

These are the attacks' own instruments (a threshold learned on reference models, RMIA's tuning by AUC) as
well as the harness's metrics: ``bench.metrics`` builds on them.
"""

from __future__ import annotations

import numpy as np

#: ``np.trapezoid`` (NumPy >= 2.0, which deprecates ``np.trapz``), or ``np.trapz`` on NumPy 1.26 (the floor).
trapezoid = getattr(np, "trapezoid", None) or np.trapz


def check_scores(scores: np.ndarray, membership: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``scores`` as float64 and ``membership`` as bool, or ``ValueError`` unless they are equal 1-d shapes without
    NaN and with both members and non-members."""
    scores = np.asarray(scores, dtype=np.float64)
    membership = np.asarray(membership, dtype=bool)
    if scores.shape != membership.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and membership {membership.shape} must be equal 1-d shapes")
    if np.isnan(scores).any():
        raise ValueError("attack scores contain NaN")
    if membership.all() or not membership.any():
        raise ValueError("membership must contain both members and non-members")
    return scores, membership


def roc_curve(scores: np.ndarray, membership: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold.

    Returns
    -------
    fpr, tpr, thresholds
        ``thresholds`` decrease, starting at ``+inf`` (no point flagged); point ``i`` is the rule
        "member if score >= thresholds[i]".
    """
    scores, membership = check_scores(scores, membership)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_members = scores[order], membership[order]
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    tp = np.cumsum(sorted_members)[last_of_tie]
    fp = np.cumsum(~sorted_members)[last_of_tie]
    tpr = np.r_[0.0, tp / membership.sum()]
    fpr = np.r_[0.0, fp / (~membership).sum()]
    thresholds = np.r_[np.inf, sorted_scores[last_of_tie]]
    return fpr, tpr, thresholds


def auc(scores: np.ndarray, membership: np.ndarray) -> float:
    """Area under the ROC curve: P(member score > non-member score) + 0.5 P(tie)."""
    fpr, tpr, _ = roc_curve(scores, membership)
    return float(trapezoid(tpr, fpr))


def tpr_at_fpr(scores: np.ndarray, membership: np.ndarray, max_fpr: float) -> float:
    """The highest TPR of any threshold whose FPR is at most ``max_fpr``.

    At ``max_fpr = 0`` this is the fraction of members scored strictly above every non-member.
    """
    fpr, tpr, _ = roc_curve(scores, membership)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def best_threshold(scores: np.ndarray, membership: np.ndarray) -> float:
    """The threshold that maximises balanced accuracy on (reference) scores with known membership.

    Among equally good thresholds the midpoint between the chosen score and the next lower one is
    returned, so that the rule transfers to new scores without favouring exact ties.
    """
    fpr, tpr, thresholds = roc_curve(scores, membership)
    i = int(np.argmax(tpr - fpr))
    if i == 0:
        return float(np.inf)
    if i + 1 < len(thresholds):
        return float((thresholds[i] + thresholds[i + 1]) / 2)
    return float(thresholds[i])
