"""Membership-inference metrics on attack scores (higher score = more likely a member).

A point is predicted a member when its score is at least the threshold. The ROC curve runs over every
distinct score used as a threshold, from "nobody is a member" (FPR = TPR = 0) to "everybody is".
Tied scores move together, so a member tied with a non-member is never separated from it.

The utility of the audited models (accuracy and ROC-AUC, or R² and MAE for regression; :data:`UTILITY`) is
measured here too, so that the pipeline only runs stages and every number of the store has one home.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks.roc import (  # noqa: F401  (the metrics' API)
    auc,
    best_threshold,
    check_scores,
    roc_curve,
    tpr_at_fpr,
    trapezoid,
)

#: The false-positive rates at which the store reports the TPR (LiRA's argument: low-FPR power matters).
FPR_LEVELS: dict[str, float] = {"tpr_at_fpr_0": 0.0, "tpr_at_fpr_0.1pct": 0.001, "tpr_at_fpr_1pct": 0.01}


def balanced_accuracy(scores: np.ndarray, membership: np.ndarray, threshold: float) -> float:
    """Mean of the TPR and the TNR of the rule "member if score >= threshold" (NaN for a NaN threshold: no rule
    was learned)."""
    scores, membership = check_scores(scores, membership)
    if np.isnan(threshold):
        return float("nan")
    predicted = scores >= threshold
    return float((predicted[membership].mean() + (~predicted[~membership]).mean()) / 2)


@dataclass(frozen=True)
class AttackMetrics:
    """The store's metric columns for one attack on one target."""

    auc: float
    balanced_accuracy: float
    threshold: float
    tprs: dict[str, float]
    n_members: int
    n_nonmembers: int

    def as_row(self) -> dict[str, float]:
        return {
            "auc": self.auc,
            "balanced_accuracy": self.balanced_accuracy,
            "threshold": self.threshold,
            **self.tprs,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            # below this FPR the audit set cannot resolve a rate: TPR at smaller FPRs equals TPR at 0
            "min_resolvable_fpr": 1.0 / self.n_nonmembers,
        }


def roc_summary(scores: np.ndarray, membership: np.ndarray) -> tuple[dict[str, float], float]:
    """The TPR at each of :data:`FPR_LEVELS` (by store column name) and the AUC of one audit."""
    fpr, tpr, _ = roc_curve(scores, membership)
    tprs = {name: float(tpr[fpr <= level + 1e-12].max()) for name, level in FPR_LEVELS.items()}
    return tprs, float(trapezoid(tpr, fpr))


def attack_metrics(scores: np.ndarray, membership: np.ndarray, threshold: float) -> AttackMetrics:
    """Every metric of one target's scores; ``threshold`` was chosen on the reference models."""
    scores, membership = check_scores(scores, membership)
    tprs, area = roc_summary(scores, membership)
    return AttackMetrics(
        auc=area,
        balanced_accuracy=balanced_accuracy(scores, membership, threshold),
        threshold=threshold,
        tprs=tprs,
        n_members=int(membership.sum()),
        n_nonmembers=int((~membership).sum()),
    )


#: Prefix of the metrics measured on a target's calibration audits (:func:`calibration_metrics`).
CALIBRATION = "calibration_"


def calibration_metrics(
    scores: np.ndarray, membership: np.ndarray, evaluated: np.ndarray | None = None,
    selected: np.ndarray | None = None,
) -> dict[str, float]:
    """The TPR at each of :data:`FPR_LEVELS` and the AUC of ``k`` audits, each measured on its own audit and then
    averaged over the audits: ``calibration_tpr_at_fpr_0.1pct``, ..., ``calibration_auc``.

    Parameters
    ----------
    scores, membership
        ``[k, N]``: the attack's scores of the records when each of ``k`` calibration models is audited in the
        target's place, and each model's membership of them.
    evaluated
        ``[k, N]``: the records each audit is scored on (None: all), so that records leaked to the attacker take
        no part, as on the target.
    selected
        ``[k]``: the audits that take part (None: all); every value is NaN when none does.

    Notes
    -----
    For audit ``j`` with members ``P_j`` and non-members ``Q_j`` (the evaluated records only),
    ``TPR_j(α) = max {TPR_j(τ) : FPR_j(τ) ≤ α}`` over the thresholds ``τ`` of :func:`roc_curve`, and the reported
    value is ``(1/k) Σ_j TPR_j(α)``; likewise for the AUC. Each audit keeps its own threshold: the scores of
    different models are not pooled into one ROC curve, so the values are on the same footing as the target's
    (one audit per row). These are the attacker's own measurements, made without the target's membership.
    """
    scores, membership = np.asarray(scores, dtype=np.float64), np.asarray(membership, dtype=bool)
    evaluated = np.ones(scores.shape, dtype=bool) if evaluated is None else np.asarray(evaluated, dtype=bool)
    selected = np.ones(len(scores), dtype=bool) if selected is None else np.asarray(selected, dtype=bool)
    names = [*FPR_LEVELS, "auc"]
    per_audit = []
    for s, m, e in zip(scores[selected], membership[selected], evaluated[selected], strict=True):
        tprs, area = roc_summary(s[e], m[e])
        per_audit.append([*(tprs[name] for name in FPR_LEVELS), area])
    means = np.mean(per_audit, axis=0) if per_audit else np.full(len(names), np.nan)
    return {f"{CALIBRATION}{name}": float(value) for name, value in zip(names, means, strict=True)}


# --- utility of the models ---------------------------------------------------------------------------------


def classification_utility(
    pool: np.ndarray, y_pool: np.ndarray, keep: np.ndarray, test: np.ndarray, y_test: np.ndarray
) -> dict[str, np.ndarray]:
    """Per model: accuracy on its own training members and on the test set, and the test ROC-AUC (binary)."""
    pool_correct = pool.argmax(-1) == y_pool
    return {
        "train_accuracy": (pool_correct & keep).sum(1) / keep.sum(1),
        "test_accuracy": (test.argmax(-1) == y_test).mean(1),
        "test_roc_auc": roc_auc_per_model(test, y_test),
    }


def r2(predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficient of determination of predictions ``[..., N]``: 1 − SSE / SST."""
    return 1 - ((predictions - y) ** 2).sum(-1) / ((y - y.mean()) ** 2).sum()


def regression_utility(
    pool: np.ndarray, y_pool: np.ndarray, keep: np.ndarray, test: np.ndarray, y_test: np.ndarray
) -> dict[str, np.ndarray]:
    """Per model: R² on its own training members and on the test set, and the test mean absolute error."""
    pool, test = pool[..., 0].astype(np.float64), test[..., 0].astype(np.float64)
    train = np.array([r2(p[k], y_pool[k]) for p, k in zip(pool, keep, strict=True)])
    return {"train_r2": train, "test_r2": r2(test, y_test), "test_mae": np.abs(test - y_test).mean(-1)}


UTILITY = {"classification": classification_utility, "regression": regression_utility}


def roc_auc_per_model(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each model's ROC-AUC on a binary task: how well its probability of class 1 ranks the true class-1 records
    above the others ``[M]``; NaN for more than two classes or a test set with one class."""
    if log_probs.shape[-1] != 2 or len(np.unique(labels)) != 2:
        return np.full(len(log_probs), np.nan)
    return np.array([auc(model[:, 1], labels == 1) for model in log_probs])


# --- uncertainty, empirical privacy, per-class slices ------------------------------------------------------


def bootstrap_ci(values: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (one value per target model)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def clopper_pearson(successes: np.ndarray, trials: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided ``1 - alpha`` binomial confidence interval (Clopper & Pearson 1934)."""
    from scipy.stats import beta

    k, n = np.asarray(successes, dtype=np.float64), np.asarray(trials, dtype=np.float64)
    low = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
    high = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return low, high


def epsilon_lower_bound(
    tp: np.ndarray, n_members: int, fp: np.ndarray, n_nonmembers: int, delta: float = 1e-5, alpha: float = 0.05
) -> np.ndarray:
    """Lower bound on ε that an attack with these counts proves, with confidence ``1 - alpha``.

    An (ε, δ)-DP mechanism forces every membership test to satisfy TPR ≤ e^ε·FPR + δ and
    1 − FPR ≤ e^ε·(1 − TPR) + δ (Kairouz et al. 2015), hence
    ε ≥ max(log((TPR − δ)/FPR), log((1 − FPR − δ)/(1 − TPR))). The rates are replaced by their Clopper–Pearson
    bounds (TPR low, FPR high) so the bound holds with the stated confidence (Jagielski et al. 2020).
    Returns 0 where the counts prove nothing.
    """
    tpr_low, _ = clopper_pearson(tp, np.full_like(np.asarray(tp, dtype=float), n_members), alpha)
    _, fpr_high = clopper_pearson(fp, np.full_like(np.asarray(fp, dtype=float), n_nonmembers), alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(np.maximum(tpr_low - delta, 0) / fpr_high)
        second = np.log(np.maximum(1 - fpr_high - delta, 0) / (1 - tpr_low))
    bound = np.nan_to_num(np.maximum(first, second), nan=0.0, posinf=0.0, neginf=0.0)
    return np.maximum(bound, 0.0)


def epsilon_threshold(scores: np.ndarray, membership: np.ndarray, delta: float = 1e-5) -> float:
    """The threshold at which reference audits prove the largest ε (to be reused on the target)."""
    fpr, tpr, thresholds = roc_curve(scores, membership)
    n_pos, n_neg = int(np.sum(membership)), int(np.size(membership) - np.sum(membership))
    bounds = epsilon_lower_bound(np.round(tpr * n_pos), n_pos, np.round(fpr * n_neg), n_neg, delta)
    return float(thresholds[int(np.argmax(bounds))])


def epsilon_at_threshold(scores: np.ndarray, membership: np.ndarray, threshold: float, delta: float = 1e-5) -> float:
    """The ε lower bound proven by the rule "member if score >= threshold" on a target's audit."""
    scores, membership = check_scores(scores, membership)
    flagged = scores >= threshold
    return float(epsilon_lower_bound(
        np.array([flagged[membership].sum()]), int(membership.sum()),
        np.array([flagged[~membership].sum()]), int((~membership).sum()), delta,
    )[0])


#: A class is a minority when its share of the audited records is below this fraction of the uniform share 1/C:
#: in a balanced set (Fashion-MNIST's 10 classes of 9.4 to 10.4 % of a pool) sampling noise puts half the classes
#: just under 1/C, and none of them is a minority.
MINORITY_SHARE = 0.8


def per_class_metrics(scores: np.ndarray, membership: np.ndarray, labels: np.ndarray) -> list[dict[str, float]]:
    """AUC and TPR at FPR = 0 of each class's records, with class sizes; a class whose share of the audited
    records is below :data:`MINORITY_SHARE` × 1/C is flagged as a minority class."""
    scores, membership = check_scores(scores, membership)
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    out = []
    for cls, count in zip(classes, counts, strict=True):
        sel = labels == cls
        both = 0 < membership[sel].sum() < sel.sum()
        out.append({
            "label": cls.item(),
            "n": int(count),
            "n_members": int(membership[sel].sum()),
            "share": float(count / len(labels)),
            "minority": bool(count / len(labels) < MINORITY_SHARE / len(classes)),
            "auc": auc(scores[sel], membership[sel]) if both else float("nan"),
            "tpr_at_fpr_0": tpr_at_fpr(scores[sel], membership[sel], 0.0) if both else float("nan"),
        })
    return out
