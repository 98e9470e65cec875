"""The white-box attack and the leaked-samples attacker: synthetic features with a known signal, then real models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attacks.base import AttackData
from attacks.leaked import leaked_attack
from attacks.nn import nn_attack
from attacks.requirements import LeakedMembership, Release, WhiteBoxFeatures, requirements_of
from attacks.white_box import white_box_attack, white_box_rows
from bench.metrics import auc
from privkernel.errors import BenchError
from privkernel.registry import ATTACKS
from targets.architectures import mlp
from targets.ensemble import Ensemble
from targets.membership import membership_matrix
from targets.white_box import white_box_features
from tests.attack_data import release_from_phi
from tests.training import train

FAST = {"hidden": 16, "max_iter": 60}
FAST_LEAKED = {"hidden": 16, "max_iter": 500}  # few training rows: an epoch is one Adam step
NAMES = ("loss", "grad_norm.1", "grad_norm.3", "grad_norm.total", "activation_norm.2")


def white_box_data(
    n: int = 600,
    n_models: int = 9,
    n_classes: int = 3,
    signal: float | np.ndarray = 1.5,
    target_signal: float | np.ndarray | None = None,
    task: str = "classification",
    seed: int = 0,
) -> tuple[AttackData, np.ndarray]:
    """AttackData whose white-box features are ``exp(d_n + s_f − signal_f · keep_mn + 0.5 ε)``: a per-record
    difficulty shared by every model and feature, members fitted better (smaller losses and norms) by ``signal``
    (per feature, or one value) in every model. ``target_signal`` gives model 0 (the target) its own. Released
    outputs carry no signal. Returns the data and the target's membership."""
    rng = np.random.default_rng(seed)
    keep = membership_matrix(n_models, n, seed)
    signals = np.broadcast_to(np.asarray(signal, dtype=float), (len(NAMES),))
    effect = np.broadcast_to(signals, (n_models, len(NAMES))).copy()
    if target_signal is not None:
        effect[0] = np.broadcast_to(np.asarray(target_signal, dtype=float), (len(NAMES),))
    difficulty = rng.normal(0.0, 1.0, size=(1, n, 1)) + rng.normal(0.0, 0.5, size=(1, 1, len(NAMES)))
    noise = 0.5 * rng.normal(size=(n_models, n, len(NAMES)))
    features = np.exp(difficulty + noise - effect[:, None, :] * keep[..., None]).astype(np.float32)
    if task == "regression":
        labels = rng.normal(size=n)
        outputs = (labels + rng.normal(size=(n_models, n)))[..., None].astype(np.float32)
    else:
        labels = rng.integers(n_classes, size=n)
        weights = np.where(np.arange(n_classes) == labels[:, None], 0.0, 1.0 / (n_classes - 1))
        outputs = release_from_phi(rng.normal(size=(n_models, n)), labels, weights)
    data = AttackData(
        outputs[0], labels, outputs[1:], keep[1:], task=task,
        target_white_box=features[0], reference_white_box=features[1:], white_box_names=NAMES,
    )
    return data, keep[0]


def leak(data: AttackData, membership: np.ndarray, fraction: float = 0.5, seed: int = 0) -> AttackData:
    """``data`` with ``fraction`` of the target's members and of its non-members leaked (sorted indices)."""
    rng = np.random.default_rng(seed)
    index = np.sort(np.concatenate([rng.choice(group, round(fraction * len(group)), replace=False)
                                    for group in (np.flatnonzero(membership), np.flatnonzero(~membership))]))
    return dataclasses.replace(data, leaked_index=index, leaked_membership=membership[index])


def unleaked_auc(scores: np.ndarray, data: AttackData, membership: np.ndarray) -> float:
    others = np.setdiff1d(np.arange(len(membership)), data.leaked_index)
    return auc(scores[others], membership[others])


# --- white_box -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_white_box_finds_smaller_losses_and_gradients_of_members(task):
    data, membership = white_box_data(signal=1.5, task=task, seed=1)
    scores = white_box_attack(data, **FAST)
    assert scores.shape == (600,)
    assert auc(scores, membership) > 0.8  # the best global rule (no per-record calibration) reaches ≈ 0.85


def test_per_record_calibration_separates_hard_records_from_members():
    """Every record has its own difficulty, shared by all models: against the references that left each record
    out, the target's members stand out beyond the ≈ 0.85 that a global rule reaches."""
    data, membership = white_box_data(signal=1.5, seed=1)
    plain, calibrated = white_box_attack(data, **FAST), white_box_attack(data, calibrate=True, **FAST)
    assert auc(calibrated, membership) > auc(plain, membership) + 0.05
    assert auc(calibrated, membership) > 0.9
    null, null_membership = white_box_data(n=1500, signal=0.0, seed=2)
    assert abs(auc(white_box_attack(null, calibrate=True, **FAST), null_membership) - 0.5) < 0.05


def test_calibration_is_a_z_score_against_k_other_out_references():
    from attacks.white_box import calibrate_per_record

    rng = np.random.default_rng(0)
    keep = rng.random((9, 12)) < 0.3
    keep[:4, 0] = False  # record 0 has the fewest OUT references: 4, so k = 3
    keep[4:, 0] = True
    assert (~keep).sum(0).min() == 4
    refs, target = rng.exponential(size=(9, 12, 2)), rng.exponential(size=(12, 2))
    t_z, r_z = calibrate_per_record(target, refs, keep)
    x_r, x_t = np.log1p(refs), np.log1p(target)
    k = 3
    for i in range(12):
        out = list(np.flatnonzero(~keep[:, i]))
        np.testing.assert_allclose(t_z[i], (x_t[i] - x_r[out[:k], i].mean(0)) / (x_r[out[:k], i].std(0) + 1e-6))
        for r in range(9):
            others = [o for o in out if o != r][:k]
            expected = (x_r[r, i] - x_r[others, i].mean(0)) / (x_r[others, i].std(0) + 1e-6)
            np.testing.assert_allclose(r_z[r, i], expected, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="at least 3"):
        calibrate_per_record(target, refs[:3], np.zeros((3, 12), bool) | np.eye(3, 12, dtype=bool))


def test_white_box_is_at_chance_without_signal():
    data, membership = white_box_data(n=1500, signal=0.0, seed=2)
    assert abs(auc(white_box_attack(data, **FAST), membership) - 0.5) < 0.05


def test_white_box_is_deterministic_per_seed_and_subsamples():
    data, _ = white_box_data(n=400, signal=1.0, seed=3)
    first = white_box_attack(data, **FAST)
    np.testing.assert_array_equal(first, white_box_attack(data, **FAST))
    assert not np.array_equal(first, white_box_attack(data, seed=1, **FAST))
    few = white_box_attack(data, max_train=300, **FAST)
    assert not np.array_equal(few, first)
    np.testing.assert_array_equal(few, white_box_attack(data, max_train=300, **FAST))


def test_white_box_rows_take_log1p_then_the_label():
    rows = white_box_rows(np.array([[0.0, np.e - 1], [3.0, 0.5]]), np.array([2, 0]), n_classes=3)
    np.testing.assert_allclose(rows, [[0, 1, 0, 0, 1], [np.log(4), np.log(1.5), 1, 0, 0]])
    assert white_box_rows(np.ones((4, 2, 3)), np.array([0.5, -1.0]), task="regression").shape == (4, 2, 4)


def test_white_box_refuses_missing_or_broken_features():
    data, _ = white_box_data(n=60, seed=4)
    with pytest.raises(ValueError, match="needs white-box features"):
        white_box_attack(dataclasses.replace(data, target_white_box=None, reference_white_box=None))
    with pytest.raises(ValueError, match="do not match"):
        white_box_attack(dataclasses.replace(data, target_white_box=data.target_white_box[:, :2]))
    with pytest.raises(ValueError, match="both IN and OUT"):
        white_box_attack(dataclasses.replace(data, reference_keep=np.ones_like(data.reference_keep)))
    broken = data.reference_white_box.copy()
    broken[0, 3, 1] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite \(in grad_norm.1\)"):
        white_box_attack(dataclasses.replace(data, reference_white_box=broken))


def test_white_box_is_registered_as_a_white_box_attack():
    component = ATTACKS.get("white_box")
    assert requirements_of(component) == (WhiteBoxFeatures(),) and component.tag("access") == "white-box"
    assert set(component.tag("tasks")) == {"classification", "regression"}
    assert component.validate({}) == {"hidden": 64, "max_iter": 200, "max_train": 20000, "seed": 0,
                                      "calibrate": False}
    with pytest.raises(BenchError, match="out of range"):
        component.validate({"max_train": 1})


# --- leaked ----------------------------------------------------------------------------------------------------


def test_leaked_white_box_finds_a_signal_that_the_references_do_not_share():
    # the target's members have a smaller loss only; the references' members have smaller gradient norms only
    target_signal, reference_signal = np.eye(len(NAMES))[0] * 2.0, np.eye(len(NAMES))[1] * 2.0
    data, membership = white_box_data(signal=reference_signal, target_signal=target_signal, seed=5)
    data = leak(data, membership, seed=5)
    reference_trained = unleaked_auc(white_box_attack(data, **FAST), data, membership)
    leaked = unleaked_auc(leaked_attack(data, features="white_box", **FAST_LEAKED), data, membership)
    assert reference_trained < 0.6 and leaked > 0.85, (reference_trained, leaked)


def test_leaked_outputs_find_a_signal_only_the_target_has():
    rng = np.random.default_rng(6)
    n, n_models = 600, 9
    keep = membership_matrix(n_models, n, 6)
    labels = rng.integers(3, size=n)
    weights = np.where(np.arange(3) == labels[:, None], 0.0, 0.5)
    phi = rng.normal(size=n) + 0.5 * rng.normal(size=(n_models, n))
    phi[0] += 2.0 * keep[0]  # only the target fits its members better; the references do not
    release = release_from_phi(phi, labels, weights)
    data = leak(AttackData(release[0], labels, release[1:], keep[1:]), keep[0], fraction=0.3, seed=6)
    reference_trained = unleaked_auc(nn_attack(data, **FAST), data, keep[0])
    leaked = unleaked_auc(leaked_attack(data, **FAST_LEAKED), data, keep[0])
    assert reference_trained < 0.65 and leaked > 0.8, (reference_trained, leaked)


def test_leaked_regression_outputs_and_determinism():
    rng = np.random.default_rng(7)
    n = 400
    membership = rng.random(n) < 0.5
    labels = rng.normal(size=n)
    predictions = labels + rng.normal(size=n) * np.where(membership, 0.2, 1.0)
    data = AttackData(predictions[:, None], labels, predictions[None, :, None], membership[None], task="regression")
    data = leak(data, membership, seed=7)
    scores = leaked_attack(data, **FAST_LEAKED)
    assert unleaked_auc(scores, data, membership) > 0.75  # |residual| by the book: 0.82
    np.testing.assert_array_equal(scores, leaked_attack(data, **FAST_LEAKED))
    assert not np.array_equal(scores, leaked_attack(data, seed=3, **FAST_LEAKED))


def test_leaked_refuses_what_it_cannot_learn_from():
    data, membership = white_box_data(n=60, seed=8)
    with pytest.raises(ValueError, match="needs the target's membership of some records"):
        leaked_attack(data)
    leaked = leak(data, membership, seed=8)
    members = leaked.leaked_index[leaked.leaked_membership]
    with pytest.raises(ValueError, match="all members of the target"):
        leaked_attack(dataclasses.replace(leaked, leaked_index=members, leaked_membership=membership[members]))
    with pytest.raises(ValueError, match="all non-members of the target"):
        leaked_attack(dataclasses.replace(leaked, leaked_membership=np.zeros(len(leaked.leaked_index), bool)))
    with pytest.raises(ValueError, match=r"record indices in \[0, 60\)"):
        leaked_attack(dataclasses.replace(leaked, leaked_index=leaked.leaked_index + 60))
    with pytest.raises(ValueError, match="same length"):
        leaked_attack(dataclasses.replace(leaked, leaked_membership=leaked.leaked_membership[1:]))
    with pytest.raises(ValueError, match="needs white-box features"):
        leaked_attack(dataclasses.replace(leaked, target_white_box=None), features="white_box")
    leaked_attack(dataclasses.replace(leaked, reference_white_box=None), features="white_box", **FAST)  # refs unused


def test_leaked_tags_follow_its_features():
    component = ATTACKS.get("leaked")
    assert component.tag("knowledge") == "leaked"
    assert requirements_of(component) == (LeakedMembership(0.5, 0), Release("probabilities"))
    assert component.tag("access") == "black-box"
    params = component.validate({"features": "white_box", "fraction": 0.25, "seed": 3})
    assert requirements_of(component, params) == (LeakedMembership(0.25, 3), WhiteBoxFeatures())
    assert component.tag("access", params) == "white-box"
    assert component.validate({})["fraction"] == 0.5
    for bad in (0.0, 1.0):
        with pytest.raises(BenchError, match="out of range"):
            component.validate({"fraction": bad})
    with pytest.raises(BenchError, match="did you mean 'white_box'"):
        component.validate({"features": "whitebox"})


# --- end to end: real models, real white-box features ---------------------------------------------------------


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and far faster on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_white_box_attack_on_an_overfit_mlp_ensemble(one_thread):
    n, n_models = 200, 16
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 10, generator=g)
    y = torch.randint(2, (n,), generator=g)  # random labels: only memorisation fits the members
    keep = membership_matrix(n_models, n, 0)
    ensemble = Ensemble.initialise(
        lambda: mlp((10,), 2, depth=1, width=64, activation="relu", dropout=0.0), n_models, seed=0
    )

    def loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape).mean(1)

    log = train(ensemble, X, y, keep, loss, epochs=60, batch_size=50, lr=0.02, optimizer="adam",
                         momentum=0.0, seed=0)
    assert log.history[-1].max() < 0.05  # the members' random labels are memorised
    features, names = white_box_features(ensemble, X, y)
    assert features.shape == (n_models, n, len(names)) and np.isfinite(features).all()
    outputs = torch.log_softmax(ensemble.predict(X), -1).numpy()
    aucs = []
    for target in (0, 1):
        refs = [m for m in range(n_models) if m != target]
        data = AttackData(
            outputs[target], y.numpy(), outputs[refs], keep[refs],
            target_white_box=features[target], reference_white_box=features[refs], white_box_names=names,
        )
        aucs.append(auc(white_box_attack(data, hidden=32, max_iter=100), keep[target]))
    assert min(aucs) > 0.7, aucs
