"""Each attack against an answer known independently of its code: a slow direct port of the authors' published rule,
a closed form solved by hand, or a brute force of the paper's definition.

The ports below are written from the authors' public code (Song & Mittal: inspire-group/membership-inference-
evaluation, ``membership_inference_attacks.py`` and ``privacy_risk_score_utils.py``), one record at a time, in
exact arithmetic where the authors compare rates, so that they decide ties by the authors' order and never by float
rounding.
"""

from fractions import Fraction

import numpy as np
import pytest
from scipy.special import log_expit, log_softmax
from scipy.stats import norm

from attacks.base import AttackData
from attacks.lira import lira_attack
from attacks.loss import loss_attack
from attacks.metric import (
    confidence,
    confidence_attack,
    correctness_attack,
    entropy,
    entropy_attack,
    modified_entropy,
    modified_entropy_attack,
    thresholded_scores,
)
from attacks.risk import histogram_posterior, privacy_risk_attack
from attacks.rmia import rmia_attack
from bench.metrics import balanced_accuracy
from tests.test_attacks_rmia import _brute_force as rmia_brute_force
from tests.test_attacks_rmia import _random_data as rmia_random_data

# --- Song & Mittal: the authors' threshold rule, ported ------------------------------------------------------------


def authors_threshold(tr_values: np.ndarray, te_values: np.ndarray) -> float:
    """``_thre_setting``: the first candidate (members' values, then non-members') of the highest accuracy
    ``½ (#{tr ≥ v}/n_tr + #{te < v}/n_te)``, kept only when strictly better; exact fractions."""
    threshold, best = 0.0, Fraction(0)
    for value in np.concatenate([tr_values, te_values]):
        acc = Fraction(int(np.sum(tr_values >= value)), len(tr_values)) + Fraction(
            int(np.sum(te_values < value)), len(te_values))
        if acc > best:
            threshold, best = float(value), acc
    return threshold


def authors_attack_accuracy(s_tr, s_te, s_tr_labels, s_te_labels, t_tr, t_te, t_tr_labels, t_te_labels, n_classes):
    """``_mem_inf_thre``: a threshold per class on the shadow model's values, then the attack accuracy
    ``½ (members flagged / n_members + non-members not flagged / n_non-members)`` on the target's."""
    flagged_members = unflagged_non_members = 0
    thresholds = {}
    for c in range(n_classes):
        thresholds[c] = authors_threshold(s_tr[s_tr_labels == c], s_te[s_te_labels == c])
        flagged_members += int(np.sum(t_tr[t_tr_labels == c] >= thresholds[c]))
        unflagged_non_members += int(np.sum(t_te[t_te_labels == c] < thresholds[c]))
    return 0.5 * (flagged_members / len(t_tr) + unflagged_non_members / len(t_te)), thresholds


def test_a_tie_that_float_rounding_decides_differently_goes_to_the_authors_first_candidate():
    # 7 and 3 both reach balanced accuracy 2/3 exactly (3/9 + 9/9 = 7/9 + 5/9); in float, 0.5 * (7/9 + 5/9)
    # rounds above 0.5 * (3/9 + 9/9), so a float comparison would pick 3. The first candidate at the maximum is 7.
    members = np.array([4.0, 7.0, 7.0, 7.0, 3.0, 4.0, 3.0, 2.0, 2.0])
    non_members = np.array([5.0, 1.0, 1.0, 5.0, 4.0, 2.0, 2.0, 6.0, 0.0])
    assert 0.5 * (7 / 9 + 5 / 9) > 0.5 * (3 / 9 + 9 / 9)
    assert authors_threshold(members, non_members) == 7.0
    values = np.concatenate([non_members, members])  # interleaving must not matter, only each side's order
    keep = np.r_[np.zeros(9, bool), np.ones(9, bool)]
    out = thresholded_scores(np.array([7.0, 6.9]), values[None], keep[None], np.zeros(2, int), "class",
                             reference_labels=np.zeros(18, int))
    assert out.class_thresholds == {0: 7.0}
    np.testing.assert_array_equal(out.scores >= 0, [True, False])


def test_exact_ties_go_to_the_first_candidate_in_the_members_then_non_members_order():
    # members [3, 1], non-members [2, 0]: thresholds 3 and 1 both give 3/4; 3 comes first
    keep = np.array([[True, True, False, False]])
    out = thresholded_scores(np.zeros(1), np.array([[3.0, 1.0, 2.0, 0.0]]), keep, np.zeros(1, int), "global")
    assert out.info["global_threshold"] == 3.0
    out = thresholded_scores(np.zeros(1), np.array([[1.0, 3.0, 2.0, 0.0]]), keep, np.zeros(1, int), "global")
    assert out.info["global_threshold"] == 1.0  # the members' order decides


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("statistic", ["confidence", "entropy", "modified_entropy"])
def test_song_mittal_in_the_classic_shadow_setting_equals_the_ported_rule(seed, statistic):
    # one shadow model on its own 60 in / 60 out records and a target on 80 in / 80 out, 4 classes; releases
    # rounded to 2 decimals (as saved predictions often are), so that many values tie
    rng = np.random.default_rng(seed)
    n_classes = 4

    def release(n, sharpness):
        p = np.round(np.exp(log_softmax(rng.normal(0, sharpness, (n, n_classes)), -1)), 2)
        p = np.maximum(p, 1e-6)
        return p / p.sum(1, keepdims=True)

    s_tr, s_te, t_tr, t_te = release(60, 3.0), release(60, 1.5), release(80, 3.0), release(80, 1.5)
    labels = {k: rng.integers(n_classes, size=len(v)) for k, v in
              {"s_tr": s_tr, "s_te": s_te, "t_tr": t_tr, "t_te": t_te}.items()}
    value = {
        "confidence": lambda p, y: confidence(np.log(p), y),
        "entropy": lambda p, y: -entropy(np.log(p)),
        "modified_entropy": lambda p, y: -modified_entropy(np.log(p), y),
    }[statistic]
    expected, expected_thresholds = authors_attack_accuracy(
        value(s_tr, labels["s_tr"]), value(s_te, labels["s_te"]), labels["s_tr"], labels["s_te"],
        value(t_tr, labels["t_tr"]), value(t_te, labels["t_te"]), labels["t_tr"], labels["t_te"], n_classes,
    )
    target = np.log(np.concatenate([t_tr, t_te]))
    target_labels = np.concatenate([labels["t_tr"], labels["t_te"]])
    member = np.r_[np.ones(80, bool), np.zeros(80, bool)]
    data = AttackData(
        target, target_labels, np.zeros((0, 160, n_classes)), np.zeros((0, 160), bool),
        shadow_outputs=np.log(np.concatenate([s_tr, s_te]))[None],
        shadow_labels=np.concatenate([labels["s_tr"], labels["s_te"]]),
        shadow_keep=np.r_[np.ones(60, bool), np.zeros(60, bool)][None],
    )
    attack = {"confidence": confidence_attack, "entropy": entropy_attack,
              "modified_entropy": modified_entropy_attack}[statistic]
    out = attack(data)
    assert out.threshold == 0.0
    assert out.class_thresholds == pytest.approx(expected_thresholds, abs=0)
    assert balanced_accuracy(out.scores, member, out.threshold) == pytest.approx(expected, abs=1e-12)


def test_correctness_accuracy_is_the_authors_formula():
    rng = np.random.default_rng(3)
    outputs = log_softmax(rng.normal(0, 2, (200, 3)), -1)
    labels = rng.integers(3, size=200)
    member = np.arange(200) < 120
    out = correctness_attack(AttackData(outputs, labels, np.zeros((0, 200, 3)), np.zeros((0, 200), bool)))
    correct = outputs.argmax(1) == labels
    expected = 0.5 * (correct[member].mean() + 1 - correct[~member].mean())  # _mem_inf_via_corr
    assert balanced_accuracy(out.scores, member, out.threshold) == pytest.approx(expected, abs=1e-12)


# --- Song & Mittal's privacy risk score, ported --------------------------------------------------------------------


def authors_risk(tr_values, te_values, query, num_bins, log_bins):
    """``distrs_compute`` (normalised histograms, log-spaced with values raised to 1e-10) and
    ``risk_score_compute`` (the bin by ``bins <= value``, the nearest visited bin below and then above)."""
    tr, te = tr_values.copy(), te_values.copy()
    if log_bins:
        tr[tr <= 1e-10], te[te <= 1e-10] = 1e-10, 1e-10
    every = np.concatenate([tr, te])
    if log_bins:
        bins = np.logspace(np.log10(every.min()), np.log10(every.max()), num_bins + 1)
    else:
        bins = np.linspace(every.min(), every.max(), num_bins + 1)
    h_tr = np.histogram(tr, bins, weights=np.ones_like(tr) / len(tr))[0]
    h_te = np.histogram(te, bins, weights=np.ones_like(te) / len(te))[0]
    out = []
    for value in query:
        if value >= bins[-1]:
            index = len(bins) - 2
        elif value <= bins[0]:
            index = 0
        else:
            index = np.argwhere(bins <= value)[-1][0]
        if h_tr[index] + h_te[index] != 0:
            out.append(h_tr[index] / (h_tr[index] + h_te[index]))
            continue
        for t in range(1, len(h_tr)):
            if index - t >= 0 and h_tr[index - t] + h_te[index - t] != 0:
                out.append(h_tr[index - t] / (h_tr[index - t] + h_te[index - t]))
                break
            if index + t < len(h_tr) and h_tr[index + t] + h_te[index + t] != 0:
                out.append(h_tr[index + t] / (h_tr[index + t] + h_te[index + t]))
                break
    return np.array(out)


@pytest.mark.parametrize("log_bins", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_privacy_risk_equals_the_ported_rule(seed, log_bins):
    rng = np.random.default_rng(seed)
    tr = np.concatenate([rng.exponential(0.05, 70), np.zeros(5)])  # members: low modified entropy, some exact 0
    te = rng.exponential(1.0, 90)
    query = np.concatenate([rng.exponential(0.5, 200), [0.0, 1e-12, tr.max(), te.max(), 50.0]])
    for bins in (3, 5, 20):  # 20 bins leave empty bins: the nearest-bin rule
        np.testing.assert_allclose(histogram_posterior(tr, te, query, bins, log_bins),
                                   authors_risk(tr, te, query, bins, log_bins), rtol=1e-12)


def test_privacy_risk_attack_in_the_shadow_setting_uses_the_shadow_histograms_per_class():
    rng = np.random.default_rng(5)
    shadow = log_softmax(rng.normal(0, 3, (1, 100, 2)), -1)
    shadow_labels, shadow_keep = rng.integers(2, size=100), (np.arange(100) < 50)[None]
    target, labels = log_softmax(rng.normal(0, 3, (40, 2)), -1), rng.integers(2, size=40)
    data = AttackData(target, labels, np.zeros((0, 40, 2)), np.zeros((0, 40), bool), shadow_outputs=shadow,
                      shadow_labels=shadow_labels, shadow_keep=shadow_keep)
    scores = privacy_risk_attack(data).scores
    m_s, m_t = modified_entropy(shadow[0], shadow_labels), modified_entropy(target, labels)
    for c in (0, 1):
        tr, te = m_s[shadow_keep[0] & (shadow_labels == c)], m_s[~shadow_keep[0] & (shadow_labels == c)]
        np.testing.assert_allclose(scores[labels == c], authors_risk(tr, te, m_t[labels == c], 5, True), rtol=1e-12)


# --- LOSS, LiRA and RMIA against closed forms and brute force ------------------------------------------------------


def test_loss_is_the_log_probability_of_the_label():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    data = AttackData(np.log(p), np.array([0, 1]), np.zeros((0, 2, 3)), np.zeros((0, 2), bool))
    np.testing.assert_allclose(loss_attack(data).scores, np.log([0.7, 0.1]), rtol=1e-12)


def test_lira_online_is_the_gaussian_likelihood_ratio_solved_by_hand():
    # one record, binary; the references' logit confidences: IN 2, 3, 4 (mean 3, unbiased variance 1) and
    # OUT -1, 0, 1 (mean 0, variance 1); the target's is 2.5
    def release(phi):
        return np.stack([log_expit(phi), log_expit(-phi)], -1)  # log p_y − log(1 − p_y) = φ

    refs = release(np.array([2.0, 3.0, 4.0, -1.0, 0.0, 1.0]))[:, None]
    keep = np.array([[True], [True], [True], [False], [False], [False]])
    data = AttackData(release(np.array([2.5])), np.array([0]), refs, keep)
    by_hand = norm.logpdf(2.5, 3, 1) - norm.logpdf(2.5, 0, 1)  # = ½(2.5² − 0.5²) = 3
    assert by_hand == pytest.approx(3.0)
    assert lira_attack(data).scores[0] == pytest.approx(3.0, abs=1e-9)
    # offline: the one-sided test log Φ((φ − μ_out) / σ_out)
    assert lira_attack(data, mode="offline").scores[0] == pytest.approx(norm.logcdf(2.5), abs=1e-9)


@pytest.mark.parametrize("mode, a", [("online", 0.0), ("offline", 0.3), ("offline", 1.0)])
def test_rmia_is_the_papers_pairwise_count(mode, a):
    data = rmia_random_data(seed=4)
    got = rmia_attack(data, mode=mode, a=a, gamma=1.0, tie_break="none").scores
    np.testing.assert_allclose(got, rmia_brute_force(data, mode, 1.0, a), atol=1e-12)
