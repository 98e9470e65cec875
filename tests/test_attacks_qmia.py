"""QMIA (Bertran et al. 2023): the hinge score, the FPR its threshold realises on fresh non-members, the gain of
conditioning on the record, and its registration, determinism and errors."""

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from scipy.stats import binom

from attacks.base import AttackData
from attacks.qmia import MIN_POPULATION, hinge_score, qmia_attack
from attacks.requirements import Population, RecordFeatures, Release, requirements_of
from bench.metrics import auc
from privkernel.registry import ATTACKS


@pytest.fixture(autouse=True)
def one_thread():
    """The boosting on one OpenMP thread: on a busy small machine, several threads fitting a few thousand records
    spend most of their time waiting on each other (the scores are the same)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield

N_CLASSES = 3
WEIGHTS = np.array([3.0, -2.0, 0.0, 0.0, 0.0])  # the non-members' mean score is linear in the features
CLASS_SHIFT = np.array([0.0, 3.0, -2.0])  # ... and depends on the class


def _release(score: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float64 log-probabilities whose hinge score ``z_y − max_{j≠y} z_j`` is ``score``: the label's logit is
    ``score``, one other logit 0 and the rest below it."""
    n = len(score)
    logits = -rng.uniform(0.5, 3.0, size=(n, N_CLASSES))
    logits[np.arange(n), (labels + 1) % N_CLASSES] = 0.0
    logits[np.arange(n), labels] = score
    return log_softmax(logits, axis=-1)


def _records(rng: np.random.Generator, n: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``[n, 5]``, labels, and a non-member score ``s ~ N(x·w + shift_y, noise²)``."""
    x = rng.normal(size=(n, len(WEIGHTS)))
    labels = rng.integers(N_CLASSES, size=n)
    return x, labels, x @ WEIGHTS + CLASS_SHIFT[labels] + noise * rng.normal(size=n)


def _audit(pool_x, pool_y, pool_s, pop_x, pop_y, pop_s, rng) -> AttackData:
    """An audit of the target alone: QMIA reads no reference, so the one reference is a dummy (NaN outputs)."""
    n = len(pool_y)
    target, population = _release(pool_s, pool_y, rng), _release(pop_s, pop_y, rng)
    return AttackData(
        target, pool_y, np.full((1, *target.shape), np.nan), (np.arange(n) % 2)[None],
        population_target=population, population_references=np.full((1, *population.shape), np.nan),
        population_labels=pop_y, features=pool_x, population_features=pop_x,
    )


def _synthetic(n_pool=600, n_pop=1000, shift=2.0, seed=0) -> tuple[AttackData, np.ndarray, np.ndarray]:
    """A pool of which every second record is a member (score raised by ``shift``), a population of non-members;
    also the membership and the pool's scores."""
    rng = np.random.default_rng(seed)
    pool_x, pool_y, pool_s = _records(rng, n_pool)
    member = np.arange(n_pool) % 2 == 1
    data = _audit(pool_x, pool_y, pool_s + shift * member, *_records(rng, n_pop), rng)
    return data, member, pool_s + shift * member


def _tpr_at_fpr(scores: np.ndarray, member: np.ndarray, fpr: float) -> float:
    """TPR of the threshold that flags the ``⌊fpr · n_out⌋`` highest-scored non-members (no ties here)."""
    out = np.sort(scores[~member])[::-1]
    k = int(np.floor(fpr * len(out)))
    threshold = out[k] if k < len(out) else -np.inf
    return float((scores[member] > threshold).mean())


def test_hinge_score_is_the_logit_margin_even_where_p_y_rounds_to_one():
    logits = np.array([[30.0, 12.0, 10.0], [-5.0, 3.0, 2.0], [40.0, 0.0, 0.0], [1.0, 1.0, 4.0]])
    labels = np.array([0, 0, 0, 1])
    released = torch.log_softmax(torch.tensor(logits, dtype=torch.float32), -1).numpy()
    expected = [30.0 - 12.0, -5.0 - 3.0, 40.0, 1.0 - 4.0]
    np.testing.assert_allclose(hinge_score(released, labels), expected, rtol=1e-5)
    # releases with exact zeros stay finite: p_y = 0 floors log p_y, p_y = 1 floors the best other class
    with np.errstate(divide="ignore"):
        one_hot = np.log(np.eye(3))[[0, 1]]
        assert np.isfinite(hinge_score(one_hot, np.array([0, 0]))).all()


@pytest.mark.parametrize("model", ["gaussian", "quantile"])
def test_score_above_zero_flags_alpha_of_fresh_non_members(model):
    """The known answer: on held-out non-members drawn like the population, ``score > 0`` flags a fraction α; the
    count lies in the central 99 % of Binomial(2000, α)."""
    alpha, n_held_out = 0.1, 2000
    rng = np.random.default_rng(1)
    data = _audit(*_records(rng, n_held_out), *_records(rng, 6000), rng)
    out = qmia_attack(data, alpha=alpha, model=model, calibration=0.5)
    flagged = int((out.scores > 0).sum())
    low, high = binom.ppf(0.005, n_held_out, alpha), binom.ppf(0.995, n_held_out, alpha)
    assert low <= flagged <= high, (flagged, low, high)
    assert out.info["qmia_n_calibration"] == 3000 and out.info["qmia_n_fit"] == 3000


@pytest.mark.parametrize("model", ["gaussian", "quantile"])
def test_conditioning_on_the_record_beats_a_global_threshold_at_low_fpr(model):
    """The non-members' score varies across records (sd ≈ 4.2, from two features and the class) far more than the
    member shift (2, noise sd 1): a global threshold on ``s`` finds about 3.5 % of the members at 1 % FPR, the exact
    per-record one Φ(2 − 2.33) ≈ 37 %; QMIA, which learns it from 2,400 records, finds 20 % or more."""
    data, member, s = _synthetic(n_pool=4000, n_pop=3000, seed=2)
    out = qmia_attack(data, alpha=0.01, model=model)
    qmia_tpr, global_tpr = _tpr_at_fpr(out.scores, member, 0.01), _tpr_at_fpr(s, member, 0.01)
    assert global_tpr < 0.06 and qmia_tpr > 0.15 and qmia_tpr > 4 * global_tpr, (qmia_tpr, global_tpr)
    assert auc(out.scores, member) > auc(s, member) + 0.1


def test_registered_with_its_requirements_and_tasks():
    component = ATTACKS.get("qmia")
    assert requirements_of(component) == (Release("probabilities"), Population(), RecordFeatures())
    assert set(component.tags["tasks"]) == {"classification", "regression"}
    assert "no reference models" in component.description
    assert component.validate({})["model"] == "gaussian" and component.validate({})["alpha"] == 0.01


def test_deterministic_for_a_seed_and_blind_to_the_references():
    data, _, _ = _synthetic(n_pool=200, n_pop=400)
    first, again = qmia_attack(data, seed=3), qmia_attack(data, seed=3)
    np.testing.assert_array_equal(first.scores, again.scores)
    assert first.info == again.info
    assert np.isfinite(first.scores).all()  # the references are NaN: not one was read
    assert not np.array_equal(first.scores, qmia_attack(data, seed=4).scores)
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in first.info.values())


def test_wide_features_are_projected_on_the_population_principal_components():
    """784 features that are a rotation of 5 informative ones plus small noise: QMIA fits on 16 components, which
    hold nearly all of the variance, and still conditions on the record."""
    data, member, s = _synthetic(n_pool=1000, n_pop=1500, seed=5)
    rng = np.random.default_rng(6)
    rotation = np.linalg.qr(rng.normal(size=(784, len(WEIGHTS))))[0].T  # [5, 784], orthonormal rows
    def widen(x):
        return x @ rotation + 0.01 * rng.normal(size=(len(x), 784))
    wide = AttackData(
        data.target, data.labels, data.references, data.reference_keep, data.population_target,
        data.population_references, data.population_labels,
        features=widen(data.features), population_features=widen(data.population_features),
    )
    out = qmia_attack(wide, max_dims=16)
    assert out.info["qmia_dims"] == 16 and 0.95 < out.info["qmia_explained_variance"] <= 1.0
    assert auc(out.scores, member) > auc(s, member) + 0.1
    assert qmia_attack(data).info["qmia_dims"] == 5  # few features are kept as they are


def test_regression_conditions_the_residual_on_the_record():
    """The target errs on non-members by a bias that depends on the record (2·x₀ + x₁, noise sd 0.5) and only by
    half of it on members. −|residual| alone mistakes the non-members of small bias for members; QMIA compares each
    record with non-members like it."""
    rng = np.random.default_rng(7)

    def records(n):
        x = rng.normal(size=(n, 3))
        return x, rng.normal(size=n), 2 * x[:, 0] + x[:, 1], 0.5 * rng.normal(size=n)

    pool_x, pool_y, bias, noise = records(1000)
    member = np.arange(1000) % 2 == 1
    residual = np.where(member, 0.5 * bias, bias) + noise
    pop_x, pop_y, pop_bias, pop_noise = records(1500)
    data = AttackData(
        (pool_y + residual)[:, None], pool_y, np.full((1, 1000, 1), np.nan), member[None].astype(int),
        population_target=(pop_y + pop_bias + pop_noise)[:, None],
        population_references=np.full((1, 1500, 1), np.nan), population_labels=pop_y, task="regression",
        features=pool_x, population_features=pop_x,
    )
    out = qmia_attack(data)
    assert np.isfinite(out.scores).all()
    assert auc(out.scores, member) > auc(-np.abs(residual), member) + 0.05
    assert _tpr_at_fpr(out.scores, member, 0.05) > 2 * _tpr_at_fpr(-np.abs(residual), member, 0.05)


def test_missing_features_or_too_few_population_records_are_refused():
    data, _, _ = _synthetic(n_pool=100, n_pop=MIN_POPULATION - 1)
    with pytest.raises(ValueError, match=f"at least {MIN_POPULATION} population records"):
        qmia_attack(data)
    data, _, _ = _synthetic(n_pool=100, n_pop=200)
    blind = AttackData(data.target, data.labels, data.references, data.reference_keep, data.population_target,
                       data.population_references, data.population_labels)
    with pytest.raises(ValueError, match="needs the records' features"):
        qmia_attack(blind)
    no_population = AttackData(data.target, data.labels, data.references, data.reference_keep,
                               features=data.features)
    with pytest.raises(ValueError, match="needs population records"):
        qmia_attack(no_population)
    mismatched = AttackData(data.target, data.labels, data.references, data.reference_keep, data.population_target,
                            data.population_references, data.population_labels, features=data.features[:, :3],
                            population_features=data.population_features)
    with pytest.raises(ValueError, match="must be the same flat input features"):
        qmia_attack(mismatched)
