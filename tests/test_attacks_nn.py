import numpy as np
import pytest

from attacks.base import AttackData
from attacks.nn import attack_features, nn_attack
from bench.metrics import auc
from privkernel.errors import BenchError
from privkernel.registry import ATTACKS
from tests.attack_data import synthetic

FAST = {"hidden": 16, "max_iter": 60}


def test_features_are_the_sorted_top_k_then_the_one_hot_label():
    log_probs = np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))
    features = attack_features(log_probs, np.array([2, 0]), top_k=2)
    np.testing.assert_allclose(features, [[0.6, 0.3, 0, 0, 1], [0.5, 0.3, 1, 0, 0]], atol=1e-12)
    assert attack_features(log_probs, np.array([2, 0]), top_k=10).shape == (2, 3 + 3)  # top_k clipped to C
    refs = np.stack([log_probs, log_probs[::-1]])
    assert attack_features(refs, np.array([2, 0]), top_k=1).shape == (2, 2, 1 + 3)


def test_nn_is_deterministic_and_learns_a_confidence_gap():
    s = synthetic(n=600, n_models=5, signal=2.5, difficulty=0.5, seed=8)
    first = nn_attack(s.data, **FAST)
    np.testing.assert_array_equal(first, nn_attack(s.data, **FAST))
    assert first.shape == (600,)
    assert auc(first, s.membership) > 0.75
    other_seed = nn_attack(s.data, seed=1, **FAST)
    assert not np.array_equal(first, other_seed)


def test_nn_subsamples_its_training_rows():
    s = synthetic(n=600, n_models=5, signal=2.5, difficulty=0.5, seed=8)
    few = nn_attack(s.data, max_train=200, **FAST)
    assert not np.array_equal(few, nn_attack(s.data, **FAST))  # trained on other rows
    np.testing.assert_array_equal(few, nn_attack(s.data, max_train=200, **FAST))


def test_nn_needs_in_and_out_reference_rows():
    s = synthetic(n=50, n_models=3, seed=9)
    data = AttackData(s.data.target, s.data.labels, s.data.references, np.ones_like(s.data.reference_keep))
    with pytest.raises(ValueError, match="both IN and OUT"):
        nn_attack(data)


def test_bad_nn_parameters_are_rejected():
    nn = ATTACKS.get("nn")
    assert nn.validate({}) == {"top_k": 3, "hidden": 64, "max_iter": 200, "max_train": 20000, "seed": 0}
    with pytest.raises(BenchError, match="out of range"):
        nn.validate({"top_k": 0})
    with pytest.raises(BenchError, match="must be of type int"):
        nn.validate({"seed": 0.5})
