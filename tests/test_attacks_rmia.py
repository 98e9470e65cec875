import numpy as np
import pytest
from scipy.special import log_softmax

from attacks.base import AttackData
from attacks.rmia import A_GRID, _log_pr_x, pairwise_fraction, rmia_attack, tune_a
from attacks.signals import true_class_log_probs
from bench.metrics import auc, tpr_at_fpr
from privkernel.errors import BenchError
from privkernel.registry import ATTACKS
from tests.attack_data import synthetic


def _random_data(n=50, n_pop=70, n_refs=5, n_classes=3, seed=0) -> AttackData:
    """float64 releases with moderate probabilities (no near-ties from rounding)."""
    rng = np.random.default_rng(seed)

    def release(*shape):
        return log_softmax(rng.normal(0, 1.5, size=(*shape, n_classes)), axis=-1)

    keep = rng.random((n_refs, n)) < 0.5
    keep[:, 1] = False  # point 1 has no IN reference
    keep[:, 2] = True  # point 2 has no OUT reference
    return AttackData(
        release(n), rng.integers(n_classes, size=n), release(n_refs, n), keep,
        population_target=release(n_pop), population_references=release(n_refs, n_pop),
        population_labels=rng.integers(n_classes, size=n_pop),
    )


def _brute_force(data: AttackData, mode: str, gamma: float, a: float, equalize: bool = True) -> np.ndarray:
    """The paper's definition, one pair (x, z) at a time, in plain probabilities; with ``equalize``, every
    point uses its first k_in IN and k_out OUT references, k the smallest non-zero count over the points."""
    def pr(log_probs, y):
        return float(np.exp(log_probs[y]))

    def correct(p_out):
        return ((1 + a) * p_out + (1 - a)) / 2 if mode == "offline" else p_out

    ratios_z = []
    for j, y in enumerate(data.population_labels):
        pr_z = np.mean([pr(ref[j], y) for ref in data.population_references])
        ratios_z.append(pr(data.population_target[j], y) / correct(pr_z))
    n_in = data.reference_keep.sum(0)
    n_out = data.n_references - n_in
    k_in = n_in[n_in > 0].min() if equalize else data.n_references
    k_out = n_out[n_out > 0].min() if equalize else data.n_references
    scores = []
    for i, y in enumerate(data.labels):
        p_in = [pr(data.references[r, i], y) for r in range(data.n_references) if data.reference_keep[r, i]]
        p_out = [pr(data.references[r, i], y) for r in range(data.n_references) if not data.reference_keep[r, i]]
        p_in, p_out = p_in[:k_in], p_out[:k_out]
        if mode == "online":
            pr_x = (np.mean(p_in) + np.mean(p_out)) / 2 if p_in and p_out else np.mean(p_in or p_out)
        else:
            pr_x = correct(np.mean(p_out)) if p_out else np.mean(p_in)
        ratio_x = pr(data.target[i], y) / pr_x
        scores.append(sum(ratio_x / rz >= gamma for rz in ratios_z) / len(ratios_z))
    return np.array(scores)


@pytest.mark.parametrize("mode, gamma, a, equalize", [
    ("online", 1.0, None, True), ("online", 2.0, None, False), ("offline", 1.0, 0.3, True),
    ("offline", 0.5, 0.0, False), ("offline", 1.0, 1.0, True),
])
def test_rmia_equals_the_brute_force_double_loop(mode, gamma, a, equalize):
    data = _random_data()
    out = rmia_attack(data, mode=mode, gamma=gamma, a=a, equalize_refs=equalize, tie_break="none")
    expected = _brute_force(data, mode, gamma, a, equalize)
    np.testing.assert_allclose(out.scores, expected, atol=1e-12)
    if equalize:  # the data's counts differ between points, so equalizing changes some scores
        assert not np.allclose(expected, _brute_force(data, mode, gamma, a, False))
    assert out.info["rmia_n_population"] == 70
    no_out = int(data.reference_keep.all(0).sum())
    assert no_out >= 1
    assert out.info["rmia_no_out_refs"] == (no_out if mode == "offline" else 0)


def test_online_with_balanced_references_is_the_plain_mean():
    data = _random_data(n_refs=4)
    keep = np.zeros_like(data.reference_keep)
    keep[:2] = True  # two IN and two OUT for every point
    data = AttackData(data.target, data.labels, data.references, keep, data.population_target,
                      data.population_references, data.population_labels)
    y, yz = data.labels, data.population_labels
    p_y = np.take_along_axis(np.exp(data.target), y[:, None], -1)[:, 0]
    pr_x = np.take_along_axis(np.exp(data.references), np.broadcast_to(y[:, None], (4, len(y), 1)), -1)[..., 0]
    p_z = np.take_along_axis(np.exp(data.population_target), yz[:, None], -1)[:, 0]
    pr_z = np.take_along_axis(np.exp(data.population_references), np.broadcast_to(yz[:, None], (4, len(yz), 1)),
                              -1)[..., 0]
    ratio_x, ratio_z = p_y / pr_x.mean(0), p_z / pr_z.mean(0)
    expected = (ratio_x[:, None] / ratio_z[None, :] >= 1.0).mean(1)
    np.testing.assert_allclose(rmia_attack(data, tie_break="none").scores, expected, atol=1e-12)


def test_pairwise_fraction_counts_ties_as_wins():
    x, z = np.array([0.0, 1.0, -5.0, 9.0]), np.array([0.0, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(pairwise_fraction(x, z, 1.0), [0.5, 0.75, 0.0, 1.0])
    np.testing.assert_allclose(pairwise_fraction(x, z, np.e), [0.0, 0.5, 0.0, 1.0])


@pytest.mark.parametrize("tune_fpr", [0.0, 0.1])
def test_tuned_a_maximises_the_pseudo_targets_mean_tpr_at_low_fpr(tune_fpr):
    data = _random_data(n=40, n_pop=30, n_refs=4, seed=1)
    # make the pseudo-targets informative: members get a higher true-class log-probability
    refs = data.references + np.where(data.reference_keep, 0.8, 0.0)[..., None] * (
        np.arange(3) == data.labels[:, None])
    refs = log_softmax(refs, axis=-1)
    data = AttackData(data.target, data.labels, refs, data.reference_keep, data.population_target,
                      data.population_references, data.population_labels)
    out = rmia_attack(data, mode="offline", tune_models=2, tune_fpr=tune_fpr)
    mean_tpr, mean_auc = [], []
    for a in A_GRID:
        tprs, aucs = [], []
        for r in range(2):
            others = np.arange(4) != r
            pseudo = AttackData(refs[r], data.labels, refs[others], data.reference_keep[others],
                                data.population_references[r], data.population_references[others],
                                data.population_labels)
            scores = rmia_attack(pseudo, mode="offline", a=a).scores
            tprs.append(tpr_at_fpr(scores, data.reference_keep[r], tune_fpr))
            aucs.append(auc(scores, data.reference_keep[r]))
        mean_tpr.append(np.mean(tprs))
        mean_auc.append(np.mean(aucs))
    # the best mean TPR; among equal ones the best AUC; then the smallest a
    best = max(range(len(A_GRID)), key=lambda i: (mean_tpr[i], mean_auc[i], -i))
    assert out.info["rmia_a"] == pytest.approx(A_GRID[best])
    assert out.info["rmia_tuned_tpr"] == pytest.approx(mean_tpr[best])
    assert out.info["rmia_tuned_auc"] == pytest.approx(mean_auc[best])
    explicit = rmia_attack(data, mode="offline", a=out.info["rmia_a"])
    np.testing.assert_array_equal(out.scores, explicit.scores)


def test_ties_of_the_fraction_are_broken_by_the_mean_log_ratio_without_reordering():
    data = _random_data(n=200, n_pop=20, seed=3)  # few z: many ties
    plain = rmia_attack(data, tie_break="none").scores
    broken = rmia_attack(data).scores
    assert len(np.unique(plain)) < 21 < len(np.unique(broken))
    # never reorders points of different fraction, and stays within half a step of it
    assert np.all(broken - plain >= 0) and np.all(broken - plain < 0.5 / 20)
    differ = plain[:, None] < plain[None, :]
    assert (broken[:, None] < broken[None, :])[differ].all()
    # within a tie, the order is that of the target's ratio to Pr(x): log p_y(x|θ) − log Pr(x)
    log_p_t, _ = true_class_log_probs(data.target, data.labels)
    log_p_r, _ = true_class_log_probs(data.references, data.labels)
    log_pr_x, _ = _log_pr_x(log_p_r, data.reference_keep, "online", 0.0, True)
    ratio = log_p_t - log_pr_x
    top = plain == plain.max()
    assert top.sum() > 2
    np.testing.assert_array_equal(np.argsort(broken[top], kind="stable"), np.argsort(ratio[top], kind="stable"))


def test_rmia_refuses_missing_inputs():
    data = _random_data()
    no_population = AttackData(data.target, data.labels, data.references, data.reference_keep)
    with pytest.raises(ValueError, match="population"):
        rmia_attack(no_population)
    one_ref = AttackData(data.target, data.labels, data.references[:1], data.reference_keep[:1],
                         data.population_target, data.population_references[:1], data.population_labels)
    with pytest.raises(ValueError, match="set its parameter a"):
        rmia_attack(one_ref, mode="offline")
    with pytest.raises(ValueError, match="pseudo-target"):
        tune_a(np.zeros((2, 3)), np.zeros((2, 3), bool), np.zeros((2, 4)), 1.0, 2)


def test_population_subsample_is_seeded():
    data = _random_data(n_pop=70)
    first, again = (rmia_attack(data, n_population=20, seed=3, tie_break="none"),
                    rmia_attack(data, n_population=20, seed=3, tie_break="none"))
    np.testing.assert_array_equal(first.scores, again.scores)
    assert first.info["rmia_n_population"] == 20
    np.testing.assert_allclose(first.scores * 20, np.round(first.scores * 20), atol=1e-9)
    assert not np.array_equal(first.scores, rmia_attack(data, n_population=20, seed=4).scores)


def test_rmia_finds_the_signal():
    s = synthetic(n=1000, n_models=9, signal=1.0, difficulty=2.0, seed=5)
    assert auc(rmia_attack(s.data).scores, s.membership) > 0.8
    offline = rmia_attack(s.data, mode="offline").scores  # a tuned for the TPR at 0.1 % FPR, not for the AUC
    assert auc(offline, s.membership) > 0.7 and tpr_at_fpr(offline, s.membership, 0.001) > 0.05


def test_bad_rmia_parameters_are_rejected():
    rmia = ATTACKS.get("rmia")
    for given, message in [({"gamma": 0.0}, "out of range"), ({"a": 1.5}, "out of range"),
                           ({"mode": "ofline"}, "did you mean 'offline'"), ({"n_population": 0}, "out of range")]:
        with pytest.raises(BenchError, match=message):
            rmia.validate(given)
    assert rmia.validate({"a": 0.3})["a"] == 0.3
    assert rmia.validate({})["a"] is None
