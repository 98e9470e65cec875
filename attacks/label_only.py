"""Label-only attacks (Choquette-Choo et al. 2021): for releases that show the predicted label only."""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData, AttackOutput
from attacks.requirements import PerturbedLabelQueries, Release
from privkernel.registry import ATTACKS, Param


@ATTACKS.register(
    "label_only",
    description="Label-only robustness (Choquette-Choo et al. 2021): how often the label stays correct under "
    "small Gaussian input noise, relative to reference models that did not train on the point.",
    params=[
        Param("noise", float, 0.5, "standard deviation of the Gaussian query noise, in feature units", low=0.0,
              low_inclusive=False, high=100.0),
        Param("queries", int, 16, "noisy queries per point", low=1, high=1024),
    ],
    requires=lambda p: (Release("labels"), PerturbedLabelQueries(noise=p["noise"], queries=p["queries"])),
    tasks=("classification",),
    perturbs=("vector", "image", "volume"),
)
def label_only(data: AttackData) -> AttackOutput:
    """Score = r_t(x) − mean of r_ref(x) over the references that did not train on x.

    ``r(x)`` is the fraction of ``queries`` noisy copies of ``x`` that a model labels correctly: the harness
    makes the queries that the parameters ``noise`` and ``queries`` select (:class:`PerturbedLabelQueries`).
    Members sit further from the decision boundary of the model that trained on them, so they survive more noise
    than under an OUT reference.
    Points without an OUT reference are compared with the mean over all references, and counted.
    """
    if data.target_robustness is None or data.reference_robustness is None:
        raise ValueError("attack 'label_only' needs the robustness of every model's labels under noisy queries")
    if data.n_references == 0:
        raise ValueError("attack 'label_only' needs reference models; run it with at least 2 models")
    out = ~data.reference_keep
    n_out = out.sum(axis=0)
    out_mean = (data.reference_robustness * out).sum(axis=0) / np.maximum(n_out, 1)
    baseline = np.where(n_out > 0, out_mean, data.reference_robustness.mean(axis=0))
    scores = data.target_robustness.astype(np.float64) - baseline
    return AttackOutput(scores, {"label_only_no_out_refs": float((n_out == 0).sum())})
