"""pytest-benchmark group ``attack_scoring``: LiRA and RMIA scoring of N = 10,000 points with 64 references
(goal: under 2 s each on the 2-core CI machine). Run with ``tox -e bench``."""

from __future__ import annotations

import pytest

from privkernel.registry import ATTACKS
from tests.attack_data import synthetic


@pytest.fixture(scope="module")
def big():
    return synthetic(n=10_000, n_models=65, n_classes=10, n_population=10_000, seed=0).data


@pytest.mark.benchmark(group="attack_scoring")
@pytest.mark.parametrize("attack, params", [
    ("lira", {"mode": "online"}),
    ("lira", {"mode": "offline"}),
    ("rmia", {"mode": "online"}),
    ("rmia", {"mode": "offline", "a": 0.3}),
    ("rmia", {"mode": "offline"}),  # a tuned on the references
])
def test_score_10k_points_64_references(benchmark, big, attack, params):
    component = ATTACKS.get(attack)
    kwargs = component.validate(params)
    out = benchmark.pedantic(component.obj, args=(big,), kwargs=kwargs, rounds=3, iterations=1, warmup_rounds=1)
    scores = getattr(out, "scores", out)
    assert scores.shape == (10_000,)
