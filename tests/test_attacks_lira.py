import numpy as np
import pytest
import torch
from scipy.stats import norm

from attacks.base import AttackData
from attacks.lira import equal_count_masks, lira_attack, log_odds
from attacks.loss import loss_attack
from bench.metrics import auc
from privkernel.errors import BenchError
from privkernel.registry import ATTACKS
from tests.attack_data import release_from_phi, synthetic


def _binary(phi: np.ndarray) -> np.ndarray:
    """Two-class float64 releases with true class 0 and log-odds ``phi``."""
    phi = np.asarray(phi, dtype=np.float64)
    n = phi.shape[-1]
    return release_from_phi(phi, np.zeros(n, dtype=int), np.tile([0.0, 1.0], (n, 1)), dtype=np.float64)


def test_log_odds_is_exact_where_p_y_rounds_to_one():
    logits = np.array([[30.0, 12.0, 10.0], [-5.0, 3.0, 2.0], [40.0, 0.0, 0.0]])
    released = torch.log_softmax(torch.tensor(logits, dtype=torch.float32), -1).numpy()
    labels = np.array([0, 0, 0])
    exact = logits[:, 0] - np.logaddexp(logits[:, 1], logits[:, 2])
    np.testing.assert_allclose(log_odds(released, labels), exact, rtol=1e-5)
    np.testing.assert_allclose(log_odds(_binary([[3.0, -7.5, 25.0]])[0], np.zeros(3, int)), [3.0, -7.5, 25.0])


def _gaussian_refs(mu_in, sd_in, mu_out, sd_out):
    """Four references per example whose sample means and (ddof=1) std are exactly the given ones:
    two IN at μ_in ± σ_in/√2 and two OUT at μ_out ± σ_out/√2."""
    h = 1 / np.sqrt(2)
    phi = np.stack([mu_in - h * sd_in, mu_in + h * sd_in, mu_out - h * sd_out, mu_out + h * sd_out])
    keep = np.zeros(phi.shape, dtype=bool)
    keep[:2] = True
    return phi, keep


MU_IN, SD_IN = np.array([2.0, 5.0, -1.0, 0.0]), np.array([0.5, 1.0, 2.0, 0.3])
MU_OUT, SD_OUT = np.array([0.0, 4.0, -3.0, 0.5]), np.array([1.0, 0.5, 1.5, 0.3])
PHI_T = np.array([1.0, 4.5, 0.0, 2.0])


def test_online_and_offline_equal_the_closed_form_for_known_gaussians():
    phi, keep = _gaussian_refs(MU_IN, SD_IN, MU_OUT, SD_OUT)
    data = AttackData(_binary(PHI_T), np.zeros(4, dtype=int), _binary(phi), keep)
    online = lira_attack(data, mode="online")
    expected = norm.logpdf(PHI_T, MU_IN, SD_IN) - norm.logpdf(PHI_T, MU_OUT, SD_OUT)
    np.testing.assert_allclose(online.scores, expected, rtol=1e-9, atol=1e-9)
    assert online.info == {"lira_no_out_refs": 0, "lira_few_out_refs": 0, "lira_no_in_refs": 0,
                           "lira_few_in_refs": 0, "lira_k_in": 2, "lira_k_out": 2}
    offline = lira_attack(data, mode="offline")
    np.testing.assert_allclose(offline.scores, norm.logcdf((PHI_T - MU_OUT) / SD_OUT), rtol=1e-9)

    fixed = lira_attack(data, mode="online", fixed_variance=True)
    pooled_in, pooled_out = np.sqrt(np.mean(SD_IN**2)), np.sqrt(np.mean(SD_OUT**2))
    expected = norm.logpdf(PHI_T, MU_IN, pooled_in) - norm.logpdf(PHI_T, MU_OUT, pooled_out)
    np.testing.assert_allclose(fixed.scores, expected, rtol=1e-9, atol=1e-9)


def test_the_std_floor_keeps_identical_references_finite():
    phi = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    keep = np.array([[True, True], [True, True], [False, False], [False, False]])
    data = AttackData(_binary([1.0, 0.5]), np.zeros(2, dtype=int), _binary(phi), keep)
    out = lira_attack(data, min_std=0.1)
    s = 0.1
    expected = norm.logpdf([1.0, 0.5], [1.0, 2.0], s) - norm.logpdf([1.0, 0.5], 0.0, s)
    np.testing.assert_allclose(out.scores, expected, rtol=1e-9)


def test_fallbacks_for_missing_references_are_applied_and_counted():
    # example 0: 2 IN, 2 OUT; example 1: no IN (4 OUT); example 2: 3 IN, 1 OUT
    phi = np.array([[1.0, -1.0, 3.0], [2.0, 0.0, 4.0], [0.0, 1.0, 5.0], [0.5, 3.0, 0.0]])
    keep = np.array([[True, False, True], [True, False, True], [False, False, True], [False, False, False]])
    phi_t = np.array([1.5, 2.0, 4.5])
    data = AttackData(_binary(phi_t), np.zeros(3, dtype=int), _binary(phi), keep)
    out = lira_attack(data, equalize_refs=False)
    assert out.info == {"lira_no_out_refs": 0, "lira_few_out_refs": 1, "lira_no_in_refs": 1, "lira_few_in_refs": 0,
                        "lira_k_in": -1, "lira_k_out": -1}
    # global OUT variance: pooled over examples 0 and 1 (each has >= 2 OUT values)
    out0, out1 = np.array([0.0, 0.5]), np.array([-1.0, 0.0, 1.0, 3.0])
    var_out = (((out0 - out0.mean()) ** 2).sum() + ((out1 - out1.mean()) ** 2).sum()) / (1 + 3)
    in0, in2 = np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0])
    expected0 = norm.logpdf(1.5, in0.mean(), in0.std(ddof=1)) - norm.logpdf(1.5, out0.mean(), out0.std(ddof=1))
    expected1 = norm.logcdf((2.0 - out1.mean()) / out1.std(ddof=1))  # offline: no IN reference
    expected2 = norm.logpdf(4.5, in2.mean(), in2.std(ddof=1)) - norm.logpdf(4.5, 0.0, np.sqrt(var_out))
    np.testing.assert_allclose(out.scores, [expected0, expected1, expected2], rtol=1e-9)


def test_lira_needs_out_references():
    data = AttackData(_binary([0.0]), np.zeros(1, int), _binary([[1.0], [2.0]]), np.ones((2, 1), bool))
    with pytest.raises(ValueError, match="OUT"):
        lira_attack(data)


def test_lira_beats_the_global_loss_attack_when_difficulty_varies():
    s = synthetic(n=2000, n_models=17, signal=1.0, difficulty=2.0, noise=0.5, seed=4)
    loss_auc = auc(loss_attack(s.data).scores, s.membership)
    for params in ({}, {"fixed_variance": True}, {"mode": "offline"}):
        lira_auc = auc(lira_attack(s.data, **params).scores, s.membership)
        assert lira_auc > loss_auc + 0.15, (params, lira_auc, loss_auc)
        assert lira_auc > 0.8


def test_bad_lira_parameters_are_rejected():
    lira = ATTACKS.get("lira")
    with pytest.raises(BenchError, match=r"did you mean 'online'"):
        lira.validate({"mode": "onlin"})
    with pytest.raises(BenchError, match="out of range"):
        lira.validate({"min_std": 0.0})
    with pytest.raises(BenchError, match="must be of type bool"):
        lira.validate({"fixed_variance": "yes"})
    assert lira.validate({}) == {"mode": "online", "fixed_variance": False, "min_std": 1e-3, "equalize_refs": True}


def test_equal_count_masks_keep_the_first_k_of_each_side():
    keep = np.array([[1, 0, 1], [1, 1, 1], [0, 1, 1], [1, 0, 0]], dtype=bool)
    use_in, use_out, k_in, k_out = equal_count_masks(keep)
    assert (k_in, k_out) == (2, 1)  # IN counts 3, 2, 3; OUT counts 1, 2, 1
    np.testing.assert_array_equal(use_in, [[1, 0, 1], [1, 1, 1], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(use_out, [[0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1]])


@pytest.mark.parametrize("n_models", [4, 8])
def test_equal_reference_counts_remove_the_leak_of_the_balanced_design(n_models):
    # every point IN for exactly half of the models: without the target, members have one IN reference fewer
    s = synthetic(n=4000, n_models=n_models, signal=0.0, difficulty=2.0, seed=12)
    assert (s.data.reference_keep.sum(0) == n_models // 2 - s.membership).all()
    for params in ({}, {"fixed_variance": True}, {"mode": "offline"}):
        assert abs(auc(lira_attack(s.data, **params).scores, s.membership) - 0.5) < 0.03, params
    leaky = auc(lira_attack(s.data, equalize_refs=False).scores, s.membership)
    assert abs(leaky - 0.5) > 0.04  # what the unequal counts alone do with no signal at all
