"""The true-class signals: exact against a slow reference, the same chunked or not, and every attack scores the same
from an audit's shared signals as from its own computation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import logsumexp

from attacks.base import TRUE_CLASS_FIELDS, AttackData, AttackOutput
from attacks.metric import modified_entropy
from attacks.signals import LOG_FLOOR, in_model_chunks, model_signals, true_class_log_probs
from bench.audit import Audit, call_params
from privkernel.registry import ATTACKS
from tests.attack_data import synthetic
from tests.test_attacks_all import FAST, NEW_ATTACKS


def reference_true_class(log_probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The slow path, term by term: log p_y from the released value, or from log1p of the other classes' sum where
    p_y > 1/2; log(1 − p_y) by scipy's log-sum-exp over the other classes."""
    lp = np.clip(np.asarray(log_probs, dtype=np.float64), LOG_FLOOR, 0.0)
    on = np.arange(lp.shape[-1]) == labels[:, None]
    released = np.where(on, lp, 0.0).sum(-1)
    log_rest = logsumexp(np.where(on, -np.inf, lp), axis=-1)
    rest = np.exp(log_rest)
    log_p_y = np.where(rest < 0.5, np.log1p(-np.minimum(rest, 0.5)), released)
    return np.maximum(log_p_y, LOG_FLOOR), np.maximum(log_rest, LOG_FLOOR)


def releases(rng: np.random.Generator, n: int, c: int, scale: float) -> np.ndarray:
    logits = rng.normal(0, scale, (3, n, c))
    return (logits - logsumexp(logits, -1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])  # near uniform, typical, p_y rounding to 1 or 0
def test_true_class_log_probs_equal_the_log_sum_exp_reference(scale):
    rng = np.random.default_rng(0)
    lp = releases(rng, 500, 10, scale)
    labels = rng.integers(0, 10, 500)
    for got, want in zip(true_class_log_probs(lp, labels), reference_true_class(lp, labels), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_degenerate_releases_stay_at_the_floor():
    one_hot = np.where(np.eye(3)[[0, 1, 2, 0]] > 0, 0.0, -np.inf)  # zeros become the floor; the true class may be one
    log_p_y, log_rest = true_class_log_probs(one_hot, np.array([0, 0, 2, 1]))
    np.testing.assert_allclose(log_p_y, [0.0, LOG_FLOOR, 0.0, LOG_FLOOR], atol=1e-12)
    assert np.isfinite(log_rest).all() and (log_rest >= LOG_FLOOR).all()
    single = true_class_log_probs(np.zeros((4, 1)), np.zeros(4, int))  # one class: no other class at all
    np.testing.assert_array_equal(single[1], np.full(4, LOG_FLOOR))


def test_a_statistic_in_model_chunks_equals_one_call():
    rng = np.random.default_rng(2)
    lp, labels = releases(rng, 100, 5, 3.0), rng.integers(0, 5, 100)
    np.testing.assert_array_equal(in_model_chunks(modified_entropy, lp, labels, chunk_elements=1),
                                  modified_entropy(lp, labels))
    np.testing.assert_array_equal(in_model_chunks(modified_entropy, lp[0], labels), modified_entropy(lp[0], labels))


def test_model_signals_in_chunks_equal_one_call():
    rng = np.random.default_rng(1)
    lp, labels = releases(rng, 200, 7, 3.0), rng.integers(0, 7, 200)
    whole = np.stack(true_class_log_probs(lp, labels), -1)
    np.testing.assert_array_equal(model_signals(lp, labels, chunk_elements=1), whole)
    np.testing.assert_array_equal(model_signals(lp, labels), whole)


@pytest.fixture(scope="module")
def audit():
    """A synthetic audit of 9 models whose signals the audit computed once."""
    case = synthetic(n=600, n_models=9, signal=1.0, difficulty=1.0, class_shift=1.0, seed=3)
    d = case.data
    outputs = np.concatenate([d.target[None], d.references])
    population = np.concatenate([d.population_target[None], d.population_references])
    keep = np.concatenate([case.membership[None], d.reference_keep])
    return Audit(outputs, keep, d.labels, population, d.population_labels)


def _scores(name: str, data: AttackData) -> np.ndarray:
    component = ATTACKS.get(name)
    out = component.obj(data, **component.validate(FAST.get(name, {})))
    return (out if isinstance(out, AttackOutput) else AttackOutput(out)).scores


@pytest.mark.parametrize("name", NEW_ATTACKS)
@pytest.mark.parametrize("target", [0, 4])
def test_every_attack_scores_the_same_from_shared_signals_as_from_its_own(name, target, audit):
    shared = audit.attack_data(target)
    assert all(getattr(shared, field) is not None for field in TRUE_CLASS_FIELDS.values())
    own = dataclasses.replace(shared, **dict.fromkeys(TRUE_CLASS_FIELDS.values()))
    np.testing.assert_allclose(_scores(name, shared), _scores(name, own), rtol=1e-6, atol=1e-9)
    # and the shared signals are the slices of the audit's one computation
    np.testing.assert_array_equal(shared.reference_true_class,
                                  audit.observed["true_class"][[m for m in range(9) if m != target]])


def test_signals_of_another_shape_are_refused():
    case = synthetic(n=50, n_models=3, signal=1.0, seed=0)
    with pytest.raises(ValueError, match="inconsistent target_true_class"):
        dataclasses.replace(case.data, target_true_class=np.zeros((49, 2)))


def test_a_view_with_other_outputs_drops_the_old_signals(audit):
    shared = audit.attack_data(0)
    other = shared.with_outputs(target=shared.references[0], references=shared.references[::-1])
    assert all(getattr(other, field) is None for field in TRUE_CLASS_FIELDS.values())
    np.testing.assert_array_equal(other.true_class("target")[0], true_class_log_probs(shared.references[0],
                                                                                         shared.labels)[0])
    with pytest.raises(TypeError, match="replaces outputs only"):
        shared.with_outputs(labels=shared.labels)


def test_the_rounds_attack_scores_each_round_from_that_rounds_outputs(audit):
    """The federated insider's attack runs its base attack on every round's outputs: the audit's signals are the
    final outputs', and must not stand in for a round's (they did, until this test)."""
    rng = np.random.default_rng(5)
    outputs, population = audit.observed["outputs"], audit.observed["population_outputs"]
    noisy = lambda a: a + rng.normal(0, 0.5, a.shape)  # other rounds: other outputs
    rounds = np.stack([noisy(outputs), outputs])
    population_rounds = np.stack([noisy(population), population])
    with_rounds = Audit(outputs, audit.keep, audit.labels, population, audit.shared["population_labels"],
                        rounds=rounds, population_rounds=population_rounds)
    shared = with_rounds.attack_data(0)
    own = dataclasses.replace(shared, **dict.fromkeys(TRUE_CLASS_FIELDS.values()))
    rounds_attack = ATTACKS.get("rounds").obj
    params = call_params(rounds_attack, ATTACKS.get("rounds").validate({}))
    np.testing.assert_allclose(rounds_attack(shared, **params).scores, rounds_attack(own, **params).scores, rtol=1e-9)
