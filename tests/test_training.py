"""The one training loop: every defense through every engine, and the order in which hooks are called."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privkernel.registry import DEFENSES, ENGINES
from targets.architectures import mlp
from targets.ensemble import Ensemble
from targets.membership import membership_matrix
from targets.training import TrainingHooks, TrainingSettings, fit

SETTINGS = TrainingSettings(epochs=2, batch_size=16, lr=0.01, optimizer="adam", momentum=0.0)
ENGINE_PARAMS = {"federated": {"sites": 2, "rounds": 2}}


def data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g)
    return X, (X[:, 0] > 0).long()


@pytest.mark.parametrize("engine", ["ensemble", "loop", "federated"])
@pytest.mark.parametrize("defense", DEFENSES.names())
def test_every_defense_trains_with_every_engine_that_accepts_its_hooks(defense, engine):
    component = DEFENSES.get(defense)
    built = component.obj(**component.validate({}))
    trainer = ENGINES.get(engine).obj(**ENGINE_PARAMS.get(engine, {}))
    refusal = trainer.refuses(type(built.hooks()))
    if refusal:
        assert engine == "federated" and set(type(built.hooks()).filled()) - trainer.runs_hooks
        return
    X, y = data()
    keep = membership_matrix(3, len(X), seed=0)
    overrides = built.architecture_overrides()
    ensemble = Ensemble.initialise(lambda: mlp((6,), 2, 1, 8, "relu", overrides.get("dropout", 0.0)), 3, seed=0)
    before = {k: v.detach().clone() for k, v in ensemble.params.items()}
    log = built.train(ensemble, X, y, keep, seed=0, epochs=2, batch_size=16, lr=0.01, optimizer="adam", momentum=0.0,
                      engine=engine, **ENGINE_PARAMS.get(engine, {}))
    rounds = ENGINE_PARAMS.get(engine, {}).get("rounds", 1)
    assert log.history.shape == (2 * rounds, 3)
    assert np.isfinite(log.history[0]).all()
    assert all(not torch.equal(before[k], v) for k, v in ensemble.params.items())
    trained_on = keep if log.trained_on is None else log.trained_on
    assert not (trained_on & ~keep).any()


class Recording(TrainingHooks):
    """Records the order of the hooks' calls and stops model 1 after the first epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def members(self, keep, seed):
        self.calls.append("members")
        return keep

    def start(self, run):
        self.calls.append("start")
        self.frozen = {k: v[1].detach().clone() for k, v in run.ensemble.params.items()}

    def extra_step(self, run, batch):
        self.calls.append("extra_step")

    def objective(self, run, losses, outputs, labels):
        self.calls.append("objective")
        return losses

    def after_step(self, run):
        self.calls.append("after_step")

    def end_epoch(self, run, epoch):
        self.calls.append(f"end_epoch {epoch}")
        run.active[1] = False

    def finish(self, run):
        self.calls.append("finish")
        return {"steps": float(self.calls.count("after_step"))}


def test_hooks_are_called_in_order_and_a_stopped_model_leaves_the_objective():
    X, y = data()
    keep = membership_matrix(2, len(X), seed=1)
    steps = int(np.ceil(keep.sum(1).max() / SETTINGS.batch_size))
    hooks = Recording()
    ensemble = Ensemble.initialise(lambda: mlp((6,), 2, 1, 8, "relu", 0.0), 2, seed=0)
    after_one = {}

    log = fit(ensemble, X, y, keep, TrainingSettings(3, 16, 0.01, "sgd", 0.0), seed=0, hooks=hooks)
    one_epoch = ["extra_step", "objective", "after_step"] * steps
    assert hooks.calls == ["members", "start", *one_epoch, "end_epoch 1", *one_epoch, "end_epoch 2", *one_epoch,
                           "end_epoch 3", "finish"]
    assert log.info == {"steps": 3.0 * steps}
    # model 1 stopped after epoch 1: NaN history, and plain SGD (no momentum) leaves it where epoch 1 ended
    assert np.isfinite(log.history[:, 0]).all() and np.isnan(log.history[1:, 1]).all()
    again = Ensemble.initialise(lambda: mlp((6,), 2, 1, 8, "relu", 0.0), 2, seed=0)
    fit(again, X, y, keep, TrainingSettings(1, 16, 0.01, "sgd", 0.0), seed=0)
    for name, value in ensemble.params.items():
        after_one[name] = again.params[name][1]
        torch.testing.assert_close(value[1], after_one[name], rtol=0, atol=0)
    assert TrainingHooks.filled() == ()
    assert Recording.filled() == ("members", "start", "extra_step", "objective", "after_step", "end_epoch", "finish")
