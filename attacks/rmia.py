"""The Robust Membership Inference Attack, RMIA (Zarifzadeh et al., ICML 2024).

Zarifzadeh, S., Liu, P., Cheng, R. and Shokri, R. "Low-Cost High-Power Membership Inference Attacks",
ICML 2024.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks.base import AttackData, AttackOutput
from attacks.lira import equal_count_masks
from attacks.requirements import Population, Release, always
from attacks.roc import auc, tpr_at_fpr
from privkernel.registry import ATTACKS, Param

#: Values of ``a`` tried when the offline attack tunes it on the references.
A_GRID = np.round(np.linspace(0.0, 1.0, 11), 10)


def _gaussian_log_likelihoods(
    data: AttackData, chosen: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Regression: ``log Pr(x|θ) = −(ŷ_θ(x) − y)² / 2σ²`` (Gaussian likelihood of the label, constant dropped),
    for the target and references on the pool and population points. ``σ²`` is the references' mean squared
    residual on the population: one noise scale shared by every model."""
    pop_y = np.asarray(data.population_labels, dtype=np.float64)[chosen]
    pop_t = np.asarray(data.population_target, dtype=np.float64)[chosen, 0] - pop_y
    pop_r = np.asarray(data.population_references, dtype=np.float64)[:, chosen, 0] - pop_y
    residual_t, residual_r = data.residuals()
    two_var = 2 * max(float(np.mean(pop_r**2)), 1e-12)
    return -residual_t**2 / two_var, -residual_r**2 / two_var, -pop_t**2 / two_var, -pop_r**2 / two_var


def _log_mean(log_values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``log`` of the mean of ``exp(log_values)`` over the rows ``[R, ·]`` where ``mask`` (−inf if none)."""
    from scipy.special import logsumexp

    count = mask.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_sum = logsumexp(np.where(mask, log_values, -np.inf), axis=0)
        return np.where(count > 0, log_sum - np.log(np.maximum(count, 1)), -np.inf)


def _offline_correction(log_pr_out: np.ndarray, a: float) -> np.ndarray:
    """``log(((1 + a) Pr_OUT + (1 − a)) / 2)``: the paper's linear estimate of ``Pr(x)`` from OUT models only."""
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log1p(a) + log_pr_out, np.log1p(-a)) - np.log(2.0)


@dataclass(frozen=True)
class _PoolMeans:
    """``log`` of the mean ``p_y(x)`` over each pool point's IN and OUT references, and whether it has any."""

    log_in: np.ndarray
    log_out: np.ndarray
    has_in: np.ndarray
    has_out: np.ndarray

    @classmethod
    def of(cls, log_p_refs: np.ndarray, keep: np.ndarray, equalize_refs: bool) -> _PoolMeans:
        keep = np.asarray(keep, dtype=bool)
        use_in, use_out = equal_count_masks(keep)[:2] if equalize_refs else (keep, ~keep)
        return cls(_log_mean(log_p_refs, use_in), _log_mean(log_p_refs, use_out), keep.any(0), (~keep).any(0))

    def log_pr_x(self, mode: str, a: float) -> tuple[np.ndarray, int]:
        """``log Pr(x)`` (see :func:`_log_pr_x`) and the count of points without an OUT reference (offline)."""
        if mode == "online":
            both = np.logaddexp(self.log_in, self.log_out) - np.log(2.0)
            return np.where(self.has_in & self.has_out, both, np.where(self.has_in, self.log_in, self.log_out)), 0
        return (np.where(self.has_out, _offline_correction(self.log_out, a), self.log_in),
                int((~self.has_out).sum()))


def _log_pr_x(
    log_p_refs: np.ndarray, keep: np.ndarray, mode: str, a: float, equalize_refs: bool
) -> tuple[np.ndarray, int]:
    """``log Pr(x)`` of the pool points from the references' ``log p_y`` ``[R, N]``; also the fallback count.

    Online: ``Pr(x) = ½ (mean_IN + mean_OUT)``, which is the mean over all references when they hold as many
    IN as OUT models for ``x`` (the paper's setting) and corrects an unequal split; where one side is empty
    the other side's mean is used. Offline: ``Pr(x) = ((1 + a) mean_OUT + (1 − a)) / 2``; a point without OUT
    reference (counted) uses the mean over its references, all IN, instead. With ``equalize_refs`` the means
    run over the same number of IN and of OUT references for every point (:func:`attacks.lira.equal_count_masks`).
    """
    return _PoolMeans.of(log_p_refs, keep, equalize_refs).log_pr_x(mode, a)


def _log_out_z(log_p_refs_z: np.ndarray) -> np.ndarray:
    """``log`` of the mean ``p_y(z)`` over the references, all OUT for a population point ``z``."""
    from scipy.special import logsumexp

    return logsumexp(log_p_refs_z, axis=0) - np.log(len(log_p_refs_z))


def _log_pr_z(log_out_z: np.ndarray, mode: str, a: float) -> np.ndarray:
    """``log Pr(z)`` of the population points from :func:`_log_out_z`; offline applies ``a``."""
    return log_out_z if mode == "online" else _offline_correction(log_out_z, a)


def pairwise_fraction(log_ratio_x: np.ndarray, log_ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """For each ``x``, the fraction of ``z`` with ``ratio_x / ratio_z ≥ γ``, i.e. ``log ratio_z ≤ log ratio_x − log γ``.

    Sorting the ``P`` values of ``z`` once and binary-searching each ``x`` costs ``O((N + P) log P)`` instead
    of the ``O(N P)`` of the pairwise comparison.
    """
    sorted_z = np.sort(log_ratio_z)
    return np.searchsorted(sorted_z, log_ratio_x - np.log(gamma), side="right") / len(sorted_z)


def break_ties(fraction: np.ndarray, log_ratio_x: np.ndarray, log_ratio_z: np.ndarray) -> np.ndarray:
    """The dominance ``fraction`` with its ties broken by the mean log pairwise ratio
    ``m(x) = mean_z log(LR(x, z)) = log ratio_x − mean_z log ratio_z``.

    The fraction takes only the ``P + 1`` values ``k / P``: every ``x`` that dominates all of ``z`` scores 1, so at
    a low FPR the members and non-members among them cannot be told apart. The result is
    ``fraction + u(x) / (2P)`` with ``u(x) = rank of m(x) among the N points / N ∈ [0, 1)`` (equal ``m`` share a
    rank): it stays within half a step of the fraction, orders points of equal fraction by ``m``, and never reorders
    points of different fraction.
    """
    mean_log_ratio = log_ratio_x - np.mean(log_ratio_z)
    _, rank = np.unique(mean_log_ratio, return_inverse=True)
    return fraction + rank.reshape(fraction.shape) / len(fraction) / (2 * len(log_ratio_z))


def rmia_scores(
    log_p_target: np.ndarray,
    log_p_refs: np.ndarray,
    keep: np.ndarray,
    log_p_target_z: np.ndarray,
    log_p_refs_z: np.ndarray,
    mode: str,
    gamma: float,
    a: float,
    equalize_refs: bool = True,
    tie_break: str = "ratio",
) -> tuple[np.ndarray, int]:
    """RMIA scores from the true-class log-probabilities of the target and references on ``x`` and ``z``; with
    ``tie_break="ratio"`` the fraction's ties are broken by :func:`break_ties`.

    Parameters
    ----------
    log_p_target, log_p_refs, keep
        ``log p_y(x)`` of the target ``[N]`` and references ``[R, N]``, and the references' membership.
    log_p_target_z, log_p_refs_z
        The same on the population points: ``[P]`` and ``[R, P]``.

    Returns
    -------
    scores, n_no_out
        Scores ``[N]`` and the number of pool points without an OUT reference (offline only).
    """
    means, log_out_z = _PoolMeans.of(log_p_refs, keep, equalize_refs), _log_out_z(log_p_refs_z)
    return _scores_of(log_p_target, means, log_p_target_z, log_out_z, mode, gamma, a, tie_break)


def _scores_of(
    log_p_target: np.ndarray, means: _PoolMeans, log_p_target_z: np.ndarray, log_out_z: np.ndarray, mode: str,
    gamma: float, a: float, tie_break: str,
) -> tuple[np.ndarray, int]:
    """:func:`rmia_scores` from the references' means, which do not depend on ``a`` (so :func:`tune_a` computes
    them once per pseudo-target)."""
    log_pr_x, n_no_out = means.log_pr_x(mode, a)
    log_ratio_x = log_p_target - log_pr_x
    log_ratio_z = log_p_target_z - _log_pr_z(log_out_z, mode, a)
    fraction = pairwise_fraction(log_ratio_x, log_ratio_z, gamma)
    if tie_break == "ratio":
        fraction = break_ties(fraction, log_ratio_x, log_ratio_z)
    return fraction, n_no_out


def tune_a(
    log_p_refs: np.ndarray,
    keep: np.ndarray,
    log_p_refs_z: np.ndarray,
    gamma: float,
    n_pseudo: int,
    equalize_refs: bool = True,
    tie_break: str = "ratio",
    tune_fpr: float = 0.001,
) -> tuple[float, float, float]:
    """Choose the offline ``a`` on the references alone, for the TPR at a low FPR.

    Each of the first ``n_pseudo`` references in turn plays the target, the remaining references its (OUT)
    references; the offline attack is run for every ``a`` of :data:`A_GRID`. ``a`` maximises the mean over the
    pseudo-targets of the TPR at FPR ``tune_fpr`` (the regime the leaderboard reads; by AUC the tuning favours the
    bulk of the ROC curve and picked ``a = 0`` on a Purchase-shaped task, where the TPR at 0.1 % FPR then collapsed);
    equal means are decided by the mean AUC, then by the smallest ``a``. Pseudo-targets whose membership has a single
    class are skipped.

    Returns
    -------
    a, tpr, auc
        The chosen ``a`` and its mean TPR at ``tune_fpr`` and mean AUC on the pseudo-targets.
    """
    n_refs = len(log_p_refs)
    tprs, aucs = [], []
    for r in range(min(n_pseudo, n_refs)):
        member = np.asarray(keep[r], dtype=bool)
        if member.all() or not member.any():
            continue
        others = np.arange(n_refs) != r
        means = _PoolMeans.of(log_p_refs[others], keep[others], equalize_refs)
        log_out_z = _log_out_z(log_p_refs_z[others])
        scores = [_scores_of(log_p_refs[r], means, log_p_refs_z[r], log_out_z, "offline", gamma, a, tie_break)[0]
                  for a in A_GRID]
        tprs.append([tpr_at_fpr(sc, member, tune_fpr) for sc in scores])
        aucs.append([auc(sc, member) for sc in scores])
    if not aucs:
        raise ValueError(
            "attack 'rmia' cannot tune 'a': no pseudo-target reference has both IN and OUT points; "
            "set rmia's parameter a explicitly (e.g. a: 0.3)"
        )
    mean_tpr, mean_auc = np.mean(tprs, axis=0), np.mean(aucs, axis=0)
    best = int(np.lexsort((np.arange(len(A_GRID)), -mean_auc, -mean_tpr))[0])
    return float(A_GRID[best]), float(mean_tpr[best]), float(mean_auc[best])


@ATTACKS.register(
    "rmia",
    description="Relative membership inference: how often the target's likelihood ratio on x beats its ratio "
    "on population points z (Zarifzadeh et al. 2024).",
    params=[
        Param("mode", str, "online", "online: Pr(x) from IN and OUT references; offline: OUT references and a",
              choices=("online", "offline")),
        Param("gamma", float, 1.0, "x beats z when (Pr(x|θ)/Pr(x)) / (Pr(z|θ)/Pr(z)) >= gamma",
              low=0.0, low_inclusive=False),
        Param("a", float, None, "offline only: Pr(x) = ((1+a) Pr_OUT(x) + 1-a)/2; unset: tuned on the references",
              low=0.0, high=1.0),
        Param("n_population", int, 5000, "at most this many population points z (random subsample)", low=1),
        Param("tune_models", int, 4, "references used in turn as pseudo-target when tuning a (offline)",
              low=1, high=64),
        Param("seed", int, 0, "seed of the population subsample", low=0),
        Param("equalize_refs", bool, True,
              "use the same number of IN and of OUT references for every point (removes a count leak)"),
        Param("tie_break", str, "ratio",
              "ratio: break ties of the dominance fraction by the mean log pairwise ratio; none: the paper's fraction",
              choices=("ratio", "none")),
        Param("tune_fpr", float, 0.001, "offline, a unset: a maximises the references' TPR at this FPR",
              low=0.0, high=1.0),
    ],
    requires=always(Release("probabilities"), Population()),
    tasks=("classification", "regression"),
    version=2,
)
def rmia_attack(
    data: AttackData,
    mode: str = "online",
    gamma: float = 1.0,
    a: float | None = None,
    n_population: int = 5000,
    tune_models: int = 4,
    seed: int = 0,
    equalize_refs: bool = True,
    tie_break: str = "ratio",
    tune_fpr: float = 0.001,
) -> AttackOutput:
    """RMIA score: the fraction of population points ``z`` that ``x`` dominates.

    With ``Pr(x|θ) = p_y(x)`` the target's true-class probability and ``Pr(x)`` its average over reference
    models, the pairwise likelihood ratio is ``LR(x, z) = (Pr(x|θ) / Pr(x)) / (Pr(z|θ) / Pr(z))`` and

        ``score(x) = |{z : LR(x, z) ≥ γ}| / |Z|``

    (Zarifzadeh et al. 2024, Eq. 3–4). ``Pr(x)``:

    - online: ``½ (mean over IN references + mean over OUT references)`` of ``p_y(x)`` — the paper's mean over
      references with IN and OUT balanced, kept balanced when the split is not (see :func:`_log_pr_x`);
    - offline: ``((1 + a) Pr_OUT(x) + (1 − a)) / 2`` from the OUT references only (paper, Sec. 3 / App.).

    ``Pr(z)`` is the mean over all references (all OUT for ``z``), with the same ``a`` correction offline.
    ``a = 1`` gives the plain ratio to ``Pr_OUT``. Unset ``a`` (offline) is tuned on the references by
    :func:`tune_a`. With ``equalize_refs`` (default) the means over IN and over OUT references use the same
    number of references for every point (see :func:`attacks.lira.equal_count_masks`: in the harness's
    exactly-balanced design the counts otherwise differ by one between members and non-members, and the
    log of a mean over fewer references is biased lower). Everything is computed from log-probabilities;
    the pairwise count uses sorting (:func:`pairwise_fraction`). At most ``n_population`` population points
    are used, drawn with ``seed``.

    Low FPR: the fraction takes only ``|Z| + 1`` values, and a well-fitted model's members crowd at 1 together
    with a few non-members (on a Purchase-shaped task, 1,682 members and 4 non-members tied there, and the TPR at
    0.1 % FPR was 0 at AUC 0.995). With ``tie_break="ratio"`` (default) ties are broken by the mean log pairwise
    ratio (:func:`break_ties`); ``"none"`` gives the paper's score. Unset ``a`` is tuned for the TPR at
    ``tune_fpr`` (default 0.1 %), not for the AUC (:func:`tune_a`).

    ``info``: ``rmia_n_population``, ``rmia_no_out_refs`` (offline: points without OUT reference, scored with
    the mean over their IN references), and offline ``rmia_a`` (and ``rmia_tuned_tpr``, ``rmia_tuned_auc`` when
    tuned).

    Raises
    ------
    ValueError
        Without population points, references, or (offline, ``a`` unset) at least 2 references to tune ``a``.
    """
    if data.population_target is None or len(data.population_labels) == 0:
        raise ValueError(
            "attack 'rmia' needs population points z (outputs of the target and references on data no model "
            "trained on): build the AttackData with population_target/population_references/population_labels"
        )
    data.require_references("rmia")
    n_pop = len(data.population_labels)
    chosen = np.arange(n_pop)
    if n_pop > n_population:
        chosen = np.sort(np.random.default_rng(seed).choice(n_pop, n_population, replace=False))
    if data.task == "regression":
        log_p_t, log_p_r, log_p_tz, log_p_rz = _gaussian_log_likelihoods(data, chosen)
    else:
        # log p_y of each output, from the audit's shared signals (attacks.signals)
        log_p_t, log_p_r = data.true_class("target")[0], data.true_class("references")[0]
        log_p_tz = data.true_class("population_target")[0][chosen]
        log_p_rz = data.true_class("population_references")[0][:, chosen]
    keep = np.asarray(data.reference_keep, dtype=bool)

    info: dict[str, float] = {"rmia_n_population": len(chosen)}
    if mode == "offline":
        if a is None:
            if data.n_references < 2:
                raise ValueError(
                    "attack 'rmia' (offline) tunes 'a' on the references and needs at least 2 of them; "
                    "set its parameter a explicitly or train more models (protocol.n_models)"
                )
            a, info["rmia_tuned_tpr"], info["rmia_tuned_auc"] = tune_a(
                log_p_r, keep, log_p_rz, gamma, tune_models, equalize_refs, tie_break, tune_fpr
            )
        info["rmia_a"] = float(a)
    scores, n_no_out = rmia_scores(
        log_p_t, log_p_r, keep, log_p_tz, log_p_rz, mode, gamma, 0.0 if a is None else a, equalize_refs, tie_break
    )
    info["rmia_no_out_refs"] = n_no_out
    return AttackOutput(scores, info)
