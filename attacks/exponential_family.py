"""Exponential-family membership inference: BASE (Lassila et al., NeurIPS 2025) and BaVarIA (Brännvall, 2026).

Lassila, M., Östman, J., Ngo, K.-H. and Graell i Amat, A. "Practical Bayes-Optimal Membership Inference Attacks",
NeurIPS 2025 (arXiv:2505.24089).

Brännvall, R. "Exponential-Family Membership Inference: From LiRA and RMIA to BaVarIA", arXiv:2603.11799 (2026).

Both attacks score a statistic ``s`` of the target's output on a record against the distribution of the same
statistic over reference models, through the log-likelihood ratio of an exponential family:

- BASE (and RMIA) use the exponential tilt ``p_in(s) ∝ p_out(s) e^s``, whose log-likelihood ratio is
  ``s − log E[e^s]``: one number per record, the log-partition ``log E[e^s]``, estimated by the log-mean-exp of
  the references' values (:func:`log_mean_exp`). If ``s`` is Gaussian over the references, ``N(μ, σ²)``, then
  ``log E[e^s] = μ + σ²/2`` and the ratio is exactly LiRA's Gaussian ratio with an IN mean ``μ + σ²`` and a shared
  variance: BASE is the one-parameter end of a spectrum whose other end, LiRA, fits a mean and a variance per
  record for IN and for OUT (Brännvall's hierarchy BASE1–4 between them).
- BaVarIA keeps LiRA's per-record Gaussians of the logit confidence ``φ`` and replaces the noisy per-record
  variance (and LiRA's switch to one global variance when references are few) by a conjugate normal-inverse-gamma
  posterior whose prior is fitted across all records (:func:`fit_nig_prior`, :func:`nig_posterior`): the
  predictive is a Student-t (BaVarIA-t) or a Gaussian of the same location and scale (BaVarIA-n).

The per-record Gaussian sufficient statistics (count, mean, sum of squares; :func:`gaussian_statistics`) and the
log-mean-exp are the shared sufficient statistics of the two families.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks.base import AttackData, AttackOutput
from attacks.lira import confidence_statistics, equal_count_masks
from attacks.requirements import Release, always
from attacks.signals import clean_log_probs, true_class_log_probs
from privkernel.registry import ATTACKS, Param

#: Bounds of the fitted prior pseudo-counts: ``α0`` (half the variance pseudo-count ``ν0``) and ``κ0``. The upper
#: bounds are reached when every record shares one variance (or one mean): the prior then fixes it.
ALPHA0_BOUNDS = (5e-3, 1e5)
KAPPA0_MAX = 1e6


# ---------------------------------------------------------------------------------------------------------------
# Shared sufficient statistics
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianStatistics:
    """Per-record sufficient statistics of the values ``x_r`` selected by a mask ``[R, N]``.

    Attributes
    ----------
    count
        ``k``, the number of values of each record ``[N]``.
    mean
        ``x̄ = Σ x_r / k`` (0 where ``k = 0``).
    sum_squares
        ``S = Σ (x_r − x̄)²`` (0 where ``k ≤ 1``).
    """

    count: np.ndarray
    mean: np.ndarray
    sum_squares: np.ndarray


def gaussian_statistics(values: np.ndarray, mask: np.ndarray) -> GaussianStatistics:
    """The :class:`GaussianStatistics` of ``values[R, N]`` over the rows where ``mask[R, N]``."""
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    count = mask.sum(0)
    mean = np.where(mask, values, 0.0).sum(0) / np.maximum(count, 1)
    sum_squares = np.where(mask, (values - mean) ** 2, 0.0).sum(0)
    return GaussianStatistics(count, mean, sum_squares)


def log_mean_exp(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``log((1/k) Σ_r exp(values[r, n]))`` over the rows where ``mask`` (−inf where a record has none): the
    estimate of the log-partition ``log E[e^s]`` of the exponentially tilted family (BASE, RMIA)."""
    from scipy.special import logsumexp

    mask = np.asarray(mask, dtype=bool)
    count = mask.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_sum = logsumexp(np.where(mask, values, -np.inf), axis=0)
        return np.where(count > 0, log_sum - np.log(np.maximum(count, 1)), -np.inf)


# ---------------------------------------------------------------------------------------------------------------
# Normal-inverse-gamma model
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NIG:
    """A normal-inverse-gamma distribution of ``(μ, σ²)``: ``σ² ~ InvGamma(α, β)``, ``μ | σ² ~ N(m, σ²/κ)``.

    Fields are floats (a prior) or arrays ``[N]`` (one posterior per record).
    """

    mu: np.ndarray | float
    kappa: np.ndarray | float
    alpha: np.ndarray | float
    beta: np.ndarray | float


def nig_posterior(prior: NIG, stats: GaussianStatistics) -> NIG:
    """The conjugate update of ``prior`` by ``k`` Gaussian values with mean ``x̄`` and sum of squares ``S``:

    ``κn = κ0 + k``, ``μn = (κ0 μ0 + k x̄)/κn``, ``αn = α0 + k/2``,
    ``βn = β0 + S/2 + κ0 k (x̄ − μ0)² / (2 κn)``.

    Where ``κn = 0`` (a flat prior, ``κ0 = 0``, and no value) the posterior is improper and ``μn`` is NaN.
    """
    k = stats.count.astype(np.float64)
    kappa = prior.kappa + k
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.where(kappa > 0, (prior.kappa * prior.mu + k * stats.mean) / kappa, np.nan)
        shrink = np.where(kappa > 0, prior.kappa * k / kappa, 0.0)
    beta = prior.beta + 0.5 * stats.sum_squares + 0.5 * shrink * (stats.mean - prior.mu) ** 2
    return NIG(mu, kappa, prior.alpha + 0.5 * k, beta)


def predictive(post: NIG, min_std: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The posterior predictive of one more value: Student-t with ``2αn`` degrees of freedom, location ``μn`` and
    ``scale² = βn (κn + 1) / (αn κn)``, the scale floored at ``min_std``.

    Returns
    -------
    df, loc, scale, proper
        ``proper`` is False where the posterior is improper (``κn = 0`` or ``αn = 0``); the other outputs are
        then placeholders (``df = 1``, ``loc = 0``, ``scale = min_std``).
    """
    alpha, kappa = np.asarray(post.alpha, dtype=np.float64), np.asarray(post.kappa, dtype=np.float64)
    proper = (alpha > 0) & (kappa > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale2 = np.where(proper, post.beta * (kappa + 1) / (alpha * kappa), 0.0)
    scale = np.maximum(np.sqrt(np.nan_to_num(scale2, nan=0.0, posinf=0.0)), min_std)
    df = np.where(proper, 2 * alpha, 1.0)
    loc = np.where(proper, np.nan_to_num(post.mu), 0.0)
    return df, loc, scale, proper


def student_t_logpdf(x: np.ndarray, df: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``log t_df(x; loc, scale)``, the Student-t log-density (closed form, any real ``df > 0``)."""
    from scipy.special import gammaln

    z2 = ((x - loc) / scale) ** 2
    return (gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * np.log(df * np.pi) - np.log(scale)
            - (df + 1) / 2 * np.log1p(z2 / df))


def student_t_logcdf(z: np.ndarray, df: np.ndarray) -> np.ndarray:
    """``log F_df(z)`` of the standard Student-t, finite in both tails.

    Above 0 it is ``log1p(−F_df(−z))``, accurate until the upper tail underflows (then 0, a tie, as for the
    Gaussian's ``log Φ``); below 0 it is ``log F_df(z)`` and, where that underflows, the tail's leading term
    ``log f_df(z) + log((df + z²) / ((df + 1)|z|))`` (which is the Gaussian's Mills ratio as ``df → ∞``).
    """
    from scipy.special import stdtr

    z, df = np.broadcast_arrays(np.asarray(z, dtype=np.float64), np.asarray(df, dtype=np.float64))
    lower = np.minimum(z, 0.0)
    with np.errstate(divide="ignore"):
        log_lower = np.log(stdtr(df, lower))
        upper = np.log1p(-stdtr(df, -np.maximum(z, 0.0)))
    tail = np.isneginf(log_lower)
    if tail.any():
        zt, dft = lower[tail], df[tail]
        log_lower[tail] = student_t_logpdf(zt, dft, 0.0, 1.0) + np.log((dft + zt**2) / ((dft + 1) * -zt))
    return np.where(z > 0, upper, log_lower)


def _nig_marginal_loglik(params: np.ndarray, m: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean log-likelihood (up to terms free of the prior) of sums of squares ``s`` with ``2m`` degrees of freedom,
    ``s | σ² ~ Gamma(m, rate 1/(2σ²))`` and ``σ² ~ InvGamma(α, β)``, at ``params = (log α, log(β/α))``; and its
    gradient."""
    from scipy.special import digamma, gammaln

    alpha, var0 = np.exp(params[0]), np.exp(params[1])
    beta = alpha * var0
    shifted = beta + s / 2
    value = np.mean(alpha * np.log(beta) + gammaln(m + alpha) - gammaln(alpha) - (m + alpha) * np.log(shifted))
    d_alpha = np.mean(np.log(beta) + digamma(m + alpha) - digamma(alpha) - np.log(shifted))
    d_beta = np.mean(alpha / beta - (m + alpha) / shifted)
    return float(value), np.array([alpha * (d_alpha + var0 * d_beta), beta * d_beta])


def fit_variance_prior(stats: GaussianStatistics, min_var: float, nu0: float | None = None) -> tuple[float, float]:
    """The inverse-gamma prior ``(α0, β0)`` of the per-record variances, by empirical Bayes across records.

    Each record with ``k ≥ 2`` values contributes its sum of squares ``S``, whose distribution given ``σ²`` is
    ``σ² χ²_{k−1}``; with ``σ² ~ InvGamma(α0, β0)`` its marginal is a compound gamma, and ``(α0, β0)`` maximise the
    marginal likelihood of all records' ``S`` (type-II maximum likelihood, bounded Newton-CG over ``log α0`` and
    ``log(β0/α0)``, ``α0`` within :data:`ALPHA0_BOUNDS`). With ``nu0`` given, ``α0 = nu0/2`` and
    ``β0/α0`` is the pooled within-record variance ``ΣS / Σ(k − 1)``. ``β0/α0`` is floored at ``min_var``.

    Raises
    ------
    ValueError
        If no record has two values.
    """
    from scipy.optimize import minimize

    several = stats.count >= 2
    if not several.any():
        raise ValueError("no record has two reference values to estimate a variance from")
    s, m = stats.sum_squares[several], (stats.count[several] - 1) / 2
    pooled = max(float(s.sum() / (2 * m).sum()), min_var)
    if nu0 is not None:
        return nu0 / 2, nu0 / 2 * pooled
    start = np.array([np.log(2.0), np.log(pooled)])
    bounds = [(np.log(ALPHA0_BOUNDS[0]), np.log(ALPHA0_BOUNDS[1])), (np.log(min_var), None)]
    result = minimize(lambda p: tuple(-v for v in _nig_marginal_loglik(p, m, s)), start, jac=True,
                      method="TNC", bounds=bounds)
    alpha = float(np.exp(result.x[0]))
    return alpha, alpha * max(float(np.exp(result.x[1])), min_var)


def fit_mean_prior(stats: GaussianStatistics, noise_var: float, kappa0: float | None = None) -> tuple[float, float]:
    """The prior ``(μ0, κ0)`` of the per-record means ``μ | σ² ~ N(μ0, σ²/κ0)``, by moments across records.

    ``μ0`` is the mean of the records' means ``x̄``; the spread of the true means is
    ``τ² = Var(x̄) − noise_var · mean(1/k)`` and ``κ0 = noise_var / τ²`` (capped at :data:`KAPPA0_MAX` when the
    means do not spread beyond their noise; 0, a flat prior, with fewer than two records). With ``kappa0`` given,
    only ``μ0`` is estimated.
    """
    has = stats.count > 0
    mu0 = float(stats.mean[has].mean()) if has.any() else 0.0
    if kappa0 is not None:
        return mu0, float(kappa0)
    if has.sum() < 2:
        return mu0, 0.0
    tau2 = float(stats.mean[has].var(ddof=1) - noise_var * np.mean(1.0 / stats.count[has]))
    return mu0, float(min(noise_var / tau2, KAPPA0_MAX)) if tau2 > 0 else KAPPA0_MAX


def fit_nig_prior(
    values: np.ndarray, mask: np.ndarray, min_var: float, nu0: float | None = None, kappa0: float | None = None,
    fallback_var: tuple[float, float] | None = None,
) -> tuple[NIG, bool]:
    """The normal-inverse-gamma prior of one side (IN or OUT) from the reference ``values[R, N]`` where ``mask``.

    Variance prior by :func:`fit_variance_prior`, mean prior by :func:`fit_mean_prior`. Where no record has two
    values, the variance prior is ``fallback_var`` (``(α0, β0)`` of the other side) if given, else a weak prior
    (``α0 = 1/2``) at the variance of all values (floored at ``min_var``).

    Returns
    -------
    prior, fell_back
        The prior, and whether the variance prior is a fallback.
    """
    stats = gaussian_statistics(values, mask)
    try:
        alpha0, beta0 = fit_variance_prior(stats, min_var, nu0)
        fell_back = False
    except ValueError:
        fell_back = True
        if fallback_var is not None:
            alpha0, beta0 = fallback_var
        else:
            selected = np.asarray(values, dtype=np.float64)[np.asarray(mask, dtype=bool)]
            var = max(float(selected.var()) if selected.size >= 2 else 0.0, min_var)
            alpha0 = 0.5 if nu0 is None else nu0 / 2
            beta0 = alpha0 * var
    noise_var = beta0 / alpha0 if alpha0 > 0 else min_var
    mu0, kappa = fit_mean_prior(stats, noise_var, kappa0)
    return NIG(mu0, kappa, alpha0, beta0), fell_back


# ---------------------------------------------------------------------------------------------------------------
# BASE
# ---------------------------------------------------------------------------------------------------------------


def tempered_log_confidence(log_probs: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    """``log softmax(ℓ / T)_y``: the true-class log-probability after softmax at temperature ``T``.

    Released log-probabilities are the logits up to a per-output constant, so this equals the softmax of the
    logits divided by ``T``. Computed as ``−log(1 + Σ_{j≠y} exp((ℓ_j − ℓ_y)/T))`` from the floored release
    (:func:`attacks.signals.clean_log_probs`) with the accurate ``ℓ_y`` of
    :func:`attacks.signals.true_class_log_probs`, so it stays exact where ``p_y`` rounds to 1.
    """
    from scipy.special import logsumexp

    lp = clean_log_probs(log_probs)
    log_p_y, _ = true_class_log_probs(lp, labels)
    on_label = np.arange(lp.shape[-1]) == np.asarray(labels)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rest = logsumexp(np.where(on_label, -np.inf, (lp - log_p_y[..., None]) / temperature), axis=-1)
    return -np.logaddexp(0.0, rest)


@ATTACKS.register(
    "base",
    description="BASE, the Bayes-optimal approximation of Lassila et al. (2025): the target's temperature-scaled "
    "true-class log-probability minus its log-mean-exp over reference models. Needs reference models (from 2; 4-16 "
    "is usual), online (IN and OUT references) or offline (OUT references only); no population records. "
    "Rank-equivalent to online RMIA at temperature 1.",
    params=[
        Param("mode", str, "online", "online: mean over IN and OUT references; offline: over OUT references only",
              choices=("online", "offline")),
        Param("temperature", float, 2.0, "softmax temperature T applied to the logits (log-probabilities)",
              low=0.0, low_inclusive=False, high=100.0),
        Param("offline_scale", float, 0.33,
              "offline only: score = s(target) − c · log mean_OUT exp(s); c rescales the OUT-only log-partition",
              low=0.0, high=1.0),
        Param("equalize_refs", bool, True,
              "use the same number of IN and of OUT references for every point (removes a count leak)"),
    ],
    requires=always(Release("probabilities")),
    tasks=("classification",),
)
def base_attack(
    data: AttackData,
    mode: str = "online",
    temperature: float = 2.0,
    offline_scale: float = 0.33,
    equalize_refs: bool = True,
) -> AttackOutput:
    """BASE score of each pool point: a log-likelihood ratio against the references' log-partition.

    With ``s_θ(x) = log softmax(ℓ_θ(x) / T)_y`` (:func:`tempered_log_confidence`; ``−s`` is the cross-entropy
    loss at temperature ``T``), Sablayrolles et al.'s Bayes-optimal posterior, as approximated by Lassila et al.,
    thresholds ``s_θ(x) − log E_θ'[exp(s_θ'(x))]``, the expectation over models trained on random datasets, which
    the references' mean estimates. The score is

    - online: ``s_target(x) − log mean_r exp(s_r(x))`` over the IN and OUT references of ``x``;
    - offline: ``s_target(x) − c · log mean_{r OUT} exp(s_r(x))``, ``c = offline_scale``: the OUT-only mean
      underestimates the mean over all models, and ``c < 1`` compensates.

    The Bayes-optimal decision compares the score with ``log((1 − λ)/λ)`` for the prior membership rate ``λ``
    (0 for ``λ = ½``); the harness ranks scores, so ``λ`` never enters. Defaults (``T = 2``, ``c = 0.33``, online
    over all references, offline over the OUT ones) are those of the LeakPro implementation of BASE
    (aidotse/LeakPro, ``leakpro/attacks/mia_attacks/base.py``), which cites the paper.

    Relation to RMIA (:func:`attacks.rmia.rmia_attack`): RMIA's ``Pr(x|θ)/Pr(x)`` is ``exp`` of this score at
    ``T = 1`` (``Pr(x)`` = the references' mean true-class probability), and RMIA's score, the fraction of
    population points ``z`` with ``LR(x, z) ≥ γ``, is a non-decreasing function of it: online BASE at ``T = 1``
    orders the points as online RMIA does (Lassila et al.'s equivalence), breaking RMIA's ties, without population
    records. Offline they differ in the OUT-only correction: RMIA's linear ``((1 + a) Pr_OUT + 1 − a)/2``
    against BASE's power ``Pr_OUT^c``; both are the plain ``Pr_OUT`` at ``a = c = 1``. In the exponential-family
    view (Brännvall 2026), ``log mean exp(s)`` is the log-partition of the tilt ``p_in(s) ∝ p_out(s) e^s``: BASE
    estimates one parameter per record, and for Gaussian ``s`` it equals LiRA's ratio with IN mean
    ``μ + σ²`` and a shared variance.

    With ``equalize_refs`` (default), every point uses its first ``k_in`` IN and ``k_out`` OUT references, ``k``
    the smallest non-zero count over the points (:func:`attacks.lira.equal_count_masks`; ``info["base_k_in"]``,
    ``info["base_k_out"]``): in the harness's design each point is IN for exactly half of all models, and without
    it members' means would hold one IN reference fewer than non-members'. Offline, a point without OUT reference
    uses its IN references instead (``info["base_no_out_refs"]``).

    Raises
    ------
    ValueError
        If there are no references, no OUT reference value at all, or the task is not classification.
    """
    data.require_references("base")
    if data.task != "classification":
        raise ValueError(f"attack 'base' scores class probabilities; it does not run on task {data.task!r}")
    keep = np.asarray(data.reference_keep, dtype=bool)
    if keep.all():
        raise ValueError(
            "attack 'base' needs OUT reference values, but every reference was trained on every pool point; "
            "use a membership split where each point is OUT for some models"
        )
    s_target = tempered_log_confidence(data.target, data.labels, temperature)
    s_refs = tempered_log_confidence(data.references, data.labels, temperature)
    if equalize_refs:
        use_in, use_out, k_in, k_out = equal_count_masks(keep)
    else:
        use_in, use_out, k_in, k_out = keep, ~keep, -1, -1
    info: dict[str, float] = {"base_k_in": int(k_in), "base_k_out": int(k_out), "base_temperature": float(temperature)}
    if mode == "online":
        info["base_no_out_refs"] = 0
        return AttackOutput(s_target - log_mean_exp(s_refs, use_in | use_out), info)
    has_out = use_out.any(0)
    log_partition = np.where(has_out, log_mean_exp(s_refs, use_out), log_mean_exp(s_refs, use_in))
    info.update(base_no_out_refs=int((~has_out).sum()), base_offline_scale=float(offline_scale))
    return AttackOutput(s_target - offline_scale * log_partition, info)


# ---------------------------------------------------------------------------------------------------------------
# BaVarIA
# ---------------------------------------------------------------------------------------------------------------


@ATTACKS.register(
    "bavaria",
    description="BaVarIA, Bayesian variance inference (Brännvall 2026): LiRA's per-example likelihood ratio of the "
    "logit confidence with normal-inverse-gamma priors fitted across examples, Student-t (variant t) or "
    "stabilised-Gaussian (variant n) predictive. Needs reference models (from 2; built for few, 4-16), online "
    "(IN and OUT references) or offline (OUT only); no population records.",
    params=[
        Param("mode", str, "online", "online: IN and OUT predictives; offline: one-sided test against OUT only",
              choices=("online", "offline")),
        Param("variant", str, "t", "t: Student-t posterior predictive; n: Gaussian with its location and scale",
              choices=("t", "n")),
        Param("nu0", float, None,
              "variance prior pseudo-count 2*alpha0; unset: fitted across examples (type-II maximum likelihood)",
              low=0.0),
        Param("kappa0", float, None, "mean prior pseudo-count; unset: fitted across examples (moments)", low=0.0),
        Param("min_std", float, 1e-3, "floor on every predictive scale of phi (logit units)", low=0.0,
              low_inclusive=False, high=10.0),
        Param("equalize_refs", bool, True,
              "use the same number of IN and of OUT references for every point (removes a count leak)"),
    ],
    requires=always(Release("probabilities")),
    tasks=("classification", "regression"),
)
def bavaria_attack(
    data: AttackData,
    mode: str = "online",
    variant: str = "t",
    nu0: float | None = None,
    kappa0: float | None = None,
    min_std: float = 1e-3,
    equalize_refs: bool = True,
) -> AttackOutput:
    """BaVarIA score of each pool point: LiRA with normal-inverse-gamma posteriors per example.

    The statistic is LiRA's logit confidence ``φ = log(p_y / (1 − p_y))`` (:func:`attacks.lira.log_odds`;
    regression: ``φ = −|ŷ − y|``). For each side (IN: references trained on ``x``; OUT: the others) a prior
    ``NIG(μ0, κ0, α0, β0)`` is fitted across all examples by empirical Bayes (:func:`fit_nig_prior`): ``(α0, β0)``
    by the marginal likelihood of the per-example sums of squares, ``(μ0, κ0)`` by the moments of the per-example
    means; ``nu0 = 2α0`` and ``kappa0`` may be fixed instead. Each example's ``k`` values on a side update it
    (:func:`nig_posterior`) to ``NIG(μn, κn, αn, βn)``, whose predictive for the target's ``φ`` is a Student-t
    with ``2αn`` degrees of freedom, location ``μn`` and ``scale² = βn (κn + 1) / (αn κn)`` (:func:`predictive`).

    - variant ``t`` (BaVarIA-t): that Student-t; variant ``n`` (BaVarIA-n): a Gaussian ``N(μn, scale²)``, whose
      variance is the posterior's ``1/E[1/σ²] = βn/αn`` inflated by the mean's uncertainty ``(κn + 1)/κn``: the
      stabilised per-example variance, shrunk towards the prior's with weight ``α0 : k/2``.
    - online: ``score = log p_in(φ_t) − log p_out(φ_t)``; offline: ``score = log F_out((φ_t − μn)/scale)``, the
      one-sided test of LiRA's offline attack with the predictive's CDF (:func:`student_t_logcdf`; ``log Φ`` for
      ``n``).

    With many references and a flat prior (``nu0 = kappa0 = 0``) both variants tend to LiRA's per-example
    Gaussians; with few, the fitted prior replaces LiRA's switch between per-example and global variances: an
    example with no value on a side gets the prior predictive, one with a single value the prior variance. This
    is a reconstruction from the paper's abstract and the conjugate model it names (the prior's fitting and the
    variant ``n``'s variance are this module's choices; see the module docstring).

    With ``equalize_refs`` (default), the per-example posteriors use the same number of IN and of OUT references
    for every point (:func:`attacks.lira.equal_count_masks`, ``info["bavaria_k_in"]``, ``info["bavaria_k_out"]``),
    as LiRA does: the predictive's scale and degrees of freedom depend on ``k``, which in the harness's design
    differs by one between members and non-members. The priors, shared by every example, are fitted on all
    reference values (a global quantity cannot separate members from non-members, and with 4 models the equal
    counts are 1, from which no variance can be estimated).

    ``info``: the fitted priors (``bavaria_{in,out}_{mu0,kappa0,nu0,sigma0}``, ``sigma0² = β0/α0``), the counts
    kept, and fallbacks: ``bavaria_{in,out}_prior_fallbacks`` (1 when no example had two values on that side: the
    variance prior is borrowed from the other side, else weak at the variance of all values),
    ``bavaria_no_in_refs`` / ``bavaria_no_out_refs`` (examples without value on a side; where the prior is flat
    there, online examples without IN value are scored offline and those without OUT value use the OUT prior's
    ``μ0`` and ``sigma0``).

    Raises
    ------
    ValueError
        If there are no references, or no OUT reference value at all.
    """
    from scipy.special import log_ndtr

    phi_t, phi_r, keep = confidence_statistics(data, "bavaria")
    if equalize_refs:
        use_in, use_out, k_in, k_out = equal_count_masks(keep)
    else:
        use_in, use_out, k_in, k_out = keep, ~keep, -1, -1
    min_var = min_std**2

    out_prior, out_fell_back = fit_nig_prior(phi_r, ~keep, min_var, nu0, kappa0)
    in_prior, in_fell_back = fit_nig_prior(
        phi_r, keep, min_var, nu0, kappa0, fallback_var=None if out_fell_back else (out_prior.alpha, out_prior.beta))
    if out_fell_back and not in_fell_back:  # borrow the IN side's variance prior
        out_prior = NIG(out_prior.mu, out_prior.kappa, in_prior.alpha, in_prior.beta)

    def log_density(x, df, loc, scale):
        if variant == "t":
            return student_t_logpdf(x, df, loc, scale)
        return -0.5 * ((x - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)

    def log_cdf(z, df):
        return student_t_logcdf(z, df) if variant == "t" else log_ndtr(z)

    stats_out = gaussian_statistics(phi_r, use_out)
    df_out, loc_out, scale_out, proper_out = predictive(nig_posterior(out_prior, stats_out), min_std)
    no_out = ~proper_out  # improper only with a flat prior and no OUT value
    loc_out = np.where(no_out, out_prior.mu, loc_out)
    scale_out = np.where(no_out, max(np.sqrt(out_prior.beta / max(out_prior.alpha, 1e-300)), min_std), scale_out)
    df_out = np.where(no_out, max(2 * out_prior.alpha, 1.0), df_out)
    offline = log_cdf((phi_t - loc_out) / scale_out, df_out)

    info: dict[str, float] = {"bavaria_k_in": int(k_in), "bavaria_k_out": int(k_out)}
    for side, prior, fell_back in (("in", in_prior, in_fell_back), ("out", out_prior, out_fell_back)):
        info.update({
            f"bavaria_{side}_mu0": float(prior.mu), f"bavaria_{side}_kappa0": float(prior.kappa),
            f"bavaria_{side}_nu0": float(2 * prior.alpha),
            f"bavaria_{side}_sigma0": float(np.sqrt(prior.beta / prior.alpha)) if prior.alpha > 0 else 0.0,
            f"bavaria_{side}_prior_fallbacks": int(fell_back),
        })
    info["bavaria_no_out_refs"] = int((stats_out.count == 0).sum())
    if mode == "offline":
        info["bavaria_no_in_refs"] = 0
        return AttackOutput(offline, info)

    stats_in = gaussian_statistics(phi_r, use_in)
    df_in, loc_in, scale_in, proper_in = predictive(nig_posterior(in_prior, stats_in), min_std)
    ratio = log_density(phi_t, df_in, loc_in, scale_in) - log_density(phi_t, df_out, loc_out, scale_out)
    info["bavaria_no_in_refs"] = int((stats_in.count == 0).sum())
    return AttackOutput(np.where(proper_in, ratio, offline), info)
