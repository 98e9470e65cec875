"""The Likelihood Ratio Attack, LiRA (Carlini et al., IEEE S&P 2022).

Carlini, N., Chien, S., Nasr, M., Song, S., Terzis, A. and Tramèr, F. "Membership Inference Attacks From
First Principles", IEEE Symposium on Security and Privacy 2022.
"""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData, AttackOutput
from attacks.requirements import Release, always
from attacks.signals import true_class_log_probs
from privkernel.registry import ATTACKS, Param


def log_odds(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence ``φ = log(p_y / (1 − p_y)) = log p_y − log Σ_{j≠y} p_j``.

    Both terms come from :func:`attacks.signals.true_class_log_probs`, so ``φ`` stays accurate where ``p_y``
    rounds to 1 or to 0; it is bounded by ``±LOG_FLOOR`` (≈ ±103) for degenerate releases.
    """
    log_p_y, log_rest = true_class_log_probs(log_probs, labels)
    return log_p_y - log_rest


def confidence_statistics(data: AttackData, attack: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LiRA's statistic ``φ`` of the target ``[N]`` and of the references ``[R, N]``, and the references'
    membership ``[R, N]``: the logit-scaled confidence (:func:`log_odds`), or ``−|ŷ − y|`` for regression (members are
    fitted closer; Gupta et al. 2021). Shared by the attacks that model ``φ`` per example (LiRA, BaVarIA).

    Raises
    ------
    ValueError
        Without references, or when every reference was trained on every pool point (no OUT value).
    """
    data.require_references(attack)
    keep = np.asarray(data.reference_keep, dtype=bool)
    if keep.all():
        raise ValueError(
            f"attack {attack!r} needs OUT reference values, but every reference was trained on every pool point; "
            "use a membership split where each point is OUT for some models"
        )
    if data.task == "regression":
        residual_t, residual_r = data.residuals()
        return -np.abs(residual_t), -np.abs(residual_r), keep
    (log_p_t, log_rest_t), (log_p_r, log_rest_r) = data.true_class("target"), data.true_class("references")
    return log_p_t - log_rest_t, log_p_r - log_rest_r, keep  # log_odds, from the audit's shared signals


def equal_count_masks(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Select the same number of IN and of OUT references for every point.

    When every pool point is IN for exactly half of all models (``targets.membership``, as in Carlini et
    al.), leaving the target out of the references leaves a member with one IN reference fewer and one OUT
    reference more than a non-member: the counts alone reveal the target's membership, and any statistic
    whose distribution depends on the sample size (a fitted variance, the log of a mean) leaks it. Keeping
    the first ``k_in`` IN and ``k_out`` OUT references of every point (in reference order), where ``k`` is
    the smallest non-zero count over the points, removes that leak (Carlini et al.'s code truncates to
    equal counts in the same way). Points without any IN (OUT) reference keep none.

    Returns
    -------
    in_mask, out_mask, k_in, k_out
        The selected references ``[R, N]`` and the counts kept.
    """
    keep = np.asarray(keep, dtype=bool)
    masks, ks = [], []
    for side in (keep, ~keep):
        count = side.sum(0)
        k = int(count[count > 0].min()) if (count > 0).any() else 0
        masks.append(side & (np.cumsum(side, axis=0) <= k))
        ks.append(k)
    return masks[0], masks[1], ks[0], ks[1]


def _gaussian_fit(phi: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-example mean and unbiased variance of ``phi[R, N]`` over the rows where ``mask``, and global ones.

    The global variance is the pooled within-example variance ``Σ_n Σ_r (φ_rn − μ_n)² / Σ_n (k_n − 1)`` over
    the examples with ``k_n ≥ 2`` values (every example shares one noise level, as in LiRA's fixed-variance
    variant, but the spread of the per-example means is not counted as noise). Where no example has two
    values, it is the variance of all values; with fewer than two values it is NaN (the floor applies).
    """
    count = mask.sum(0)
    total = np.where(mask, phi, 0.0).sum(0)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    squares = np.where(mask, (phi - np.where(count > 0, mean, 0.0)) ** 2, 0.0).sum(0)
    var = np.where(count >= 2, squares / np.maximum(count - 1, 1), np.nan)
    several = count >= 2
    values = phi[mask]
    if several.any():
        global_var = float(squares[several].sum() / (count[several] - 1).sum())
    elif values.size >= 2:
        global_var = float(values.var(ddof=1))
    else:
        global_var = float("nan")
    global_mean = float(values.mean()) if values.size else float("nan")
    return {"count": count, "mean": mean, "var": var, "global_mean": global_mean, "global_var": global_var}


def _std(var: np.ndarray | float, min_std: float) -> np.ndarray:
    return np.maximum(np.sqrt(np.nan_to_num(var, nan=0.0)), min_std)


@ATTACKS.register(
    "lira",
    description="Likelihood ratio of the target's logit confidence under Gaussians fitted to IN and OUT "
    "reference models, per example (Carlini et al. 2022).",
    params=[
        Param("mode", str, "online", "online: IN and OUT Gaussians; offline: one-sided test against OUT only",
              choices=("online", "offline")),
        Param("fixed_variance", bool, False,
              "one pooled variance for all examples (per IN/OUT) instead of per-example; for few references"),
        Param("min_std", float, 1e-3,
              "floor on every fitted standard deviation of phi (logit units)", low=0.0, low_inclusive=False,
              high=10.0),
        Param("equalize_refs", bool, True,
              "use the same number of IN and of OUT references for every point (removes a count leak)"),
    ],
    requires=always(Release("probabilities")),
    tasks=("classification", "regression"),
)
def lira_attack(
    data: AttackData,
    mode: str = "online",
    fixed_variance: bool = False,
    min_std: float = 1e-3,
    equalize_refs: bool = True,
) -> AttackOutput:
    """LiRA score of each pool point from the references' logit-scaled confidences.

    With ``φ = log(p_y / (1 − p_y))`` (see :func:`log_odds`), fit per example ``x`` Gaussians to the
    references' ``φ`` on ``x``: ``N(μ_in, σ_in²)`` over the references trained on ``x`` and ``N(μ_out, σ_out²)``
    over the others (unbiased variances). With ``φ_t`` the target's value:

    - online: ``score = log N(φ_t; μ_in, σ_in²) − log N(φ_t; μ_out, σ_out²)`` (Carlini et al. 2022, Alg. 1);
    - offline: ``score = log Φ((φ_t − μ_out) / σ_out)``, the one-sided test "φ_t lies above the OUT
      distribution" (higher = member). It saturates at 0 for ``z ≳ 37``, where such points tie.

    ``fixed_variance`` replaces every per-example variance by one pooled within-example variance per IN/OUT
    (the paper's variant for few references). Every ``σ`` is floored at ``min_std``: the default ``1e−3``
    is far above the float32 rounding noise of ``φ`` (≈ 1e−6) and far below the spread across models of
    any real model, so it only binds when the references agree exactly (rounded or label-only releases).

    With ``equalize_refs`` (default), every point's fit uses the same number of IN and of OUT references,
    the smallest over the points (:func:`equal_count_masks`; ``info["lira_k_in"]``, ``info["lira_k_out"]``).
    This matters in the harness's design, where each point is IN for exactly half of all models: without
    it a member has one IN reference fewer (and one OUT more) than a non-member, and the sample sizes alone
    move the online score (with no signal at all, AUC ≈ 0.44 at 8 models and ≈ 0.65 at 4 on the tests'
    synthetic data; 0.455 on breast_cancer MLPs at 8 models). Turn it off for a random membership design,
    where counts vary widely and carry no such leak (the counts are then reported as −1).

    Fallbacks, counted in ``info``:

    - ``lira_no_in_refs``: online, examples with no IN reference, scored with the offline formula;
    - ``lira_few_in_refs``: online, examples with a single IN reference, using the global IN variance;
    - ``lira_few_out_refs``: examples with fewer than 2 OUT references, using the global OUT variance;
    - ``lira_no_out_refs``: examples with no OUT reference, using the mean of all OUT values as ``μ_out``.

    Raises
    ------
    ValueError
        If there are no references, or no OUT reference value at all.
    """
    from scipy.stats import norm  # imported here: scipy.stats costs a second, and registration needs none of it

    phi_t, phi_r, keep = confidence_statistics(data, "lira")
    if equalize_refs:
        use_in, use_out, k_in, k_out = equal_count_masks(keep)
    else:
        use_in, use_out, k_in, k_out = keep, ~keep, -1, -1
    fit_in, fit_out = _gaussian_fit(phi_r, use_in), _gaussian_fit(phi_r, use_out)

    no_out = fit_out["count"] == 0
    mu_out = np.where(no_out, fit_out["global_mean"], fit_out["mean"])
    if fixed_variance:
        sd_out = _std(np.full(len(phi_t), fit_out["global_var"]), min_std)
        few_out = np.zeros(len(phi_t), dtype=bool)
    else:
        few_out = fit_out["count"] < 2
        sd_out = _std(np.where(few_out, fit_out["global_var"], fit_out["var"]), min_std)
    offline = norm.logcdf((phi_t - mu_out) / sd_out)

    info: dict[str, float] = {
        "lira_no_out_refs": int(no_out.sum()),
        "lira_few_out_refs": int(few_out.sum()),
        "lira_no_in_refs": 0,
        "lira_few_in_refs": 0,
        "lira_k_in": k_in,
        "lira_k_out": k_out,
    }
    if mode == "offline":
        return AttackOutput(offline, info)

    has_in = fit_in["count"] > 0
    if fixed_variance:
        sd_in = _std(np.full(len(phi_t), fit_in["global_var"]), min_std)
        few_in = np.zeros(len(phi_t), dtype=bool)
    else:
        few_in = fit_in["count"] == 1
        sd_in = _std(np.where(few_in, fit_in["global_var"], fit_in["var"]), min_std)
    mu_in = np.where(has_in, fit_in["mean"], 0.0)
    # log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²); the −½ log 2π terms cancel
    ratio = (
        np.log(sd_out) - np.log(sd_in)
        + 0.5 * ((phi_t - mu_out) / sd_out) ** 2
        - 0.5 * ((phi_t - mu_in) / sd_in) ** 2
    )
    info.update(lira_no_in_refs=int((~has_in).sum()), lira_few_in_refs=int((few_in & has_in).sum()))
    return AttackOutput(np.where(has_in, ratio, offline), info)
