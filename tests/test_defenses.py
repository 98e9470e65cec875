"""The registered defenses: each does exactly what its docstring says, and bad settings are refused at grid load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from torch import nn
from torch.nn import functional as F

from bench.cache import Cache
from bench.cli import main
from bench.grid import load_grid
from bench.metrics import auc
from bench.pipeline import CellRun
from bench.store import read_store
from defenses import early_stopping as es
from defenses.advreg import InferenceModels
from defenses.base import Defense
from defenses.memguard import (
    LABEL_MARGIN,
    defender_output,
    memguard_noise,
    release_probability,
)
from privkernel.hashing import derive_seed
from privkernel.registry import DATASETS, DEFENSES
from targets.architectures import logreg, mlp
from targets.datasets import Dataset
from targets.ensemble import Ensemble
from targets.membership import membership_matrix
from tests.conftest import TINY_GRID, write_grid

NEW_DEFENSES = ("dropout", "l2", "label_smoothing", "early_stopping", "advreg", "memguard", "topk", "rounding",
                "label_only")
TRAINING = dict(epochs=5, batch_size=32, lr=0.01, optimizer="adam", momentum=0.9)


def build(name: str, **params):
    """A registered defense with its defaults filled in, as the pipeline builds it."""
    component = DEFENSES.get(name)
    return component.obj(**component.validate(params))


def coin_flips(n: int = 200, features: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Records with random binary labels: a model fits its members only by memorising them."""
    rng = np.random.default_rng(seed)
    return (torch.tensor(rng.normal(size=(n, features)), dtype=torch.float32),
            torch.tensor(rng.integers(0, 2, n)))


def random_log_probs(shape: tuple[int, ...], n_classes: int, seed: int = 0) -> np.ndarray:
    """Float32 log-probabilities from sharp to flat, with exact ties and vectors with zeros mixed in."""
    rng = np.random.default_rng(seed)
    scale = rng.choice([0.3, 1.0, 3.0, 10.0, 30.0], size=shape)[..., None]
    logits = rng.normal(size=(*shape, n_classes)) * scale
    flat = logits.reshape(-1, n_classes)
    flat[::17, 1] = flat[::17, 0]  # exact ties between the first two classes
    flat[::23, 1:] = -np.inf  # the top class has probability 1
    return (logits - logsumexp(logits, axis=-1, keepdims=True)).astype(np.float32)


def test_every_defense_is_registered_with_a_cited_docstring():
    for name in NEW_DEFENSES:
        component = DEFENSES.get(name)
        doc = component.obj.__doc__
        assert doc and any(str(year) in doc for year in range(2001, 2025)), name
        build(name)  # the defaults are valid


# --- training-side -----------------------------------------------------------------------------------------------


def test_label_smoothing_loss_is_the_closed_form_and_matches_torch():
    smoothing = build("label_smoothing", alpha=0.3)
    # logits (2, 0, 0), label 0: −log p_0 = log(e²+2) − 2, mean_j −log p_j = log(e²+2) − 2/3
    # so 0.7·(log(e²+2) − 2) + 0.3·(log(e²+2) − 2/3) = log(e²+2) − 1.6
    loss = smoothing.loss(torch.tensor([[[2.0, 0.0, 0.0]]]), torch.tensor([[0]]))
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(math.log(math.e**2 + 2) - 1.6, rel=1e-6)

    g = torch.Generator().manual_seed(0)
    outputs, labels = torch.randn(3, 7, 5, generator=g), torch.randint(0, 5, (3, 7), generator=g)
    expected = torch.stack([F.cross_entropy(outputs[m], labels[m], label_smoothing=0.3) for m in range(3)])
    torch.testing.assert_close(smoothing.loss(outputs, labels), expected)
    torch.testing.assert_close(build("label_smoothing", alpha=0.0).loss(outputs, labels),
                               Defense().loss(outputs, labels))


def test_one_sgd_step_with_weight_decay_is_the_hand_computed_update():
    """θ ← θ − lr·(∇ mean CE + λ·θ), with the gradient of a linear softmax model written out by hand."""
    n, features, classes, lam, lr = 12, 4, 3, 0.3, 0.5
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)
    keep = np.zeros((2, n), dtype=bool)
    keep[0, :6], keep[1, 6:] = True, True  # 6 members each: one minibatch of 6 is one pass, each member once
    factory = lambda: logreg((features,), classes)
    ensemble = Ensemble.initialise(factory, 2, seed=3)
    W0, b0 = ensemble.params["1.weight"].detach().numpy().copy(), ensemble.params["1.bias"].detach().numpy().copy()
    defense = build("l2", weight_decay=lam)
    assert defense.optimizer_overrides() == {"weight_decay": lam}
    defense.train(ensemble, X, y, keep, engine="ensemble", seed=0, epochs=1, batch_size=6, lr=lr, optimizer="sgd",
                  momentum=0.0)
    Xn, yn = X.double().numpy(), y.numpy()
    for m in range(2):
        x, onehot = Xn[keep[m]], np.eye(classes)[yn[keep[m]]]
        logits = x @ W0[m].T + b0[m]
        p = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
        grad_W, grad_b = (p - onehot).T @ x / len(x), (p - onehot).mean(0)
        np.testing.assert_allclose(ensemble.params["1.weight"][m].detach().numpy(), W0[m] - lr * (grad_W + lam * W0[m]),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ensemble.params["1.bias"][m].detach().numpy(), b0[m] - lr * (grad_b + lam * b0[m]),
                                   rtol=1e-5, atol=1e-6)


def test_dropout_rate_reaches_the_model(tmp_path):
    overrides = build("dropout", rate=0.9).architecture_overrides()
    assert overrides == {"dropout": 0.9}
    ensemble = Ensemble.initialise(lambda: mlp((6,), 2, 1, 32, "relu", **overrides), 2, seed=0)
    x = torch.randn(2, 8, 6)
    assert not torch.allclose(ensemble.forward(x), ensemble.forward(x))  # fresh masks on every training call
    torch.testing.assert_close(ensemble.predict(x[0]), ensemble.predict(x[0]))  # none when released

    path = write_grid(tmp_path, {**TINY_GRID, "architectures": [{"name": "mlp", "params": {"dropout": 0.1}}],
                                 "defenses": [{"name": "dropout", "params": {"rate": 0.9}}]})
    run = CellRun(load_grid(str(path)).cells[0], Cache(tmp_path / "cache"))
    model = run._factory(run.features())()
    rates = [layer.p for layer in model.modules() if isinstance(layer, nn.Dropout)]
    assert rates == [0.9, 0.9]  # the defense's rate replaces the architecture's, in both hidden layers


def test_held_out_members_are_the_models_own_and_not_trained_on():
    keep = membership_matrix(4, 101, seed=0)
    train_keep, held = es.hold_out_members(keep, 0.25, np.random.default_rng(0))
    fewest = keep.sum(1).min()
    assert held.shape == (4, round(0.25 * fewest))
    for m in range(4):
        assert keep[m, held[m]].all() and not train_keep[m, held[m]].any()
        assert len(set(held[m])) == held.shape[1]
    assert (train_keep <= keep).all() and (keep.sum(1) - train_keep.sum(1) == held.shape[1]).all()


def test_early_stopping_stops_each_model_independently_and_restores_its_best(monkeypatch):
    """A scripted validation loss: model 0 is best after epoch 2 and then worsens, model 1 improves until
    epoch 4, model 2 always improves. Patience 2."""
    script = torch.tensor([
        [1.0, 1.0, 1.0],
        [0.9, 0.9, 0.9],
        [0.95, 0.8, 0.8],
        [0.97, 0.7, 0.7],
        [0.99, 0.75, 0.6],
        [0.99, 0.76, 0.5],
        [0.99, 0.77, 0.4],
        [0.99, 0.78, 0.3],
    ])
    snapshots = []

    def scripted(run, held_out, loss_fn):
        snapshots.append({k: v.detach().clone() for k, v in run.ensemble.params.items()})
        return script[len(snapshots) - 1]

    monkeypatch.setattr(es, "held_out_loss", scripted)
    X, y = coin_flips(90)
    ensemble = Ensemble.initialise(lambda: mlp((10,), 2, 1, 16, "relu", 0.0), 3, seed=0)
    log = build("early_stopping", patience=2).train(
        ensemble, X, y, membership_matrix(3, 90, seed=0), engine="ensemble", seed=0,
        **{**TRAINING, "epochs": 8, "optimizer": "adam"},
    )
    # model 0 stops after epoch 4 (no improvement in 3 and 4), model 1 after epoch 6, model 2 runs all 8
    assert log.info["stopped_epoch_mean"] == pytest.approx((4 + 6 + 8) / 3)
    assert log.info["best_epoch_mean"] == pytest.approx((2 + 4 + 8) / 3)
    assert log.info["stopped_early_fraction"] == pytest.approx(2 / 3)
    assert np.isnan(log.history[4:, 0]).all() and np.isfinite(log.history[:4, 0]).all()
    assert np.isnan(log.history[6:, 1]).all() and np.isfinite(log.history).all(axis=0)[2]
    for name, value in ensemble.params.items():
        torch.testing.assert_close(value[0], snapshots[1][name][0], rtol=0, atol=0)  # best of epoch 2
        torch.testing.assert_close(value[1], snapshots[3][name][1], rtol=0, atol=0)  # best of epoch 4
        torch.testing.assert_close(value[2], snapshots[7][name][2], rtol=0, atol=0)  # last epoch
        for later in snapshots[4:]:  # a stopped model is frozen at its best, Adam's momentum notwithstanding
            torch.testing.assert_close(later[name][0], snapshots[1][name][0], rtol=0, atol=0)
        assert not torch.equal(snapshots[4][name][2], snapshots[7][name][2])  # the others went on


def test_early_stopping_on_memorisation_keeps_the_lowest_validation_loss(monkeypatch):
    """Coin flips cannot be learnt: once the models memorise, their held-out loss rises; each keeps its best."""
    recorded = []
    original = es.held_out_loss

    def recording(*args, **kwargs):
        recorded.append(original(*args, **kwargs))
        return recorded[-1]

    monkeypatch.setattr(es, "held_out_loss", recording)
    X, y = coin_flips(200)
    keep = membership_matrix(3, 200, seed=1)
    ensemble = Ensemble.initialise(lambda: mlp((10,), 2, 2, 64, "relu", 0.0), 3, seed=0)
    defense = build("early_stopping", patience=2, validation_fraction=0.3)
    log = defense.train(ensemble, X, y, keep, engine="ensemble", seed=5, **{**TRAINING, "epochs": 30})
    assert log.info["stopped_epoch_mean"] < 30 and log.info["stopped_early_fraction"] == 1.0
    curves = torch.stack(recorded)  # [epochs run, M]
    stopped = np.isnan(log.history).argmax(0)  # first epoch not trained, per model
    for m in range(3):
        run = curves[: stopped[m], m]
        assert run[-1] > run.min()  # the validation loss rose before the model stopped
        assert int(run.argmin()) + 1 + 2 == stopped[m]  # stopped after `patience` epochs without improvement
    _, held = es.hold_out_members(keep, 0.3, np.random.default_rng(derive_seed(5, "validation")))
    assert log.info["validation_members"] == held.shape[1]
    outputs = ensemble.predict(X)  # [M, N, C], evaluation mode
    final = torch.stack([defense.loss(outputs[m, held[m]][None], y[held[m]][None])[0] for m in range(3)])
    best = torch.stack([curves[: stopped[m], m].min() for m in range(3)])
    torch.testing.assert_close(final, best)  # the best parameters were restored


def test_early_stopping_loop_engine_matches_the_stacked_one():
    X, y = coin_flips(80)
    keep = membership_matrix(2, 80, seed=2)
    defense = build("early_stopping", patience=2)
    results = []
    for engine in ("ensemble", "loop"):
        ensemble = Ensemble.initialise(lambda: mlp((10,), 2, 1, 8, "tanh", 0.0), 2, seed=4)
        log = defense.train(ensemble, X, y, keep, engine=engine, seed=1, **{**TRAINING, "epochs": 6})
        results.append((ensemble.params, log))
    (a, log_a), (b, log_b) = results
    assert log_a.info == log_b.info
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_inference_models_are_independent_per_model():
    torch.manual_seed(0)
    models = InferenceModels(3, 4, 8, seed=0, device=torch.device("cpu"))
    log_probs = torch.log_softmax(torch.randn(3, 5, 4), -1)
    labels = torch.randint(0, 4, (3, 5))
    logits = models.logits(log_probs, labels)
    assert logits.shape == (3, 5)
    with torch.no_grad():
        models.params["out.w"][1] += 1.0  # change model 1 only
    changed = models.logits(log_probs, labels)
    torch.testing.assert_close(changed[[0, 2]], logits[[0, 2]])
    assert not torch.allclose(changed[1], logits[1])


def test_advreg_holds_out_its_reference_members_and_reports_the_game():
    X, y = coin_flips(120)
    keep = membership_matrix(2, 120, seed=0)
    ensemble = Ensemble.initialise(lambda: mlp((10,), 2, 1, 16, "relu", 0.0), 2, seed=0)
    log = build("advreg", reference_fraction=0.25).train(ensemble, X, y, keep, engine="ensemble", seed=0,
                                                         **{**TRAINING, "epochs": 2})
    assert log.history.shape == (2, 2) and np.isfinite(log.history).all()
    assert log.info["reference_members"] == round(0.25 * keep.sum(1).min())
    # two epochs on coin flips: nothing memorised yet, so the inference models are at chance (gain −2·log 2)
    assert abs(log.info["inference_gain"] + 2 * math.log(2)) < 0.05
    assert abs(log.info["inference_accuracy"] - 0.5) < 0.1


@pytest.mark.slow
def test_advreg_narrows_the_member_gap_on_memorisation():
    """Against the same training with α = 0 (same reference hold-out, so only the regulariser differs): lower
    LOSS-attack AUC, a smaller train/test loss gap, and an inference model pushed toward chance."""
    X, y = coin_flips(200)
    keep = membership_matrix(2, 200, seed=1)
    results = {}
    for alpha in (0.0, 3.0):
        ensemble = Ensemble.initialise(lambda: mlp((10,), 2, 2, 128, "relu", 0.0), 2, seed=0)
        defense = build("advreg", alpha=alpha, inference_steps=3)
        log = defense.train(ensemble, X, y, keep, engine="ensemble", seed=0, **{**TRAINING, "epochs": 30})
        loss = -torch.log_softmax(ensemble.predict(X), -1).gather(-1, y.expand(2, -1)[..., None])[..., 0].numpy()
        aucs = np.array([auc(-loss[m], keep[m]) for m in range(2)])
        gaps = np.array([loss[m, ~keep[m]].mean() - loss[m, keep[m]].mean() for m in range(2)])
        results[alpha] = aucs, gaps, log.info["inference_gain"]
    (auc0, gap0, gain0), (auc3, gap3, gain3) = results[0.0], results[3.0]
    assert auc0.mean() > 0.7 and gap0.mean() > 2.0  # without the regulariser the models memorise
    assert auc3.mean() < auc0.mean() - 0.05 and gap3.mean() < gap0.mean() / 2
    assert gain3 < gain0
    assert gain0 > -2 * math.log(2) + 0.2  # against memorising models the inference models beat chance


# --- release-side ------------------------------------------------------------------------------------------------


def test_memguard_keeps_every_label_within_the_budget_and_moves_the_defender_to_one_half():
    budget, threshold = 0.3, 0.75
    memguard = build("memguard", budget=budget, threshold=threshold)
    assert memguard.release_only and memguard.releases == "probabilities"
    for n_classes in (2, 10):
        log_probs = random_log_probs((3, 2000), n_classes, seed=n_classes)
        released = memguard.release(log_probs, np.random.default_rng(0))
        assert released.dtype == np.float32 and released.shape == log_probs.shape
        np.testing.assert_array_equal(released.argmax(-1), log_probs.argmax(-1))  # 100 % of queries
        np.testing.assert_allclose(np.exp(released.astype(np.float64)).sum(-1), 1.0, atol=1e-5)

        noisy, distortion = memguard_noise(log_probs, threshold)
        np.testing.assert_array_equal(noisy.argmax(-1), log_probs.argmax(-1))
        l1 = np.abs(np.exp(noisy) - np.exp(log_probs.astype(np.float64))).sum(-1)
        np.testing.assert_allclose(distortion, l1, atol=1e-6)
        # Phase II: the expected distortion of every query is within the budget, and so is the realised mean
        assert (release_probability(distortion, budget) * distortion <= budget + 1e-12).all()
        realised = np.abs(np.exp(released.astype(np.float64)) - np.exp(log_probs.astype(np.float64))).sum(-1)
        assert realised.mean() <= budget * 1.05 and (realised > budget).any()  # a bound on the expectation
        noisy_released = realised > 1e-3
        probability = release_probability(distortion, budget)
        large = distortion > 1e-3
        assert noisy_released[large].mean() == pytest.approx(probability[large].mean(), abs=0.03)

        before = np.abs(defender_output(log_probs, threshold) - 0.5)
        after = np.abs(defender_output(noisy, threshold) - 0.5)
        assert (after <= before + 1e-9).all()
        reached = np.isclose(after, 0.0, atol=1e-6)
        assert reached.mean() > 0.95  # only queries whose label a lower top would lose stop short of 0.5
        moved = np.abs(defender_output(released, threshold) - 0.5)
        assert moved.mean() < 0.5 * before.mean()


def test_memguard_stops_above_a_tie_rather_than_lose_the_label():
    with np.errstate(divide="ignore"):
        log_probs = np.log(np.array([[0.45, 0.44, 0.11], [1.0, 0.0, 0.0], [0.6, 0.4, 0.0]]))
    noisy, distortion = memguard_noise(log_probs, threshold=0.4)
    p = np.exp(noisy)
    # 0.45 cannot go to 0.4: 0.44 rescaled would pass it; it stops just above the tie
    assert p[0, 0] > p[0, 1] and p[0, 0] == pytest.approx(0.44 / (0.55 + 0.44) * (1 + LABEL_MARGIN))
    np.testing.assert_allclose(p[1], [0.4, 0.3, 0.3])  # no mass elsewhere: shared evenly
    np.testing.assert_allclose(p[2], [0.5 * (1 + LABEL_MARGIN), 0.5 * (1 - LABEL_MARGIN), 0.0])
    np.testing.assert_allclose(distortion, 2 * (np.array([0.45, 1.0, 0.6]) - p[:, 0]))


def test_memguard_hides_a_confidence_gap():
    """Members are released with high confidence, non-members lower: after MemGuard the top probability no
    longer tells them apart."""
    rng = np.random.default_rng(0)
    member = rng.uniform(0.9, 1.0, 2000)
    nonmember = rng.uniform(0.55, 0.95, 2000)
    top = np.concatenate([member, nonmember])
    log_probs = np.log(np.stack([top, 1 - top], -1))[None].astype(np.float32)
    is_member = np.arange(4000) < 2000
    released = build("memguard", budget=0.5, threshold=0.75).release(log_probs, np.random.default_rng(1))
    assert auc(log_probs[0, :, 0], is_member) > 0.9
    assert abs(auc(released[0, :, 0], is_member) - 0.5) < 0.05


def test_topk_releases_the_renormalised_k_largest():
    log_probs = random_log_probs((2, 300), 6, seed=1)
    released = build("topk", k=3).release(log_probs, np.random.default_rng(0))
    shown = np.isfinite(released)
    assert (shown.sum(-1) == np.minimum(3, np.isfinite(log_probs).sum(-1))).all()  # zeros stay zeros
    np.testing.assert_allclose(logsumexp(released, axis=-1), 0.0, atol=1e-5)
    np.testing.assert_array_equal(released.argmax(-1), log_probs.argmax(-1))
    for row, out in zip(log_probs.reshape(-1, 6), released.reshape(-1, 6), strict=True):
        kept = np.isfinite(out)
        hidden = row[~kept]
        assert (hidden <= row[kept].min()).all()  # the shown classes are the largest
        ratio = out[kept & np.isfinite(row)] - row[kept & np.isfinite(row)]
        np.testing.assert_allclose(ratio, ratio[0], atol=1e-5)  # proportional to the original probabilities
    identity = build("topk", k=6).release(log_probs, np.random.default_rng(0))
    np.testing.assert_allclose(identity, log_probs, atol=1e-6)


def test_rounding_releases_rounded_probabilities_and_keeps_the_label():
    log_probs = random_log_probs((2, 500), 4, seed=2)
    for decimals in (0, 1, 2, 4):
        released = build("rounding", decimals=decimals).release(log_probs, np.random.default_rng(0))
        np.testing.assert_array_equal(released.argmax(-1), log_probs.argmax(-1))
        p, original = np.exp(released.astype(np.float64)), np.exp(log_probs.astype(np.float64))
        is_top = np.arange(4) == log_probs.argmax(-1)[..., None]
        rounded = np.round(original, decimals)
        np.testing.assert_allclose(np.where(is_top, 0, p), np.where(is_top, 0, rounded), rtol=1e-6, atol=1e-12)
        units = p * 10**decimals
        np.testing.assert_allclose(units, np.round(units), atol=1e-3)  # every value is a multiple of the unit
        assert (np.isneginf(released) == (p == 0)).all()
    # a tie made by rounding: 0.504 and 0.496 both round to 0.5; the predicted class gets one unit more
    tie = np.log(np.array([[[0.496, 0.504]]]))
    np.testing.assert_allclose(np.exp(build("rounding", decimals=2).release(tie, None)), [[[0.5, 0.51]]])
    below_half = np.log(np.array([[[0.34, 0.33, 0.33]]]))
    np.testing.assert_allclose(np.exp(build("rounding", decimals=0).release(below_half, None)), [[[1.0, 0.0, 0.0]]])


def test_label_only_releases_a_one_hot_label():
    log_probs = random_log_probs((2, 100), 5, seed=3)
    defense = build("label_only")
    assert defense.releases == "labels" and defense.release_only
    released = defense.release(log_probs, np.random.default_rng(0))
    top = log_probs.argmax(-1)
    np.testing.assert_array_equal(released.argmax(-1), top)
    np.testing.assert_array_equal(released == 0, np.arange(5) == top[..., None])
    assert np.isneginf(released[released != 0]).all()


# --- grid load and the pipeline ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset, defense, message",
    [
        ("breast_cancer", {"name": "dropout", "params": {"rate": 1.0}}, "rate=1.0 is out of range; allowed: [0, 1)"),
        ("breast_cancer", {"name": "l2", "params": {"weight_decay": -0.1}}, "weight_decay=-0.1 is out of range"),
        ("breast_cancer", {"name": "topk", "params": {"k": 5}}, "k=5 exceeds the dataset's 2 classes"),
        ("diabetes", "label_smoothing", "defense 'label_smoothing' applies to classification only"),
        ("diabetes", "memguard", "defense 'memguard' applies to classification only"),
        ("digits", {"name": "memguard", "params": {"threshold": 0.1}}, "threshold=0.1 is at most 1/10"),
        ("breast_cancer", {"name": "early_stopping", "params": {"validation_fraction": 0.0}},
         "validation_fraction=0.0 is out of range; allowed: (0, 0.5]"),
        ("breast_cancer", {"name": "advreg", "params": {"alpha": -1}}, "alpha=-1.0 is out of range"),
    ],
)
def test_bad_settings_exit_2_at_grid_load(tmp_path, capsys, dataset, defense, message):
    path = write_grid(tmp_path, {**TINY_GRID, "datasets": [dataset], "defenses": [defense]})
    assert main(["grid", "--grid", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.fixture
def random_labels(registries):
    def load() -> Dataset:
        X, y = coin_flips(160)
        return Dataset(X.numpy(), y.numpy(), "classification", 2)

    DATASETS.register("random_labels", description="coin-flip labels (test only)", n_classes=2)(load)


def test_every_defense_runs_through_the_pipeline(random_labels, tmp_path):
    small = {"early_stopping": {"patience": 1}, "topk": {"k": 1}}  # k=1: the coin-flip dataset has 2 classes
    defenses = [{"name": name, "params": small[name]} if name in small else name for name in DEFENSES.names()]
    path = write_grid(tmp_path, {
        **TINY_GRID, "datasets": ["random_labels"], "defenses": defenses, "attacks": ["loss", "correctness"],
        "architectures": [{"name": "mlp", "params": {"width": 16, "depth": 1}}],
        "training": {"epochs": 3, "batch_size": 32, "lr": 0.01},
    })
    cells = load_grid(str(path)).cells
    runs = {c.defense.name: CellRun(c, Cache(tmp_path / "cache")) for c in cells}
    for name, run in runs.items():  # release-only defenses release the undefended models; the others train their own
        assert (run.models_key == runs["none"].models_key) == (DEFENSES.get(name).obj.release_only or name == "none")
    assert {n for n in runs if DEFENSES.get(n).obj.release_only} >= {"memguard", "topk", "rounding", "label_only"}
    assert main(["grid", "--grid", str(path), "--cache-dir", str(tmp_path / "cache"), "--results",
                 str(tmp_path / "results"), "--quiet", "--no-report"]) == 0
    rows = read_store(tmp_path / "results")
    assert set(rows.defense) == {d if isinstance(d, str) else d["name"] for d in defenses}
    by = rows.set_index(["defense", "attack"]).sort_index()
    assert by.loc[("label_only", "loss"), "skipped"].str.contains("needs probabilities").all()
    assert by.loc[("label_only", "correctness"), "auc"].notna().all()
    assert by.loc[("early_stopping", "loss"), "fact.stopped_epoch_mean"].between(1, 3).all()
    assert by.loc[("advreg", "loss"), "fact.reference_members"].gt(0).all()
    none_accuracy = by.loc[("none", "loss"), "test_accuracy"].to_numpy()
    for name in ("memguard", "topk", "rounding", "label_only"):  # each keeps every predicted label
        np.testing.assert_allclose(by.loc[(name, "correctness"), "test_accuracy"].to_numpy(), none_accuracy)
