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


def best_threshold(scores: np.ndarray, membership: np.ndarray, placement: str = "observed") -> float:
    """The threshold that maximises balanced accuracy on (reference) scores with known membership, by Song &
    Mittal's rule (their code's ``_thre_setting``, inspire-group/membership-inference-evaluation).

    The candidates are the observed scores, members' first and then non-members', each in array order. A record is
    flagged when its score is ``>=`` the threshold; candidate ``τ`` has balanced accuracy
    ``½ (TP(τ)/n_in + TN(τ)/n_out)`` with ``TP(τ) = #{members ≥ τ}``, ``TN(τ) = #{non-members < τ}``. Accuracies
    are compared as the exact integers ``TP(τ) n_out + TN(τ) n_in``, and the first candidate that reaches the
    maximum wins (the authors keep a candidate only when it is strictly better), so ties are decided by that order
    and never by float rounding. As in the authors' rule, the threshold is always an observed score: when nothing
    beats chance (balanced accuracy ½), it is the first candidate at ½.

    Parameters
    ----------
    scores, membership
        Scores ``[n]`` (higher = member) and membership ``[n]``.
    placement
        ``"observed"``: the chosen score itself (the authors'). ``"midpoint"``: halfway between it and the next
        lower observed score (if any), which transfers the same decision to new scores without favouring exact
        ties with the references'.
    """
    scores, membership = check_scores(scores, membership)
    members, non_members = scores[membership], scores[~membership]
    n_in, n_out = len(members), len(non_members)
    candidates = np.concatenate([members, non_members])
    tp = n_in - np.searchsorted(np.sort(members), candidates, side="left")
    tn = np.searchsorted(np.sort(non_members), candidates, side="left")
    accuracy = tp.astype(np.int64) * n_out + tn.astype(np.int64) * n_in
    tau = float(candidates[int(np.argmax(accuracy))])  # argmax: the first of equal integers
    if placement == "midpoint":
        lower = scores[scores < tau]
        return float((tau + lower.max()) / 2) if lower.size else tau
    if placement != "observed":
        raise ValueError(f"placement {placement!r} must be 'observed' or 'midpoint'")
    return tau


def balanced_accuracy_has_signal(scores: np.ndarray, membership: np.ndarray, threshold: float) -> bool:
    """Whether the rule "member if score >= threshold" beats chance (balanced accuracy above ½) on these scores,
    compared in exact integer counts."""
    scores, membership = check_scores(scores, membership)
    flagged = scores >= threshold
    n_in, n_out = int(membership.sum()), int((~membership).sum())
    return int(flagged[membership].sum()) * n_out + int((~flagged[~membership]).sum()) * n_in > n_in * n_out
