import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.metrics import (
    attack_metrics,
    auc,
    balanced_accuracy,
    best_threshold,
    bootstrap_ci,
    clopper_pearson,
    epsilon_at_threshold,
    epsilon_lower_bound,
    epsilon_threshold,
    per_class_metrics,
    roc_curve,
    tpr_at_fpr,
)

# members score 0.9, 0.8, 0.7; non-members 0.8 (a tie with a member), 0.6, 0.5
SCORES = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5])
MEMBERS = np.array([1, 1, 0, 1, 0, 0], dtype=bool)


def test_roc_by_hand_with_a_tie():
    fpr, tpr, thresholds = roc_curve(SCORES, MEMBERS)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(thresholds, [np.inf, 0.9, 0.8, 0.7, 0.6, 0.5])


def test_auc_by_hand_counts_a_tie_as_half():
    # 9 member/non-member pairs: 0.9 wins 3, 0.8 wins 2 and ties 1, 0.7 wins 2  ->  7.5 / 9
    assert auc(SCORES, MEMBERS) == pytest.approx(7.5 / 9)


def test_tpr_at_fpr_by_hand():
    assert tpr_at_fpr(SCORES, MEMBERS, 0.0) == pytest.approx(1 / 3)  # only 0.9 beats every non-member
    assert tpr_at_fpr(SCORES, MEMBERS, 0.001) == pytest.approx(1 / 3)
    assert tpr_at_fpr(SCORES, MEMBERS, 1 / 3) == pytest.approx(1.0)


def test_a_member_tied_with_the_top_non_member_does_not_count_at_fpr_0():
    scores = np.array([1.0, 1.0, 0.0])
    members = np.array([True, False, False])
    assert tpr_at_fpr(scores, members, 0.0) == 0.0
    assert auc(scores, members) == pytest.approx(0.75)


def test_constant_scores_are_a_random_guess():
    scores, members = np.zeros(10), np.arange(10) % 2 == 0
    assert auc(scores, members) == 0.5
    assert tpr_at_fpr(scores, members, 0.0) == 0.0


def test_threshold_chosen_by_balanced_accuracy_and_reused():
    threshold = best_threshold(SCORES, MEMBERS)
    assert threshold == 0.7  # the lowest member's score, an observed value (Song & Mittal's rule)
    assert best_threshold(SCORES, MEMBERS, placement="midpoint") == pytest.approx(0.65)  # between 0.7 and 0.6
    assert balanced_accuracy(SCORES, MEMBERS, threshold) == pytest.approx((1 + 2 / 3) / 2)
    m = attack_metrics(SCORES, MEMBERS, threshold)
    assert m.auc == pytest.approx(7.5 / 9) and m.tprs["tpr_at_fpr_0"] == pytest.approx(1 / 3)
    assert (m.n_members, m.n_nonmembers) == (3, 3)
    assert m.as_row()["min_resolvable_fpr"] == pytest.approx(1 / 3)


def test_perfect_separation():
    scores = np.array([3.0, 2.0, 1.0, 0.0])
    members = np.array([True, True, False, False])
    assert auc(scores, members) == 1.0 and tpr_at_fpr(scores, members, 0.0) == 1.0
    assert balanced_accuracy(scores, members, best_threshold(scores, members)) == 1.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="both members and non-members"):
        auc(np.ones(3), np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        auc(np.array([np.nan, 1.0]), np.array([True, False]))
    with pytest.raises(ValueError, match="equal 1-d shapes"):
        auc(np.ones(3), np.ones(2, dtype=bool))


scores_and_members = st.integers(2, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 5), min_size=n, max_size=n),  # few distinct values: many ties
        st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda m: 0 < sum(m) < len(m)),
    )
)


@settings(max_examples=200, deadline=None)
@given(scores_and_members, st.sampled_from([0.0, 0.001, 0.1, 0.5]))
def test_against_a_brute_force_reference(data, max_fpr):
    scores, members = np.array(data[0], dtype=float), np.array(data[1])
    pos, neg = scores[members], scores[~members]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auc(scores, members) == pytest.approx(pairwise)

    best_tpr, best_balanced = 0.0, 0.5
    for t in np.r_[np.inf, np.unique(scores)]:
        tpr, fpr = (pos >= t).mean(), (neg >= t).mean()
        if fpr <= max_fpr:
            best_tpr = max(best_tpr, tpr)
        best_balanced = max(best_balanced, (tpr + 1 - fpr) / 2)
    assert tpr_at_fpr(scores, members, max_fpr) == pytest.approx(best_tpr)
    assert balanced_accuracy(scores, members, best_threshold(scores, members)) == pytest.approx(best_balanced)


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    values = np.array([0.50, 0.55, 0.60, 0.52, 0.58])
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high and low >= values.min() and high <= values.max()
    assert bootstrap_ci(values) == (low, high)
    narrow = bootstrap_ci(np.tile(values, 20))
    assert narrow[1] - narrow[0] < high - low
    assert bootstrap_ci(np.array([0.7])) == (0.7, 0.7)


def test_clopper_pearson_known_values():
    low, high = clopper_pearson(np.array([0, 5, 10]), np.array([10, 10, 10]))
    np.testing.assert_allclose(low, [0.0, 0.187086, 0.025 ** (1 / 10)], atol=1e-6)
    np.testing.assert_allclose(high, [1 - 0.025 ** (1 / 10), 0.812914, 1.0], atol=1e-6)


def test_epsilon_lower_bound_closed_form():
    n = 10**8  # so many trials that the Clopper-Pearson bounds equal the rates
    eps = epsilon_lower_bound(np.array([0.5 * n]), n, np.array([0.05 * n]), n, delta=0.0)
    assert eps[0] == pytest.approx(np.log(0.5 / 0.05), rel=1e-3)
    eps = epsilon_lower_bound(np.array([0.99 * n]), n, np.array([0.5 * n]), n, delta=0.0)
    assert eps[0] == pytest.approx(np.log(0.5 / 0.01), rel=1e-3)  # the second inequality binds
    # a random guess proves nothing
    assert epsilon_lower_bound(np.array([0.3 * n]), n, np.array([0.3 * n]), n)[0] == 0.0
    # few trials: the confidence interval makes the bound smaller than the point estimate
    few = epsilon_lower_bound(np.array([50]), 100, np.array([5]), 100, delta=0.0)[0]
    assert 0 < few < np.log(0.5 / 0.05)


def test_epsilon_threshold_transfers_to_the_target():
    members = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    scores = np.r_[np.linspace(1, 2, 500), np.linspace(0, 1.2, 500)]  # members overlap non-members on [1, 1.2]
    t = epsilon_threshold(scores, members)
    best = epsilon_at_threshold(scores, members, t)
    others = [epsilon_at_threshold(scores, members, u) for u in np.linspace(0, 2, 41)]
    assert best >= max(others) - 1e-12 and best > 2.0
    assert epsilon_at_threshold(scores, members, np.inf) == 0.0


def test_per_class_slices_flag_the_minority():
    labels = np.array([0] * 8 + [1] * 4)
    members = np.array([1, 0] * 4 + [1, 1, 0, 0], dtype=bool)
    scores = np.r_[np.array([1, 0] * 4, float), np.array([0, 0, 1, 1], float)]
    major, minor = per_class_metrics(scores, members, labels)
    assert (major["n"], major["n_members"], major["minority"], major["auc"]) == (8, 4, False, 1.0)
    assert (minor["n"], minor["minority"], minor["auc"], minor["tpr_at_fpr_0"]) == (4, True, 0.0, 0.0)
    assert major["share"] == pytest.approx(2 / 3)


def test_roc_auc_per_model_on_binary_and_multiclass():
    from bench.metrics import roc_auc_per_model

    log_probs = np.log(np.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]]]))
    labels = np.array([0, 1, 0])
    np.testing.assert_allclose(roc_auc_per_model(log_probs, labels), [1.0, 0.0])
    assert np.isnan(roc_auc_per_model(np.zeros((2, 3, 3)), np.array([0, 1, 2]))).all()


def test_a_balanced_class_just_under_the_uniform_share_is_no_minority():
    rng = np.random.default_rng(0)
    counts = [95, 105, 97, 103, 100, 99, 101, 98, 102, 100]  # Fashion-MNIST-like: 9.5 to 10.5 % each
    labels = np.repeat(np.arange(10), counts)
    members = rng.random(len(labels)) < 0.5
    assert not any(c["minority"] for c in per_class_metrics(rng.random(len(labels)), members, labels))
    counts[0] = 60  # 6.2 % of the records, well under 0.8 / 10
    labels = np.repeat(np.arange(10), counts)
    flagged = [c["label"] for c in per_class_metrics(rng.random(len(labels)), rng.random(len(labels)) < 0.5, labels)
               if c["minority"]]
    assert flagged == [0]
