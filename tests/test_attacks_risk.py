import numpy as np
import pytest

from attacks.base import AttackData
from attacks.metric import modified_entropy
from attacks.risk import histogram_posterior, privacy_risk_attack
from bench.metrics import auc
from privkernel.errors import BenchError
from privkernel.registry import ATTACKS
from tests.attack_data import release_from_phi, synthetic


def test_histogram_posterior_by_hand():
    # equal-width bins [0, 1) and [1, 2]; IN counts 3, 1 of 4; OUT counts 0, 4 of 4 (normalised per side, P(in) = 1/2)
    values_in, values_out = np.array([0.0, 0.0, 0.5, 1.0]), np.array([1.0, 2.0, 2.0, 1.5])
    query = np.array([-5.0, 0.2, 1.0, 2.0, 7.0])
    r1 = (1 / 4) / (1 / 4 + 1)
    np.testing.assert_allclose(histogram_posterior(values_in, values_out, query, 2, log_bins=False),
                               [1.0, 1.0, r1, r1, r1])
    # an unequal number of IN and OUT points does not move the posterior: each side is normalised
    got = histogram_posterior(np.array([0.0]), np.array([0.0, 0.0, 2.0]), np.array([0.0]), 2, log_bins=False)
    assert got[0] == pytest.approx(1 / (1 + 2 / 3))
    # a bin neither side visits takes the nearest visited bin's posterior, the one below first
    empty = histogram_posterior(np.array([0.0, 0.0]), np.array([3.0, 3.0]), np.array([1.5]), 3, log_bins=False)
    assert empty[0] == 1.0
    # log-spaced bins: edges 1e-10 (the floor), 1e-5, 1 for values 0, 1e-6, 1
    log = histogram_posterior(np.array([0.0, 1e-6]), np.array([1.0, 1.0]), np.array([0.0, 1e-7, 0.5]), 2)
    np.testing.assert_allclose(log, [1.0, 1.0, 0.0])


def _binary_release(phi, labels, n_classes=2):
    weights = np.where(np.arange(n_classes) == labels[:, None], 0.0, 1.0)
    weights = weights / weights.sum(1, keepdims=True)
    return release_from_phi(np.asarray(phi, dtype=np.float64), labels, weights, dtype=np.float64)


def test_risk_is_per_class_and_follows_the_histograms():
    # class 0: members confident (low Mentr), non-members not; class 1: the reverse
    rng = np.random.default_rng(0)
    n, n_refs = 400, 6
    labels = np.arange(n) % 2
    keep = rng.random((n_refs, n)) < 0.5
    direction = np.where(labels == 0, 1.0, -1.0)
    phi = rng.normal(0, 0.5, (n_refs, n)) + 3.0 * direction * keep
    target_phi = np.linspace(-4, 4, n)
    data = AttackData(_binary_release(target_phi, labels), labels, _binary_release(phi, labels), keep)
    out = privacy_risk_attack(data, bins=10)
    scores = out.scores
    assert ((scores >= 0) & (scores <= 1)).all()
    assert out.info == {"risk_classes_global_fallback": 0, "n_classes": 2}
    # each class has its own histograms
    m_t, m_r = modified_entropy(data.target, labels), modified_entropy(data.references, labels)
    for c in (0, 1):
        cls = labels == c
        vin, vout = m_r[:, cls][keep[:, cls]], m_r[:, cls][~keep[:, cls]]
        np.testing.assert_array_equal(scores[cls], histogram_posterior(vin, vout, m_t[cls], 10))
    # class 0: confident target outputs are members; class 1: unconfident ones
    c0, c1 = labels == 0, labels == 1
    near_out_mode = np.abs(target_phi) < 0.5
    assert scores[c0 & (target_phi > 2.5)].min() > 0.9 > 0.1 > scores[c0 & near_out_mode].max()
    assert scores[c1 & (target_phi < -2.5)].min() > 0.9 > 0.1 > scores[c1 & near_out_mode].max()


def test_risk_is_monotone_where_the_histograms_are():
    # bin k of 10 (width 1) holds 10 - k IN values and k + 1 OUT values: the likelihood ratio falls with m
    values_in = np.concatenate([np.full(10 - k, k + 0.5) for k in range(10)])
    values_out = np.concatenate([np.full(k + 1, k + 0.5) for k in range(10)] + [[0.0, 10.0]])
    query = np.linspace(-1, 11, 200)
    risk = histogram_posterior(values_in, values_out, query, 10, log_bins=False)
    assert np.all(np.diff(risk) <= 0) and risk[0] > risk[-1]
    assert ((risk > 0) & (risk < 1)).all()


def test_a_class_without_out_points_uses_the_pooled_histograms():
    s = synthetic(n=300, n_models=5, n_classes=3, seed=6)
    keep = s.data.reference_keep.copy()
    keep[:, s.data.labels == 1] = True
    data = AttackData(s.data.target, s.data.labels, s.data.references, keep)
    out = privacy_risk_attack(data)
    assert out.info["risk_classes_global_fallback"] == 1
    m_t, m_r = modified_entropy(data.target, data.labels), modified_entropy(data.references, data.labels)
    pooled = histogram_posterior(m_r[keep], m_r[~keep], m_t, 5)
    np.testing.assert_allclose(out.scores[data.labels == 1], pooled[data.labels == 1])
    assert not np.allclose(out.scores[data.labels == 0], pooled[data.labels == 0])


def test_risk_finds_a_global_signal_and_stays_in_the_unit_interval():
    s = synthetic(n=2000, n_models=9, signal=2.0, difficulty=0.5, seed=7)
    scores = privacy_risk_attack(s.data).scores
    assert ((scores >= 0) & (scores <= 1)).all()
    assert auc(scores, s.membership) > 0.75


def test_bins_parameter_is_validated():
    with pytest.raises(BenchError, match="out of range"):
        ATTACKS.get("privacy_risk").validate({"bins": 1})
