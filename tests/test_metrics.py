import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.metrics import attack_metrics, auc, balanced_accuracy, best_threshold, roc_curve, tpr_at_fpr

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
    assert threshold == pytest.approx(0.65)  # between 0.7 (last member) and 0.6
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
