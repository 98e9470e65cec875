import numpy as np
import pytest
import torch

from attacks.base import AttackData
from attacks.loss import loss_attack
from attacks.signals import true_class_loss


def test_true_class_loss_is_exact_where_float32_log_p_y_is_not():
    logits = torch.tensor([[30.0, 12.0, 10.0], [0.0, 1.0, 2.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    labels = np.array([0, 0, 1])
    exact = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels), reduction="none").numpy()
    released = torch.log_softmax(logits.float(), -1).numpy()  # a release computed in float32
    assert released[0, 0] == 0.0  # log p_y rounds to exactly 0: the naive loss would be 0
    np.testing.assert_allclose(true_class_loss(released, labels), exact, rtol=1e-5)


def test_loss_attack_scores_lower_loss_higher():
    log_probs = np.log(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], dtype=np.float32))
    labels = np.array([0, 0, 0])
    data = AttackData(log_probs, labels, np.zeros((0, 3, 2)), np.zeros((0, 3), dtype=bool))
    scores = loss_attack(data).scores
    assert scores[0] > scores[1] > scores[2]
    assert scores[2] == pytest.approx(np.log(0.2), rel=1e-5)


def test_inconsistent_attack_inputs_are_refused():
    with pytest.raises(ValueError, match="inconsistent attack inputs"):
        AttackData(np.zeros((3, 2)), np.zeros(3, dtype=int), np.zeros((2, 4, 2)), np.zeros((2, 4), dtype=bool))
