"""Typed requirements: each attack gets what it declares (attacks.requirements), served by the observation step,
and the harness never reads an attack's parameters by name."""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from attacks.base import AttackData, observations
from attacks.requirements import (
    LeakedMembership,
    PerturbedLabelQueries,
    Population,
    Release,
    Requirement,
    RoundSnapshots,
    WhiteBoxFeatures,
    always,
    call_params,
    requirements_of,
)
from bench.audit import Audit, Servable, skip_reason
from bench.cache import Cache
from bench.grid import load_grid
from bench.pipeline import CellRun
from bench.spec import ComponentSpec
from privkernel.errors import BenchError
from privkernel.hashing import derive_seed
from privkernel.registry import ATTACKS, Param
from targets.observation import perturbed_label_queries
from tests.conftest import TINY_GRID, write_grid

FEDERATED = {
    **TINY_GRID, "architectures": [{"name": "mlp", "params": {"width": 8, "depth": 1}}], "attacks": ["loss"],
    "protocol": {"n_models": 4, "n_targets": 1, "calibration_models": 1},
    "training": {"engine": "federated", "sites": 3, "rounds": 2, "epochs": 1, "lr": 0.01},
}


def spec(name: str, **params) -> ComponentSpec:
    component = ATTACKS.get(name)
    return ComponentSpec.make(name, component.validate(params), component.validate({}))


@pytest.fixture(scope="module")
def cell_run(tmp_path_factory) -> CellRun:
    """A federated cell of 4 models (3 sites, 2 rounds), trained once for the module."""
    tmp_path = tmp_path_factory.mktemp("requirements")
    cell = load_grid(str(write_grid(tmp_path, FEDERATED))).cells[0]
    return CellRun(cell, Cache(tmp_path / "cache"))


def _queries(run: CellRun, noise: float, queries: int) -> np.ndarray:
    s = run.split()
    y = torch.as_tensor(run.features()["y"][s["pool"]])
    return perturbed_label_queries(run._ensemble(), run.inputs(s["pool"]), y, noise, queries,
                                   derive_seed(run.cell.seed, "queries"))


def test_label_only_gets_the_queries_of_its_own_noise_and_count(cell_run):
    few = cell_run.audit(spec("label_only", noise=0.3, queries=3)).observed["robustness"]
    many = cell_run.audit(spec("label_only", noise=2.0, queries=5)).observed["robustness"]
    np.testing.assert_array_equal(many, _queries(cell_run, 2.0, 5))
    np.testing.assert_array_equal(few, _queries(cell_run, 0.3, 3))
    # the count is the attack's: fractions of 3 and of 5 queries
    np.testing.assert_allclose(few * 3, np.round(few * 3), atol=1e-6)
    np.testing.assert_allclose(many * 5, np.round(many * 5), atol=1e-6)
    assert not np.allclose(few * 5, np.round(few * 5), atol=1e-6)
    # more noise, fewer correct labels
    assert many.mean() < few.mean()


def test_a_rounds_attack_gets_the_view_it_declared(cell_run):
    obs = cell_run.observations()
    site = cell_run.audit(spec("rounds", view="site", site=2))
    np.testing.assert_array_equal(site.observed["rounds"], obs["rounds.site/pool"][:, :, 2])
    np.testing.assert_array_equal(site.observed["population_rounds"], obs["rounds.site/test"][:, :, 2])
    whole = cell_run.audit(spec("rounds"))
    np.testing.assert_array_equal(whole.observed["rounds"], obs["rounds.global/pool"])
    assert not np.array_equal(whole.observed["rounds"], site.observed["rounds"])
    # the attacker's view of target 1: its rounds [T, N, C], the other models' [T, R, N, C]
    data = site.attack_data(1)
    np.testing.assert_array_equal(data.target_rounds, obs["rounds.site/pool"][:, 1, 2])
    np.testing.assert_array_equal(data.reference_rounds, obs["rounds.site/pool"][:, [0, 2, 3], 2])
    # an attack that declares no rounds gets none, nor any other observation it did not ask for: the release, and
    # the true-class signals every audit derives from it
    assert set(cell_run.audit(spec("loss")).observed) == {"outputs", "population_outputs", "true_class",
                                                          "population_true_class"}


def test_a_new_attack_gets_what_it_declares_without_a_pipeline_change(cell_run, registries):
    seen: list[AttackData] = []

    @ATTACKS.register(
        "probe", description="test: returns the target's robustness",
        params=[Param("noise", float, 0.7, "query noise", low=0.0), Param("watch", int, 1, "site watched", low=0)],
        requires=lambda p: (Release("labels"), PerturbedLabelQueries(p["noise"], 2), WhiteBoxFeatures(),
                            RoundSnapshots("site", p["watch"]), LeakedMembership(0.25, 5)),
    )
    def probe(data: AttackData) -> np.ndarray:  # takes neither noise nor watch: they select its requirements
        seen.append(data)
        return np.asarray(data.target_robustness, dtype=np.float64)

    scores = cell_run.scores(spec("probe", noise=0.4), 0)
    data, obs = seen[0], cell_run.observations()
    np.testing.assert_array_equal(data.target_robustness, _queries(cell_run, 0.4, 2)[0])
    np.testing.assert_array_equal(data.target_white_box, cell_run.white_box()["features"][0])
    assert data.white_box_names == tuple(cell_run.white_box()["names"].tolist())
    np.testing.assert_array_equal(data.target_rounds, obs["rounds.site/pool"][:, 0, 1])
    keep = cell_run.membership()[0]
    assert len(data.leaked_index) == round(0.25 * keep.sum()) + round(0.25 * (~keep).sum())
    np.testing.assert_array_equal(data.leaked_membership, keep[data.leaked_index])
    np.testing.assert_array_equal(scores["target"], data.target_robustness)
    assert not scores["evaluated"][data.leaked_index].any()


@dataclass(frozen=True)
class Telepathy(Requirement):
    """A requirement that no observation step serves."""


def test_a_requirement_that_no_step_serves_is_an_error(cell_run, registries):
    ATTACKS.register("mind_reader", description="test", requires=always(Telepathy()))(lambda data: data.target[:, 0])
    with pytest.raises(BenchError, match="no observation step serves the requirement Telepathy"):
        cell_run.audit(spec("mind_reader"))


def test_requires_must_return_requirements(registries):
    ATTACKS.register("words", description="test", requires=lambda p: ("probabilities",))(lambda data: None)
    ATTACKS.register("twice", description="test", requires=always(Release(), Release("labels")))(lambda data: None)
    for name in ("words", "twice"):
        with pytest.raises(TypeError, match="return a tuple of attacks.requirements.Requirement objects"):
            requirements_of(ATTACKS.get(name))


def test_skip_reasons_follow_the_requirements():
    def reason(name: str, servable: Servable, **params) -> str | None:
        return skip_reason(ATTACKS.get(name), ATTACKS.get(name).validate(params), servable)

    labels_only = Servable(release="labels")
    assert reason("lira", labels_only) == "needs probabilities; the release shows labels only"
    assert reason("correctness", labels_only) is None  # Release("labels")
    assert reason("white_box", labels_only) is None  # the weights, whatever the release shows
    assert reason("leaked", labels_only) == "needs probabilities; the release shows labels only"
    assert reason("leaked", labels_only, features="white_box") is None
    assert "label-only queries" in reason("label_only", Servable(queries=False))
    assert "white-box access" in reason("white_box", Servable(parameters=False))
    assert "every federated round" in reason("rounds", Servable())
    assert reason("rounds", Servable(rounds=True)) is None
    assert "population records" in reason("rounds", Servable(rounds=True, population=False), base="rmia")
    assert reason("rounds", Servable(rounds=True, population=False), base="lira") is None


def test_audit_takes_exactly_the_observations_that_attack_data_declares():
    keep = np.array([[True, False], [False, True], [True, True]])
    outputs = np.log(np.full((3, 2, 2), 0.5))
    rounds = np.arange(5 * 3 * 2 * 2, dtype=float).reshape(5, 3, 2, 2)
    audit = Audit(outputs, keep, np.array([0, 1]), robustness=np.eye(3)[:, :2], rounds=rounds)
    data = audit.attack_data(2)
    np.testing.assert_array_equal(data.target_robustness, [0.0, 0.0])
    np.testing.assert_array_equal(data.reference_robustness, [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(data.target_rounds, rounds[:, 2])
    np.testing.assert_array_equal(data.reference_keep, keep[:2])
    assert data.target_white_box is None and data.population_target is None
    assert set(observations()) == {"outputs", "population_outputs", "robustness", "white_box", "rounds",
                                   "population_rounds", "true_class", "population_true_class"}
    with pytest.raises(TypeError, match="AttackData declares no observation or field 'gradients'"):
        Audit(outputs, keep, np.array([0, 1]), gradients=outputs)


def test_an_attack_receives_only_the_parameters_its_function_takes():
    def attack(data, hidden=1):
        return hidden

    assert call_params(attack, {"hidden": 3, "noise": 0.5}) == {"hidden": 3}
    assert call_params(lambda data, **kw: kw, {"a": 1}) == {"a": 1}


def _variants(param: Param) -> list:
    if param.choices is not None:
        return list(param.choices)
    if param.type is bool:
        return [False, True]
    candidates = [param.default, param.default * 2 + 1, param.default / 2] if param.type is float else [
        param.default, param.default + 1]
    out = []
    for value in candidates:
        try:
            out.append(param.validate(value, "test"))
        except BenchError:
            pass
    return out


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_parameter_an_attack_function_does_not_take_selects_a_requirement(name):
    """No attack takes a parameter it never uses: each registered parameter is an argument of the function or
    changes the attack's requirements (and each argument of the function is a registered parameter)."""
    component = ATTACKS.get(name)
    taken = set(inspect.signature(component.obj).parameters) - {"data"}
    registered = {p.name: p for p in component.params}
    assert taken <= set(registered), f"{name}: arguments {taken - set(registered)} are not registered parameters"
    contexts = [dict(zip([p.name for p in component.params if p.choices], values, strict=True))
                for values in itertools.product(*[p.choices for p in component.params if p.choices])]
    for param in (p for p in component.params if p.name not in taken):
        found = {requirements_of(component, {**context, param.name: value})
                 for context in contexts for value in _variants(param)}
        by_context = [len({requirements_of(component, {**c, param.name: v}) for v in _variants(param)}) > 1
                      for c in contexts]
        assert any(by_context), f"{name}: parameter {param.name!r} is neither taken nor read by requires ({found})"


def test_requirements_of_the_built_in_attacks():
    assert requirements_of(ATTACKS.get("label_only"), {"noise": 0.1, "queries": 7}) == (
        Release("labels"), PerturbedLabelQueries(0.1, 7))
    assert requirements_of(ATTACKS.get("rounds"), {"view": "site", "site": 3, "base": "rmia"}) == (
        Release("probabilities"), RoundSnapshots("site", 3), Population())
    assert requirements_of(ATTACKS.get("rounds"), {"site": 3}) == (Release("probabilities"), RoundSnapshots("global"))
    assert requirements_of(ATTACKS.get("rmia")) == (Release("probabilities"), Population())
    with pytest.raises(ValueError, match="give a site for view 'site' only"):
        RoundSnapshots("global", 1)
