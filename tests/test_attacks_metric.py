import numpy as np
import pytest
import torch

from attacks.base import AttackData
from attacks.metric import (
    confidence,
    confidence_attack,
    correctness_attack,
    entropy,
    entropy_attack,
    modified_entropy,
    modified_entropy_attack,
)
from attacks.signals import true_class_log_probs
from tests.attack_data import synthetic


def test_modified_entropy_by_hand_on_three_classes():
    p = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    labels = np.array([0, 1])
    by_hand = [
        -0.3 * np.log(0.7) - 0.2 * np.log(0.8) - 0.1 * np.log(0.9),  # correct: y = 0
        -0.8 * np.log(0.2) - 0.7 * np.log(0.3) - 0.1 * np.log(0.9),  # wrong: y = 1, the top class is 0
    ]
    np.testing.assert_allclose(modified_entropy(np.log(p), labels), by_hand, rtol=1e-12)
    np.testing.assert_allclose(entropy(np.log(p)), -(p * np.log(p)).sum(1), rtol=1e-12)
    np.testing.assert_allclose(confidence(np.log(p), labels), [0.7, 0.2], rtol=1e-12)


def _exact_mentr(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mentr in float64 from float64 logits, with every 1 − p computed as the sum of the other classes."""
    lp = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), -1).numpy()
    p = np.exp(lp)
    out = []
    for i, y in enumerate(labels):
        rest = [np.exp(lp[i, j]) for j in range(p.shape[1]) if j != y]
        value = -sum(rest) * lp[i, y]
        for k in range(p.shape[1]):
            if k != y:
                value -= p[i, k] * np.log(sum(p[i, j] for j in range(p.shape[1]) if j != k))
        out.append(value)
    return np.array(out)


def test_modified_entropy_is_accurate_where_float32_probabilities_round_to_one():
    # row 0: confident and right (p_y rounds to 1); row 1: confident and wrong (p_1 rounds to 1, so a naive
    # log(1 − p_1) is log 0); row 2: moderate
    logits = np.array([[30.0, 12.0, 10.0], [10.0, 30.0, 12.0], [1.0, 2.0, 0.5]])
    labels = np.array([0, 0, 2])
    released = torch.log_softmax(torch.tensor(logits, dtype=torch.float32), -1).numpy()
    assert released[0, 0] == 0.0 and released[1, 1] == 0.0
    exact = _exact_mentr(logits, labels)
    got = modified_entropy(released, labels)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, exact, rtol=1e-5)
    assert got[0] > 0  # a naive (1 − p_y) = 0 would give exactly 0
    log_p_y, log_rest = true_class_log_probs(released, labels)
    np.testing.assert_allclose(log_rest[0], np.logaddexp(12.0, 10.0) - np.logaddexp.reduce(logits[0]), rtol=1e-5)


def test_degenerate_releases_stay_finite():
    one_hot = np.where(np.eye(3)[[0, 1]] == 1, 0.0, -np.inf)  # label-only style release with -inf
    labels = np.array([0, 0])
    for value in (modified_entropy(one_hot, labels), entropy(one_hot), *true_class_log_probs(one_hot, labels)):
        assert np.isfinite(value).all()
    assert modified_entropy(one_hot, labels)[1] > modified_entropy(one_hot, labels)[0]


def test_correctness_attack():
    target = np.log(np.array([[0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]))
    data = AttackData(target, np.array([0, 0, 1]), np.zeros((0, 3, 2)), np.zeros((0, 3), dtype=bool))
    out = correctness_attack(data)
    np.testing.assert_array_equal(out.scores, [1.0, 0.0, 1.0])
    assert out.threshold == 1.0  # member iff correctly classified (Song & Mittal's code)


def _brute_force_best_balanced_accuracy(values: np.ndarray, member: np.ndarray) -> float:
    best = 0.5  # "nobody" / "everybody"
    for t in np.unique(values):
        predicted = values >= t
        best = max(best, (predicted[member].mean() + (~predicted[~member]).mean()) / 2)
    return best


def _balanced_accuracy(values, member, threshold):
    predicted = values >= threshold
    return (predicted[member].mean() + (~predicted[~member]).mean()) / 2


@pytest.mark.parametrize("attack, value", [
    (confidence_attack, lambda lp, y: confidence(lp, y)),
    (entropy_attack, lambda lp, y: -entropy(lp)),
    (modified_entropy_attack, lambda lp, y: -modified_entropy(lp, y)),
])
def test_class_thresholds_are_the_brute_force_best_on_the_references(attack, value):
    s = synthetic(n=300, n_models=5, n_classes=3, class_shift=1.5, seed=1)
    data = s.data
    out = attack(data)
    v_target, v_refs = value(data.target, data.labels), value(data.references, data.labels)
    taus = v_target - out.scores
    for c in range(3):
        in_class = data.labels == c
        tau = np.unique(taus[in_class])
        assert np.ptp(taus[in_class]) < 1e-12  # one threshold per class
        refs, member = v_refs[:, in_class].ravel(), data.reference_keep[:, in_class].ravel()
        assert _balanced_accuracy(refs, member, tau[0]) == pytest.approx(
            _brute_force_best_balanced_accuracy(refs, member), abs=1e-12
        )
        # score >= 0 is exactly the class decision v >= tau_c
        np.testing.assert_array_equal(out.scores[in_class] >= 0, v_target[in_class] >= tau[0])
    assert out.info["classes_global_fallback"] == 0 and out.info["n_classes"] == 3

    glob = attack(data, thresholds="global")
    tau_g = v_target - glob.scores
    assert np.ptp(tau_g) < 1e-12
    assert tau_g[0] == pytest.approx(glob.info["global_threshold"], abs=1e-12)
    assert _balanced_accuracy(v_refs.ravel(), data.reference_keep.ravel(), tau_g[0]) == pytest.approx(
        _brute_force_best_balanced_accuracy(v_refs.ravel(), data.reference_keep.ravel()), abs=1e-12
    )


def test_a_class_without_in_references_uses_the_global_threshold():
    s = synthetic(n=200, n_models=5, n_classes=3, seed=2)
    keep = s.data.reference_keep.copy()
    keep[:, s.data.labels == 2] = False
    data = AttackData(s.data.target, s.data.labels, s.data.references, keep)
    out = confidence_attack(data)
    assert out.info["classes_global_fallback"] == 1
    taus = confidence(data.target, data.labels) - out.scores
    np.testing.assert_allclose(taus[data.labels == 2], out.info["global_threshold"], atol=1e-12)
    assert not np.allclose(taus[data.labels == 0], out.info["global_threshold"])


def test_a_class_without_signal_keeps_the_authors_first_candidate():
    # class 0: references' members are *less* confident than non-members: no threshold beats chance
    ref_p = np.array([[0.6, 0.9, 0.7, 0.8]])
    keep = np.array([[True, False, True, False]])
    labels = np.zeros(4, dtype=int)
    refs = np.log(np.stack([ref_p, 1 - ref_p], -1))
    target_p = np.array([0.95, 0.5, 0.9, 0.1])
    target = np.log(np.stack([target_p, 1 - target_p], -1))
    out = confidence_attack(AttackData(target, labels, refs, keep))
    assert out.info["classes_no_signal"] == 1
    assert np.isfinite(out.scores).all()
    # every candidate ties at balanced accuracy 1/2 or worse; the authors keep the first one at 1/2, the first
    # member's value 0.6, and flag every point at or above it
    assert out.class_thresholds == {0: pytest.approx(0.6)}
    np.testing.assert_array_equal(out.scores >= 0, [True, False, True, False])


def test_without_references_the_statistic_is_scored_without_a_threshold():
    d = synthetic(n=20, n_models=2, seed=3).data
    data = AttackData(d.target, d.labels, d.references[:0], d.reference_keep[:0])
    out = entropy_attack(data)
    np.testing.assert_allclose(out.scores, -entropy(d.target))
    assert out.threshold is None and out.info["thresholds_learned"] == 0


def test_references_all_in_are_refused_with_the_reason():
    d = synthetic(n=20, n_models=3, seed=3).data
    data = AttackData(d.target, d.labels, d.references, np.ones_like(d.reference_keep))
    with pytest.raises(ValueError, match="both members and non-members"):
        entropy_attack(data)
