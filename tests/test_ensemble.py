import numpy as np
import torch
from torch.nn import functional as F

from defenses.base import Defense
from privkernel.hashing import derive_seed
from targets.architectures import mlp
from targets.ensemble import Ensemble, minibatch_indices
from targets.membership import membership_matrix
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