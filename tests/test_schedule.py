"""The learning-rate schedule: its closed form, each model of a stacked ensemble against the same model trained
alone by plain PyTorch, the untouched constant path, DP-SGD, and the grid's rules for the new options."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import targets.training as training
from bench.cli import main
from bench.grid import load_grid
from privkernel.errors import BenchError
from privkernel.hashing import derive_seed
from privkernel.registry import DEFENSES
from targets.architectures import mlp
from targets.ensemble import Ensemble, minibatch_indices
from targets.training import TrainingHooks, TrainingSettings, fit, lr_factor
from tests.conftest import TINY_GRID, write_grid


def data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g)
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).long()


def factory() -> torch.nn.Module:
    return mlp((6,), 2, 1, 8, "relu", 0.0)


def uneven_keep(n: int = 64) -> np.ndarray:
    """Two models of different training-set sizes: 40 and 23 of the 64 records."""
    rng = np.random.default_rng(3)
    keep = np.zeros((2, n), dtype=bool)
    keep[0, rng.choice(n, 40, replace=False)] = True
    keep[1, rng.choice(n, 23, replace=False)] = True
    return keep


def closed_form(schedule: str, warmup: float, T: int) -> list[float]:
    """The factor of step ``t`` of ``T``: min(1, (t+1)/(wT)) · [½(1 + cos(π·clip((t/T − w)/(1 − w), 0, 1)))]."""
    out = []
    for t in range(T):
        warm = 1.0 if warmup == 0 else min(1.0, (t + 1) / (warmup * T))
        p = min(1.0, max(0.0, (t / T - warmup) / (1 - warmup)))
        out.append(warm * (0.5 * (1 + math.cos(math.pi * p)) if schedule == "cosine" else 1.0))
    return out


class RecordLR(TrainingHooks):
    """Records the learning rate each step ran with."""

    def start(self, run):
        self.lrs = []

    def after_step(self, run):
        self.lrs.append(run.optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("schedule, warmup", [("cosine", 0.0), ("cosine", 0.2), ("constant", 0.3)])
def test_the_rate_of_every_step_is_the_closed_form(schedule, warmup):
    X, y = data()
    keep = uneven_keep()
    settings = TrainingSettings(3, 8, 0.05, "sgd", 0.9, schedule=schedule, warmup=warmup)
    hooks = RecordLR()
    fit(Ensemble.initialise(factory, 2, seed=0), X, y, keep, settings, seed=1, hooks=hooks)
    T = 3 * math.ceil(40 / 8)  # the largest model sets the steps of every model
    np.testing.assert_allclose(hooks.lrs, [0.05 * f for f in closed_form(schedule, warmup, T)], rtol=1e-12)
    if warmup:
        assert hooks.lrs[0] == pytest.approx(0.05 / (warmup * T)) and max(hooks.lrs) == pytest.approx(0.05)


def test_cosine_without_warmup_is_torch_cosine_annealing():
    T, lr = 17, 0.1
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=T, eta_min=0.0)
    expected = []
    for _ in range(T):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        annealing.step()
    ours = [lr * lr_factor("cosine", 0.0, t / T, (t + 1) / T) for t in range(T)]
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-15)


def alone(m: int, initial: dict[str, torch.Tensor], X, y, keep, settings: TrainingSettings, seed: int):
    """Model ``m`` trained by itself with plain PyTorch: an ``nn.Module``, torch's optimizer and ``LambdaLR`` with
    the closed-form factor, on model ``m``'s minibatches of the run (the same draws as :func:`fit`)."""
    model = factory()
    model.load_state_dict({k: v[m].clone() for k, v in initial.items()})
    params = list(model.parameters())
    optimizer = (torch.optim.Adam(params, lr=settings.lr) if settings.optimizer == "adam"
                 else torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum))
    rng = np.random.default_rng(derive_seed(seed, "minibatches"))
    epochs = [minibatch_indices(keep, settings.batch_size, rng) for _ in range(settings.epochs)]
    factors = closed_form(settings.schedule, settings.warmup, sum(len(e) for e in epochs))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: factors[t])
    for batches in epochs:
        for index in batches:
            batch = torch.from_numpy(index[m])
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(X[batch]), y[batch]).backward()
            optimizer.step()
            if scheduler.last_epoch + 1 < len(factors):
                scheduler.step()
    return dict(model.named_parameters())


@pytest.mark.parametrize("engine", ["ensemble", "loop"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_each_model_of_an_uneven_ensemble_trains_as_it_would_alone(engine, optimizer):
    """Models of 40 and 23 members in one stacked ensemble, with cosine decay and warm-up: each ends where the same
    model trained by itself with torch's optimizer and scheduler ends, to float rounding."""
    X, y = data()
    keep = uneven_keep()
    settings = TrainingSettings(4, 8, 0.02, optimizer, 0.9, schedule="cosine", warmup=0.1)
    ensemble = Ensemble.initialise(factory, 2, seed=4)
    initial = {k: v.detach().clone() for k, v in ensemble.params.items()}
    training.ENGINES.get(engine).obj().train(ensemble, X, y, keep, settings, seed=7, hooks=TrainingHooks())
    for m in range(2):
        reference = alone(m, initial, X, y, keep, settings, seed=7)
        for name, value in reference.items():
            torch.testing.assert_close(ensemble.params[name][m], value.detach(), rtol=1e-5, atol=1e-6)


def test_the_schedule_moves_the_parameters():
    X, y = data()
    keep = uneven_keep()
    runs = []
    for schedule in ("constant", "cosine"):
        ensemble = Ensemble.initialise(factory, 2, seed=4)
        fit(ensemble, X, y, keep, TrainingSettings(3, 8, 0.05, "adam", 0.0, schedule=schedule), seed=7)
        runs.append(ensemble.params)
    assert all(not torch.allclose(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.parametrize("defense", ["none", "dpsgd", "early_stopping"])
def test_constant_takes_the_untouched_path_bit_for_bit(defense, monkeypatch):
    """The scheduled path (an epoch's batches drawn up front, the rate set before every step) with a factor of 1
    gives, bit for bit, the constant run's parameters, which never have their rate set: a constant schedule runs
    the loop exactly as before schedules existed, Poisson-sampled DP-SGD batches included."""
    X, y = data()
    keep = uneven_keep()
    component = DEFENSES.get(defense)
    built = component.obj(**component.validate({}))

    def trained(**schedule):
        ensemble = Ensemble.initialise(factory, 2, seed=4)
        settings = TrainingSettings(3, 8, 0.05, "sgd", 0.9, **schedule)
        training.ENGINES.get("ensemble").obj().train(ensemble, X, y, keep, settings, seed=7, hooks=built.hooks())
        return ensemble.params

    constant = trained()
    monkeypatch.setattr(training, "lr_factor", lambda *args: 1.0)
    scheduled = trained(schedule="cosine")
    for name, value in constant.items():
        assert torch.equal(value, scheduled[name]), name


def test_dpsgd_trains_with_a_schedule_and_spends_the_same_epsilon():
    """The schedule depends on step counts alone, never on the data: DP-SGD's accounting is unchanged. The
    schedule reaches the loop through the engine, as the pipeline's ``Defense.train(**training)`` passes it."""
    X, y = data()
    keep = uneven_keep()
    component = DEFENSES.get("dpsgd")
    defense = component.obj(**component.validate({"noise_multiplier": 0.5}))
    logs, params = [], []
    for extra in ({}, {"schedule": "cosine", "warmup": 0.1}):
        ensemble = Ensemble.initialise(factory, 2, seed=4)
        logs.append(defense.train(ensemble, X, y, keep, seed=3, epochs=2, batch_size=8, lr=0.05, optimizer="adam",
                                  momentum=0.0, **extra))
        params.append(ensemble.params)
    assert logs[0].info == logs[1].info and np.isfinite(logs[1].history).all()
    assert all(not torch.allclose(params[0][k], params[1][k]) for k in params[0])


def test_only_the_engines_that_keep_the_one_loop_run_a_schedule():
    assert training.StackedEngine.runs_one_loop() and training.LoopEngine.runs_one_loop()
    assert not training.ENGINES.get("federated").obj.runs_one_loop()


# --- the grid ----------------------------------------------------------------------------------------------------


def grid(tmp_path, **training_options):
    return load_grid(str(write_grid(tmp_path, {**TINY_GRID, "training": {**TINY_GRID["training"],
                                                                            **training_options}})))


def test_defaults_stay_out_of_the_cell_key_and_columns(tmp_path):
    plain = grid(tmp_path)
    explicit = grid(tmp_path, schedule="constant", warmup=0)
    assert [c.key for c in plain.cells] == [c.key for c in explicit.cells]
    assert all("training.schedule" not in c.columns() and "training.warmup" not in c.columns()
               for c in explicit.cells)
    cosine = grid(tmp_path, schedule="cosine", warmup=0.01)
    assert not {c.key for c in cosine.cells} & {c.key for c in plain.cells}
    assert cosine.cells[0].columns()["training.schedule"] == "cosine"
    assert cosine.cells[0].columns()["training.warmup"] == 0.01
    swept = grid(tmp_path, schedule=["constant", "cosine"])
    assert len(swept.cells) == 2 * len(plain.cells)


@pytest.mark.parametrize("options, message", [
    ({"schedule": "linear"}, "schedule='linear' is not one of {'constant', 'cosine'}"),
    ({"schedule": "cosin"}, "(did you mean 'cosine'?)"),
    ({"warmup": 1.0}, "warmup=1.0 is out of range; allowed: [0, 1)"),
    ({"warmup": -0.1}, "warmup=-0.1 is out of range"),
    ({"engine": "federated", "sites": 2, "schedule": "cosine"},
     "schedule='cosine' set a learning-rate schedule over one run of the training loop, but the federated engine "
     "runs the loop once per round"),
    ({"engine": "federated", "warmup": 0.1}, "remove schedule and warmup from this training, or use engine "
     "'ensemble' or 'loop'"),
])
def test_bad_schedules_are_refused_at_grid_load(tmp_path, options, message):
    with pytest.raises(BenchError) as caught:
        grid(tmp_path, **options)
    assert message in str(caught.value)


def test_a_federated_sweep_keeps_the_schedule_on_its_other_engines(tmp_path):
    cells = grid(tmp_path, engine=["ensemble", "federated"]).cells
    assert {c.training_params["engine"] for c in cells} == {"ensemble", "federated"}


# --- bench list ----------------------------------------------------------------------------------------------------


def test_bench_list_shows_the_training_and_protocol_options(capsys):
    assert main(["list", "training"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("training:\n")
    line = next(row for row in out.splitlines() if row.split()[:1] == ["momentum"])
    assert "(float, default 0.9, [0, 1))" in line and "sgd" in line
    assert "schedule" in out and "'constant'" in out and "sites" in out and "federated engine only" in out
    assert main(["list", "--json", "protocol"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in listed["protocol"]] == ["n_models", "n_targets", "test_fraction", "calibration_models"]
    assert main(["list", "--json", "training"]) == 0
    momentum = next(p for p in json.loads(capsys.readouterr().out)["training"] if p["name"] == "momentum")
    assert momentum["default"] == 0.9 and momentum["allowed"] == "[0, 1)"


def test_bench_list_names_training_and_protocol_among_the_families(capsys):
    assert main(["list", "trainng"]) == 2
    err = capsys.readouterr().err
    assert "(did you mean 'training'?)" in err and "training, protocol" in err
