import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from defenses.base import Defense
from privkernel.hashing import derive_seed
from targets.architectures import cnn, logreg, mlp
from targets.ensemble import Ensemble, minibatch_indices
from targets.membership import membership_matrix
from targets.training import StackedEngine, TrainingHooks, TrainingSettings, default_loss
from tests.training import same_dropout_masks_as_vmap, train


def factory():
    return mlp((5,), 3, depth=2, width=8, activation="tanh", dropout=0.0)


def data(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_minibatches_draw_only_each_models_members():
    keep = membership_matrix(4, 50, seed=1)
    batches = minibatch_indices(keep, 8, np.random.default_rng(0))
    steps = int(np.ceil(keep.sum(1).max() / 8))
    assert batches.shape == (steps, 4, 8)
    for m in range(4):
        drawn = batches[:, m].ravel()
        assert keep[m, drawn].all()
        assert set(drawn) == set(np.flatnonzero(keep[m]))  # every member seen each epoch


def test_stacked_training_equals_training_each_model_alone():
    """The vmapped ensemble is a speed-up, not a different algorithm: compare with a plain loop."""
    X, y = data()
    keep = membership_matrix(3, len(X), seed=2)
    kw = dict(epochs=4, batch_size=16, lr=0.01, optimizer="adam", momentum=0.0)
    ensemble = Ensemble.initialise(factory, 3, seed=7)
    history = train(ensemble, X, y, keep, Defense().loss, seed=11, **kw).history

    rng = np.random.default_rng(derive_seed(11, "minibatches"))
    epochs = [minibatch_indices(keep, 16, rng) for _ in range(4)]
    for m in range(3):
        torch.manual_seed(derive_seed(7, "init", m))
        model = factory()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        for batches in epochs:
            for idx in torch.from_numpy(batches[:, m]):
                opt.zero_grad()
                F.cross_entropy(model(X[idx]), y[idx]).backward()
                opt.step()
        for name, param in model.named_parameters():
            torch.testing.assert_close(ensemble.params[name][m], param.detach(), rtol=1e-4, atol=1e-5)
    assert history.shape == (4, 3) and (history[-1] < history[0]).all()


def test_models_differ_and_training_is_seeded():
    X, y = data()
    keep = membership_matrix(2, len(X), seed=2)
    kw = dict(epochs=2, batch_size=16, lr=0.01, optimizer="sgd", momentum=0.9)

    def trained(init_seed, train_seed):
        ens = Ensemble.initialise(lambda: mlp((5,), 3, 1, 8, "relu", 0.5), 2, seed=init_seed)
        train(ens, X, y, keep, Defense().loss, seed=train_seed, **kw)
        return ens.predict(X)

    a, b = trained(1, 2), trained(1, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a[0], a[1])
    assert not torch.allclose(a, trained(1, 3))  # dropout and minibatch order follow the training seed


def test_state_roundtrip_and_predict_shape():
    X, _ = data()
    ens = Ensemble.initialise(factory, 4, seed=0)
    again = Ensemble.from_state(factory, ens.state())
    out = again.predict(X, batch_size=7)
    assert out.shape == (4, len(X), 3)
    torch.testing.assert_close(out, ens.predict(X))


class DictInputs(torch.nn.Module):
    """A model reading dict-shaped inputs (as graph models do)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 2), torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.a(x["left"]) + self.b(x["right"])


def test_dict_inputs_train_and_predict():
    g = torch.Generator().manual_seed(0)
    X = {"left": torch.randn(40, 4, generator=g), "right": torch.randn(40, 3, generator=g)}
    y = (X["left"][:, 0] > 0).long()
    keep = membership_matrix(2, 40, seed=0)
    ens = Ensemble.initialise(DictInputs, 2, seed=0)
    history = train(ens, X, y, keep, Defense().loss, epochs=20, batch_size=8, lr=0.05,
                             optimizer="adam", momentum=0.0, seed=0).history
    assert history[-1].max() < history[0].min()
    out = ens.predict(X, batch_size=16)
    assert out.shape == (2, 40, 2)
    for m in range(2):
        model = DictInputs()
        model.load_state_dict({k: v[m] for k, v in ens.params.items()})
        torch.testing.assert_close(out[m], model(X), rtol=1e-5, atol=1e-6)


def test_loop_engine_matches_ensemble_without_dropout():
    """Per-model losses of the two engines after several epochs agree to float rounding (rtol 1e-4)."""
    X, y = data(80)
    keep = membership_matrix(4, len(X), seed=3)
    kw = dict(epochs=5, batch_size=16, lr=0.01, optimizer="adam", momentum=0.0, seed=5)
    stacked, looped = Ensemble.initialise(factory, 4, seed=1), Ensemble.initialise(factory, 4, seed=1)
    h_stacked = train(stacked, X, y, keep, Defense().loss, **kw).history
    h_looped = train(looped, X, y, keep, Defense().loss, engine="loop", **kw).history
    np.testing.assert_allclose(h_stacked, h_looped, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stacked.predict(X), looped.predict(X), rtol=1e-4, atol=1e-5)


@same_dropout_masks_as_vmap
def test_loop_engine_matches_ensemble_with_dropout():
    """The loop engine steps the models together, so its dropout masks come from the same stream, model after
    model, as the stacked engine's vmap draws them: the two agree to float rounding even with dropout, while
    another training seed (other masks) does not."""
    X, y = data(120, seed=4)
    keep = membership_matrix(16, len(X), seed=3)
    kw = dict(epochs=15, batch_size=16, lr=0.01, optimizer="adam", momentum=0.0)

    def build():
        return mlp((5,), 3, depth=1, width=32, activation="relu", dropout=0.5)

    h_stacked = train(Ensemble.initialise(build, 16, seed=1), X, y, keep, seed=5, **kw).history
    h_looped = train(Ensemble.initialise(build, 16, seed=1), X, y, keep, engine="loop", seed=5, **kw).history
    h_other = train(Ensemble.initialise(build, 16, seed=1), X, y, keep, seed=6, **kw).history
    np.testing.assert_allclose(h_stacked, h_looped, rtol=1e-4, atol=1e-6)
    assert not np.allclose(h_stacked, h_other, rtol=1e-3)

# --- the matmul formulation of linear chains against the vmap formulation -------------------------------------


def vmap_forward(ensemble: Ensemble, x: torch.Tensor, training: bool) -> torch.Tensor:
    """The vmap formulation spelled out: ``vmap`` of ``functional_call``, per-model dropout masks."""
    ensemble.template.train(training)

    def call(params, buffers, inputs):
        return torch.func.functional_call(ensemble.template, (params, buffers), (inputs,))

    return torch.func.vmap(call, randomness="different")(ensemble.params, ensemble.buffers, x)


class VmapEngine(StackedEngine):
    """The stacked engine with every architecture computed by the vmap formulation."""

    def forward(self, ensemble: Ensemble, x: torch.Tensor, *, training: bool) -> torch.Tensor:
        return vmap_forward(ensemble, x, training)


CHAINS = {
    "mlp": (lambda: mlp((5,), 3, depth=2, width=8, activation="tanh", dropout=0.0), (5,)),
    "mlp_dropout": (lambda: mlp((5,), 3, depth=2, width=8, activation="relu", dropout=0.5), (5,)),
    "logreg_images": (lambda: logreg((2, 3), 3), (2, 3)),
    "mlp_images_dropout": (lambda: mlp((2, 3, 4), 3, depth=1, width=16, activation="gelu", dropout=0.3), (2, 3, 4)),
    "no_bias": (lambda: nn.Sequential(nn.Linear(5, 6, bias=False), nn.ReLU(), nn.Linear(6, 3)), (5,)),
}


def outputs_and_gradients(forward, ensemble, x, y, training):
    """Outputs of ``forward(x, training)`` after seeding dropout, and the gradients of the summed mean losses."""
    torch.manual_seed(3)
    out = forward(x, training)
    return (out, *torch.autograd.grad(default_loss(out, y).sum(), list(ensemble.params.values())))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("chain", list(CHAINS))
def test_matmul_formulation_equals_vmap_in_outputs_gradients_and_dropout_masks(chain, training):
    """Same outputs and gradients to float rounding; with dropout, the same masks (another mask would move an
    output by O(1), not 1e-6)."""
    factory, shape = CHAINS[chain]
    ensemble = Ensemble.initialise(factory, 4, seed=0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 16, *shape, generator=g), torch.randint(0, 3, (4, 16), generator=g)
    assert ensemble.formulation(x, 2) == "matmul"
    matmul = outputs_and_gradients(ensemble.forward, ensemble, x, y, training)
    vmapped = outputs_and_gradients(lambda x, t: vmap_forward(ensemble, x, t), ensemble, x, y, training)
    for a, b in zip(matmul, vmapped, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("chain", list(CHAINS))
def test_matmul_formulation_predicts_as_vmap(chain):
    factory, shape = CHAINS[chain]
    ensemble = Ensemble.initialise(factory, 4, seed=0)
    X = torch.randn(37, *shape, generator=torch.Generator().manual_seed(2))
    assert ensemble.formulation(X, 1) == "matmul"
    with torch.no_grad():
        ensemble.template.eval()
        run = torch.func.vmap(ensemble._call, in_dims=(0, 0, None))
        expected = run(ensemble.params, ensemble.buffers, X)
    torch.testing.assert_close(ensemble.predict(X, batch_size=10), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("factory, shape", [
    (lambda: cnn((1, 5, 5), 3, channels=4, depth=1, kernel_size=3, dropout=0.0), (1, 5, 5)),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(15, 3)), (5, 4)),
    (lambda: nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3)), (6,)),
])
def test_other_architectures_keep_vmap(factory, shape):
    ensemble = Ensemble.initialise(factory, 2, seed=0)
    assert ensemble.formulation(torch.zeros(2, 3, *shape), 2) == "vmap"
    assert ensemble.formulation(torch.zeros(3, *shape), 1) == "vmap"
    assert Ensemble.initialise(DictInputs, 2, seed=0).formulation({"left": torch.zeros(2, 3, 4)}, 2) == "vmap"


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_training_by_the_matmul_formulation_follows_vmap_to_float_rounding(dropout):
    """Trained parameters after 5 epochs of Adam, with dropout on the same masks: equal (to the bit with the MKL
    checked; the tolerance leaves room for a BLAS that rounds the weight gradient's other product otherwise)."""
    X, y = data(80)
    keep = membership_matrix(4, len(X), seed=3)
    settings = TrainingSettings(epochs=5, batch_size=16, lr=0.01, optimizer="adam", momentum=0.0)

    def build():
        return mlp((5,), 3, depth=2, width=16, activation="relu", dropout=dropout)

    trained = {}
    for name, engine in (("matmul", StackedEngine()), ("vmap", VmapEngine())):
        trained[name] = Ensemble.initialise(build, 4, seed=1)
        engine.train(trained[name], X, y, keep, settings, seed=5, hooks=TrainingHooks())
    for key, value in trained["matmul"].params.items():
        torch.testing.assert_close(value, trained["vmap"].params[key], rtol=0, atol=1e-5)
