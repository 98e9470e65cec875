"""Song & Mittal's privacy risk score (USENIX Security 2021, Sec. 6).

Song, L. and Mittal, P. "Systematic Evaluation of Privacy Risks of Machine Learning Models", USENIX Security 2021.
"""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData, AttackOutput
from attacks.metric import modified_entropy
from attacks.requirements import Release, always
from privkernel.registry import ATTACKS, Param


def histogram_posterior(
    values_in: np.ndarray, values_out: np.ndarray, query: np.ndarray, bins: int
) -> np.ndarray:
    """Posterior ``P(in | m)`` at each ``query`` value from IN and OUT samples of ``m``, by histograms.

    Both histograms share ``bins`` equal-width bins spanning all IN and OUT samples; a query outside that
    span falls in the nearest end bin. Densities are add-one (Laplace) smoothed,
    ``P_in(bin) = (count_in(bin) + 1) / (n_in + bins)`` and the same for OUT, so that a bin that only one side
    visits gives a posterior strictly inside (0, 1) and an empty bin gives the prior. With the prior
    ``P(in) = n_in / (n_in + n_out)``:

        ``r(m) = P(in) P_in(m) / (P(in) P_in(m) + P(out) P_out(m))``.
    """
    n_in, n_out = len(values_in), len(values_out)
    edges = np.histogram_bin_edges(np.concatenate([values_in, values_out]), bins=bins)
    dens_in = (np.histogram(values_in, edges)[0] + 1.0) / (n_in + bins)
    dens_out = (np.histogram(values_out, edges)[0] + 1.0) / (n_out + bins)
    # np.histogram's last bin is closed on the right; the index below agrees with it
    index = np.clip(np.searchsorted(edges, query, side="right") - 1, 0, bins - 1)
    joint_in = n_in / (n_in + n_out) * dens_in[index]
    joint_out = n_out / (n_in + n_out) * dens_out[index]
    return joint_in / (joint_in + joint_out)


@ATTACKS.register(
    "privacy_risk",
    description="Song & Mittal's privacy risk score: posterior membership probability given the target's "
    "modified entropy, from per-class IN/OUT histograms of the references (Song & Mittal 2021).",
    params=[
        Param("bins", int, 30, "histogram bins per class (shared edges for IN and OUT)", low=2, high=10000),
    ],
    requires=always(Release("probabilities")),
    tasks=("classification",),
)
def privacy_risk_attack(data: AttackData, bins: int = 30) -> AttackOutput:
    """Privacy risk score ``r(x) = P(x ∈ train | Mentr(p(x), y))``, estimated on the references.

    For each class ``c``, the references' modified entropies (:func:`attacks.metric.modified_entropy`) of the
    pool points of class ``c`` are split into IN and OUT samples by ``reference_keep``; their smoothed
    histograms give ``P_in(m)`` and ``P_out(m)`` and ``P(in)`` is the IN fraction of the class
    (:func:`histogram_posterior`). The score is the posterior at the target's ``m = Mentr(p(x), y)``, in
    ``[0, 1]`` (Song & Mittal 2021, Sec. 6.1, Eq. 5, with ``P(in)`` estimated rather than set to ½).

    A class without both IN and OUT reference points uses the histograms of all classes pooled; ``info``
    counts those classes (``risk_classes_global_fallback``).

    Raises
    ------
    ValueError
        Without references, or without both IN and OUT reference points.
    """
    keep = np.asarray(data.reference_keep, dtype=bool)
    if data.n_references == 0 or keep.all() or not keep.any():
        raise ValueError(
            "attack 'privacy_risk' needs reference models with both IN and OUT points; "
            "run it with at least 2 models (protocol.n_models) and a membership split"
        )
    labels = np.asarray(data.labels)
    m_target = modified_entropy(data.target, labels)
    m_refs = modified_entropy(data.references, labels)
    scores = histogram_posterior(m_refs[keep], m_refs[~keep], m_target, bins)
    classes, class_index = np.unique(labels, return_inverse=True)
    fallback = 0
    for i in range(len(classes)):
        in_class = class_index == i
        values, member = m_refs[:, in_class], keep[:, in_class]
        if member.all() or not member.any():
            fallback += 1
            continue
        scores[in_class] = histogram_posterior(values[member], values[~member], m_target[in_class], bins)
    return AttackOutput(scores, {"risk_classes_global_fallback": fallback, "n_classes": len(classes)})
