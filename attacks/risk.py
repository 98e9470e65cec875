"""Song & Mittal's privacy risk score (USENIX Security 2021, Sec. 6).

Song, L. and Mittal, P. "Systematic Evaluation of Privacy Risks of Machine Learning Models", USENIX Security 2021.
"""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData, AttackOutput
from attacks.metric import modified_entropy
from attacks.requirements import Release, always
from attacks.signals import in_model_chunks
from privkernel.registry import ATTACKS, Param

#: Values below this are raised to it before log-spaced bins are placed (the authors' ``small_delta``).
LOG_BIN_FLOOR = 1e-10


def histogram_posterior(
    values_in: np.ndarray, values_out: np.ndarray, query: np.ndarray, bins: int, log_bins: bool = True
) -> np.ndarray:
    """Posterior ``P(in | m)`` at each ``query`` value from IN and OUT samples of ``m``, by histograms, as in the
    authors' code (inspire-group/membership-inference-evaluation, ``privacy_risk_score_utils.py``).

    Both histograms share ``bins`` bins spanning all IN and OUT samples, log-spaced with ``log_bins`` (the
    samples are first raised to :data:`LOG_BIN_FLOOR`) or equal-width otherwise, and are normalised per side, so
    ``P(in) = P(out) = ½`` (the paper's Eq. 5): ``r(m) = h_in(b) / (h_in(b) + h_out(b))`` with ``b`` the bin of
    ``m``. A query at or above the last edge falls in the last bin, at or below the first edge in the first, else
    in the last bin whose lower edge is ``≤ m``. A bin that neither side visits takes the posterior of the nearest
    bin that one does, looking ``t`` bins below before ``t`` bins above, for ``t = 1, 2, …``. When every sample has
    one value, the posterior is ½.
    """
    values_in = np.asarray(values_in, dtype=np.float64)
    values_out = np.asarray(values_out, dtype=np.float64)
    if log_bins:
        values_in, values_out = np.maximum(values_in, LOG_BIN_FLOOR), np.maximum(values_out, LOG_BIN_FLOOR)
    every = np.concatenate([values_in, values_out])
    low, high = every.min(), every.max()
    if low == high:
        return np.full(len(query), 0.5)
    edges = np.logspace(np.log10(low), np.log10(high), bins + 1) if log_bins else np.linspace(low, high, bins + 1)
    dens_in = np.histogram(values_in, edges)[0] / len(values_in)
    dens_out = np.histogram(values_out, edges)[0] / len(values_out)
    total = dens_in + dens_out
    posterior = np.divide(dens_in, total, out=np.full(bins, np.nan), where=total > 0)
    for b in np.flatnonzero(total == 0):  # the nearest visited bin, below first
        for t in range(1, bins):
            if b - t >= 0 and total[b - t] > 0:
                posterior[b] = posterior[b - t]
                break
            if b + t < bins and total[b + t] > 0:
                posterior[b] = posterior[b + t]
                break
    query = np.asarray(query, dtype=np.float64)
    index = np.clip(np.searchsorted(edges, query, side="right") - 1, 0, bins - 1)
    return posterior[index]


@ATTACKS.register(
    "privacy_risk",
    description="Song & Mittal's privacy risk score: posterior membership probability given the target's "
    "modified entropy, from per-class IN/OUT histograms of the references or of shadow models on their own "
    "records (Song & Mittal 2021).",
    params=[
        Param("bins", int, 5, "histogram bins per class (shared edges for IN and OUT; the authors' default 5)",
              low=2, high=10000),
        Param("log_bins", bool, True, "log-spaced bins (the authors' default) instead of equal-width ones"),
    ],
    requires=always(Release("probabilities")),
    tasks=("classification",),
    version=2,
)
def privacy_risk_attack(data: AttackData, bins: int = 5, log_bins: bool = True) -> AttackOutput:
    """Privacy risk score ``r(x) = P(x ∈ train | Mentr(p(x), y))``, estimated on models of known membership.

    For each class ``c``, the modified entropies (:func:`attacks.metric.modified_entropy`) of the records of class
    ``c`` under the models the attacker knows the membership of (shadow models on their own records when given,
    else the references on the audited records; :meth:`attacks.base.AttackData.labelled_outputs`) are split into
    IN and OUT samples; their normalised histograms give the posterior at the target's ``m = Mentr(p(x), y)``
    (:func:`histogram_posterior`), in ``[0, 1]`` (Song & Mittal 2021, Sec. 6.1, Eq. 5).

    A class without both IN and OUT points uses the histograms of all classes pooled (the authors' code has no
    rule for it); ``info`` counts those classes (``risk_classes_global_fallback``).

    Raises
    ------
    ValueError
        Without references or shadow models, or without both IN and OUT points among them.
    """
    learn = data.labelled_outputs()
    if learn is None or learn.keep.all() or not learn.keep.any():
        raise ValueError(
            "attack 'privacy_risk' learns its histograms on models of known membership and needs both IN and OUT "
            "points among them: give reference models (grids: protocol.n_models >= 2) or shadow models on their own "
            "records (bench audit)"
        )
    labels, keep = np.asarray(data.labels), learn.keep
    m_target = modified_entropy(data.target, labels)
    m_learn = in_model_chunks(modified_entropy, learn.outputs, learn.labels)
    scores = histogram_posterior(m_learn[keep], m_learn[~keep], m_target, bins, log_bins)
    classes = np.unique(labels)
    fallback = 0
    for c in classes:
        values, member = m_learn[:, learn.labels == c], keep[:, learn.labels == c]
        if member.all() or not member.any():
            fallback += 1
            continue
        in_class = labels == c
        scores[in_class] = histogram_posterior(values[member], values[~member], m_target[in_class], bins, log_bins)
    return AttackOutput(scores, {"risk_classes_global_fallback": fallback, "n_classes": len(classes)})
