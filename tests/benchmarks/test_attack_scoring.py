"""pytest-benchmark group ``attack_scoring``: LiRA and RMIA scoring of N = 10,000 points with 64 references
(goal: under 2 s each on the 2-core CI machine). Run with ``tox -e bench``.

``signals``: ``outputs`` gives the attack the released outputs only, so it computes the true-class signals itself;
``shared`` gives it the view of an audit, whose signals were computed once for all its models
(:mod:`attacks.signals`), as in a grid cell, where every attack, target and calibration audit reads them."""

from __future__ import annotations

import numpy as np
import pytest

from bench.audit import Audit
from privkernel.registry import ATTACKS
from tests.attack_data import synthetic


@pytest.fixture(scope="module")
def views():
    case = synthetic(n=10_000, n_models=65, n_classes=10, n_population=10_000, seed=0)
    d = case.data
    audit = Audit(np.concatenate([d.target[None], d.references]),
                  np.concatenate([case.membership[None], d.reference_keep]), d.labels,
                  np.concatenate([d.population_target[None], d.population_references]), d.population_labels)
    return {"outputs": d, "shared": audit.attack_data(0)}


@pytest.mark.benchmark(group="attack_scoring")
@pytest.mark.parametrize("attack, params", [
    ("lira", {"mode": "online"}),
    ("lira", {"mode": "offline"}),
    ("rmia", {"mode": "online"}),
    ("rmia", {"mode": "offline", "a": 0.3}),
    ("rmia", {"mode": "offline"}),  # a tuned on the references
])
@pytest.mark.parametrize("signals", ["outputs", "shared"])
def test_score_10k_points_64_references(benchmark, views, attack, params, signals):
    component = ATTACKS.get(attack)
    kwargs = component.validate(params)
    out = benchmark.pedantic(component.obj, args=(views[signals],), kwargs=kwargs, rounds=3, iterations=1,
                             warmup_rounds=1)
    scores = getattr(out, "scores", out)
    assert scores.shape == (10_000,)
