"""The one training loop of privbench, the hooks through which defenses shape it, and the engines that run it.

:func:`fit` trains the M models of an :class:`~targets.ensemble.Ensemble`, each on its own members of the pool
(``keep[m]``). Every epoch, every step::

    batch = next minibatch of every model              hooks.batches  (DP-SGD: Poisson sampling)
    hooks.extra_step(run, batch)                        (adversarial regularisation: the inference models' steps)
    outputs = engine.forward(ensemble, x, training)
    losses = hooks.loss(outputs, labels)               (label smoothing; cross-entropy or squared error)
    gradient = hooks.gradients(run, batch)              (DP-SGD: per-sample clipping and noise), or the
               backward pass of hooks.objective(...)    (adversarial regularisation adds its privacy term)
    optimizer step;  hooks.after_step(run)
    ... and after every epoch: hooks.end_epoch(run, epoch)  (early stopping; a model it deactivates is frozen)
    ... and at the end: hooks.finish(run), the run's facts

The learning rate of the optimizer step follows the settings' schedule (:func:`lr_factor`).

A defense fills only the hooks it needs (:class:`TrainingHooks`); an engine (:class:`Engine`, registered in
:data:`privkernel.registry.ENGINES`) decides how the M models are computed (stacked, one by one, or
federated) and refuses, before anything runs, hooks it cannot serve.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeAlias

import numpy as np

from privkernel.hashing import derive_seed
from privkernel.lazy import lazy_import
from privkernel.registry import ENGINES, Param
from targets.ensemble import Ensemble, Inputs, minibatch_indices, n_records, take

torch = lazy_import("torch")

#: Forward references (strings), so that importing this module, and the defenses that name them, does not load torch.
LossFn: TypeAlias = "Callable[[torch.Tensor, torch.Tensor], torch.Tensor]"
Grads: TypeAlias = "dict[str, torch.Tensor]"


def default_loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean training loss per model: outputs ``[M, B, C]``, labels ``[M, B]`` → ``[M]``.

    Cross-entropy for class labels (integers); squared error for regression targets (floats, ``C = 1``).
    """
    if labels.is_floating_point():
        return ((outputs[..., 0] - labels) ** 2).mean(dim=1)
    per_point = torch.nn.functional.cross_entropy(outputs.flatten(0, 1), labels.flatten(), reduction="none")
    return per_point.view(labels.shape).mean(dim=1)


SCHEDULES = ("constant", "cosine")

#: The options of the training loop as a grid's ``training:`` sets them; :func:`training_options` adds the engine
#: and the engines' own settings.
TRAINING_PARAMS = (
    Param("epochs", int, 30, "passes over the data: every model takes ceil(n_max / batch_size) steps per epoch, "
          "n_max the most members a model of the cell has (a model with fewer cycles through its own again); "
          "DP-SGD with Poisson sampling: round(n_max / batch_size) steps; federated engine: local epochs per round",
          low=1, high=100_000),
    Param("batch_size", int, 64, "records per model and step (DP-SGD with Poisson sampling: the sampling rate is "
          "batch_size / n_max, so this is the largest model's expected batch)", low=1, high=1_000_000),
    Param("lr", float, 1e-3, "base learning rate of every model's optimizer (adam or sgd); `schedule` and `warmup` "
          "scale it step by step", low=0.0, low_inclusive=False, high=10.0),
    Param("optimizer", str, "adam", "the models' optimizer: torch.optim.Adam (betas 0.9, 0.999; a defense's weight "
          "decay is added to the gradient) or torch.optim.SGD with `momentum`", choices=("adam", "sgd")),
    Param("momentum", float, 0.9, "momentum μ of sgd, in torch's form v <- μ·v + g, θ <- θ - lr·v (no dampening, "
          "not Nesterov); ignored by adam, whose β1 is 0.9", low=0.0, high=1.0, high_inclusive=False),
    Param("schedule", str, "constant", "learning rate over each model's training steps, after the warm-up: "
          "'constant' keeps lr; 'cosine' decays it from lr to 0 as lr·(1 + cos(π·p))/2, p the share of the steps "
          "after the warm-up that are done (see targets.training.lr_factor). Ensemble and loop engines; the federated "
          "engine refuses it", choices=SCHEDULES),
    Param("warmup", float, 0.0, "share of each model's training steps over which the learning rate rises linearly "
          "to lr, from lr/(warm-up steps) at the first step (the recipe of LiRA's training code: 0.01); 0: none. "
          "Ensemble and loop engines; the federated engine refuses it", low=0.0, high=1.0, high_inclusive=False),
)

#: Training options that enter a cell's training settings (hence its key, label and store columns) only when set
#: away from their defaults: the options added after cell keys were first written, so that adding them moved no
#: key and orphaned no cache entry. An option added later goes here too. They reach the loop through the engine
#: (:class:`Engine`), since :meth:`defenses.base.Defense.train` names only the options that came before them.
KEYED_WHEN_SET = ("schedule", "warmup")


def training_options() -> tuple[Param, ...]:
    """Every option of a grid's ``training:``: :data:`TRAINING_PARAMS`, the engine, and each registered engine's
    own settings (their help says which engine reads them). Built when called, once every engine is registered."""
    engine = Param("engine", str, "ensemble", "how the M models are computed: stacked ('ensemble': batched matmuls "
                   "for MLPs, vmap otherwise), one by one ('loop'), or each by FedAvg over sites of its records "
                   "('federated'): see `python -m bench list engines`", choices=tuple(ENGINES.names()))
    own = tuple(replace(p, help=f"{name} engine only: {p.help}") for name in ENGINES.names()
                for p in ENGINES.get(name).params)
    return (*TRAINING_PARAMS, engine, *own)


def omit_defaults(training: Mapping[str, Any]) -> dict[str, Any]:
    """``training`` without the :data:`KEYED_WHEN_SET` options that are at their defaults."""
    defaults = {p.name: p.default for p in TRAINING_PARAMS if p.name in KEYED_WHEN_SET}
    return {k: v for k, v in training.items() if not (k in defaults and v == defaults[k])}


@dataclass(frozen=True)
class TrainingSettings:
    """The recipe shared by the M models: passes over the data, minibatch size, optimizer and learning-rate
    schedule (:data:`TRAINING_PARAMS` says what each means)."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: float = 0.0

    @property
    def scheduled(self) -> bool:
        """Whether the learning rate changes during training."""
        return self.schedule != "constant" or self.warmup > 0


def lr_factor(schedule: str, warmup: float, before: float, after: float) -> float:
    r"""The factor on the base learning rate of the step that takes a model's training from ``before`` to
    ``after``, the shares of its steps done before and after it.

    Parameters
    ----------
    schedule
        ``"constant"`` or ``"cosine"``.
    warmup
        :math:`w \in [0, 1)`, the share of the steps over which the rate rises.
    before, after
        :math:`p^-` and :math:`p^+`: the step is step :math:`s` (from 0) of the :math:`S_e` steps of epoch
        :math:`e` (from 1) of :math:`E`, and :math:`p^- = (e - 1 + s/S_e)/E`, :math:`p^+ = (e - 1 + (s+1)/S_e)/E`.

    Returns
    -------
    float
        .. math::

            f = \min\big(1, p^+ / w\big) \cdot d, \qquad
            d = \begin{cases} 1 & \text{constant} \\
                \tfrac12\big(1 + \cos(\pi \min(1, \max(0, (p^- - w)/(1 - w))))\big) & \text{cosine}
            \end{cases}

        (the warm-up term is 1 when :math:`w = 0`). With :math:`S` steps in every epoch, :math:`T = E S` and
        step :math:`t = (e-1)S + s`, the warm-up gives :math:`(t+1)/(wT)` until the rate reaches the base, and
        without warm-up the cosine is :math:`\tfrac12(1 + \cos(\pi t/T))`, PyTorch's ``CosineAnnealingLR``
        with ``T_max = T`` and ``eta_min = 0``. LiRA's training code (Carlini et al. 2022) warms up over the first
        1 % of its steps, hence ``warmup: 0.01`` for its recipe (its decay, :math:`\cos(7\pi p/16)`, ends at
        0.2·lr rather than 0).
    """
    factor = 1.0 if warmup == 0 else min(1.0, after / warmup)
    if schedule == "cosine":
        decayed = min(1.0, max(0.0, (before - warmup) / (1 - warmup)))
        factor *= 0.5 * (1 + math.cos(math.pi * decayed))
    return factor


@dataclass(frozen=True)
class TrainingLog:
    """What a training run reports: the mean loss per epoch and model ``[epochs, M]``, scalar facts (for example
    the ε a private training reached), which become columns of the results store, and, when the procedure held
    some of a model's members out of its training (a validation or reference set), the records each model
    really trained on ``trained_on[M, N]``: the audit then counts the held-out records as non-members. A procedure
    whose intermediate models an insider sees (federated rounds) keeps them as ``snapshots`` (name → tensor)."""

    history: np.ndarray
    info: dict[str, float] = field(default_factory=dict)
    trained_on: np.ndarray | None = None
    snapshots: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """One step's minibatch of every model: indices into the pool ``[M, B]`` and, for padded batches of uneven
    sizes (Poisson sampling), weights ``[M, B]`` (1 for a record, 0 for padding)."""

    index: torch.Tensor
    weight: torch.Tensor | None = None


@dataclass
class TrainingRun:
    """The state of one run of :func:`fit` that hooks read and change.

    ``keep`` is what the models train on (after :meth:`TrainingHooks.members`); ``active[M]`` is cleared by a
    hook for a model that has stopped: its loss no longer enters the objective, and its history is NaN.
    """

    ensemble: Ensemble
    X: Inputs
    y: torch.Tensor
    keep: np.ndarray
    settings: TrainingSettings
    engine: Engine
    seed: int
    active: torch.Tensor
    optimizer: torch.optim.Optimizer
    minibatch_rng: np.random.Generator

    @property
    def device(self) -> torch.device:
        return self.y.device

    def outputs(self, x: Inputs, *, training: bool) -> torch.Tensor:
        """Every model's outputs on its own inputs ``x[M, B, ...]`` → ``[M, B, outputs]``, through the engine."""
        return self.engine.forward(self.ensemble, x, training=training)


class TrainingHooks:
    """The plain training; a defense subclasses it and overrides the hooks it fills.

    A fresh instance serves one run of :func:`fit` (hooks may keep state between calls). :meth:`filled` names the
    overridden hooks, so that an engine refuses, at grid load, a defense whose hooks it cannot run.

    Parameters
    ----------
    loss
        Mean loss per model (``[M, B, C], [M, B] → [M]``), :func:`default_loss` unless a defense shapes it.
    """

    #: The hooks a subclass may override (besides ``loss``), in the order the loop calls them.
    HOOKS: ClassVar[tuple[str, ...]] = (
        "members", "start", "batches", "extra_step", "objective", "gradients", "after_step", "end_epoch", "finish",
    )

    def __init__(self, loss: LossFn = default_loss) -> None:
        self.loss = loss

    @classmethod
    def filled(cls) -> tuple[str, ...]:
        """The hooks this class overrides."""
        return tuple(h for h in cls.HOOKS if getattr(cls, h) is not getattr(TrainingHooks, h))

    def members(self, keep: np.ndarray, seed: int) -> np.ndarray:
        """The records each model trains on ``[M, N]``, a subset of ``keep`` (a defense may hold some out)."""
        return keep

    def start(self, run: TrainingRun) -> None:
        """Work before the first epoch (state that needs the models or the settings)."""

    def batches(self, run: TrainingRun) -> Iterator[Batch]:
        """One epoch of minibatches; by default shuffled fixed-size batches of every model's members
        (:func:`targets.ensemble.minibatch_indices`) from the ``"minibatches"`` stream of the run's seed."""
        for index in minibatch_indices(run.keep, run.settings.batch_size, run.minibatch_rng):
            yield Batch(torch.from_numpy(index).to(run.device))

    def extra_step(self, run: TrainingRun, batch: Batch) -> None:
        """Work before each step of the models (an adversary's own steps)."""

    def objective(self, run: TrainingRun, losses: torch.Tensor, outputs: torch.Tensor,
                  labels: torch.Tensor) -> torch.Tensor:
        """What each model's step minimises ``[M]``; its loss unless a defense adds a term."""
        return losses

    def gradients(self, run: TrainingRun, batch: Batch) -> tuple[Grads, torch.Tensor] | None:
        """Each model's gradient for this step (``{name: [M, *shape]}``) and its loss to report ``[M]``, or None
        for the backward pass of the objective."""
        return None

    def after_step(self, run: TrainingRun) -> None:
        """Work after each optimizer step."""

    def end_epoch(self, run: TrainingRun, epoch: int) -> None:
        """Work after epoch ``epoch`` (1-based); clearing ``run.active[m]`` stops model ``m``."""

    def finish(self, run: TrainingRun) -> dict[str, float]:
        """Work after the last epoch (e.g. restoring the best parameters); returns the run's scalar facts, which the
        store reports (e.g. the ε reached)."""
        return {}


def make_optimizer(params: list[torch.Tensor], settings: TrainingSettings) -> torch.optim.Optimizer:
    """The settings' optimizer over stacked parameters (elementwise: M independent optimizers)."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    r"""Set the learning rate of the step to come, for every model of the stacked optimizer.

    Notes
    -----
    The schedule is a function of each model's own progress, the share of *its* training steps done
    (:func:`lr_factor`). In one run of the loop every model takes the same steps: an epoch is
    ``ceil(n_max / batch_size)`` steps for all M models (:func:`targets.ensemble.minibatch_indices`: a model with
    fewer members than the largest cycles through its own again), DP-SGD's Poisson plan gives every model the
    same ``round(1/q)`` steps, and the federated engine gives every site of a round the steps of the largest.
    So the M models, whatever their training-set sizes, share their progress at every step, and one rate serves
    them all exactly. Adam and SGD act elementwise, and their state does not depend on the rate: for model
    ``m``'s slice of the stacked parameters at step ``t``,

    .. math::

        \text{Adam:}\quad & m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
        \quad \theta_t = \theta_{t-1} - \eta_t\,\hat m_t / (\sqrt{\hat v_t} + \epsilon) \\
        \text{SGD:}\quad & b_t = \mu b_{t-1} + g_t,\quad \theta_t = \theta_{t-1} - \eta_t\, b_t

    (:math:`g_t` including a defense's weight decay), which is the step that model's own optimizer takes when a
    scheduler sets its rate to :math:`\eta_t`: the stacked training with a schedule is M independent scheduled
    trainings. Should models of one run ever be at different progress, model ``m``'s rate :math:`\eta_{m,t}` would
    be exact by scaling its parameter change by :math:`\eta_{m,t}/\eta_t`, for the same reason: the change is
    linear in the rate and the state does not depend on it.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr


def fit(
    ensemble: Ensemble, X: Inputs, y: torch.Tensor, keep: np.ndarray, settings: TrainingSettings, *, seed: int,
    hooks: TrainingHooks | None = None, engine: Engine | None = None,
) -> TrainingLog:
    """Train every model of ``ensemble`` on its own members of the pool ``(X, y)``: the one training loop.

    Parameters
    ----------
    keep
        ``[M, N]``: the pool records model ``m`` may train on.
    seed
        Seeds the minibatch order (NumPy) and dropout (torch) of this run, and every stream a hook derives.
    hooks
        What a defense changes (:class:`TrainingHooks`); the plain training if None.
    engine
        How the models are computed; the stacked ensemble if None.

    Returns
    -------
    TrainingLog
        Mean training loss per epoch and model ``[epochs, M]`` (NaN where a model had stopped), the hooks' facts
        and, when the hooks held records out, the records each model trained on.
    """
    hooks = hooks or TrainingHooks()
    engine = engine or StackedEngine()
    if n_records(X) != keep.shape[1]:
        raise ValueError(f"keep has {keep.shape[1]} columns for {n_records(X)} records")
    device = y.device
    n_models = ensemble.n_models
    train_keep = hooks.members(keep, seed)
    run = TrainingRun(
        ensemble, X, y, train_keep, settings, engine, seed,
        active=torch.ones(n_models, dtype=torch.bool, device=device),
        optimizer=make_optimizer(list(ensemble.params.values()), settings),
        minibatch_rng=np.random.default_rng(derive_seed(seed, "minibatches")),
    )
    history = np.full((settings.epochs, n_models), np.nan, dtype=np.float32)
    hooks.start(run)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "dropout"))
        for epoch in range(1, settings.epochs + 1):
            total, steps = torch.zeros(n_models, device=device), 0
            batches = hooks.batches(run)
            if settings.scheduled:  # the epoch's number of steps sets each step's share of the training
                batches = list(batches)
            for batch in batches:
                if settings.scheduled:
                    set_learning_rate(run.optimizer, settings.lr * lr_factor(
                        settings.schedule, settings.warmup, (epoch - 1 + steps / len(batches)) / settings.epochs,
                        (epoch - 1 + (steps + 1) / len(batches)) / settings.epochs))
                total += _step(run, hooks, batch)
                steps += 1
            history[epoch - 1] = np.where(run.active.cpu().numpy(), (total / steps).cpu().numpy(), np.nan)
            hooks.end_epoch(run, epoch)
            if not bool(run.active.any()):
                break
    return TrainingLog(history, hooks.finish(run), trained_on=None if train_keep is keep else train_keep)


def _step(run: TrainingRun, hooks: TrainingHooks, batch: Batch) -> torch.Tensor:
    """One optimizer step of every model; returns each model's loss to report ``[M]``."""
    hooks.extra_step(run, batch)
    transformed = hooks.gradients(run, batch)
    if transformed is None:
        x, labels = take(run.X, batch.index), run.y[batch.index]
        outputs = run.outputs(x, training=True)
        losses = hooks.loss(outputs, labels)
        objective = hooks.objective(run, losses, outputs, labels)
        run.optimizer.zero_grad(set_to_none=True)
        (objective * run.active).sum().backward()
        reported = losses.detach()
    else:
        grads, reported = transformed
        for name, param in run.ensemble.params.items():
            param.grad = grads[name]
    run.optimizer.step()
    hooks.after_step(run)
    return reported


# --- helpers for hooks that hold members out ----------------------------------------------------------------


def hold_out_members(keep: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Set aside ``fraction`` of each model's own members.

    Every model holds out the same number of its members, ``round(fraction · fewest members)`` (at least 1),
    drawn uniformly from its own members, so that the held-out sets stack as ``[M, H]``.

    Returns
    -------
    train_keep, held_out
        ``train_keep[M, N]``: the members each model still trains on; ``held_out[M, H]``: indices into the pool
        of each model's held-out members.
    """
    members = [np.flatnonzero(row) for row in keep]
    fewest = min(len(m) for m in members)
    if fewest < 2:
        raise ValueError(
            f"a model has {fewest} training point(s): holding some out needs at least 2; use more data or fewer models"
        )
    n_held = min(max(1, round(fraction * fewest)), fewest - 1)
    held_out = np.stack([rng.choice(m, n_held, replace=False) for m in members])
    train_keep = keep.copy()
    np.put_along_axis(train_keep, held_out, False, axis=1)
    return train_keep, held_out


def held_out_loss(run: TrainingRun, held_out: np.ndarray, loss_fn: LossFn, chunk: int = 2048) -> torch.Tensor:
    """Mean loss of each model on its own held-out points ``held_out[M, H]`` in evaluation mode → ``[M]``."""
    total = torch.zeros(run.ensemble.n_models, device=run.device)
    index = torch.from_numpy(held_out).to(run.device)
    with torch.no_grad():
        for start in range(0, index.shape[1], chunk):
            idx = index[:, start : start + chunk]
            outputs = run.outputs(take(run.X, idx), training=False)
            total += loss_fn(outputs, run.y[idx]) * idx.shape[1]
    return total / index.shape[1]


def copy_models(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], which: torch.Tensor) -> None:
    """``target[k][m] ← source[k][m]`` for every stacked tensor ``k`` and every model ``m`` where ``which[m]``."""
    if not bool(which.any()):
        return
    with torch.no_grad():
        for name, value in target.items():
            value[which] = source[name][which]


# --- engines ------------------------------------------------------------------------------------------------


class Engine:
    """How the M models of a cell are computed and trained; registered in :data:`privkernel.registry.ENGINES`
    with the training settings it alone reads (its parameters).

    An engine is built with its parameters (``ENGINES.get(name).obj(**params)``; the stacked and loop engines have
    none) and trains with the :class:`TrainingSettings` it is given, learning-rate schedule included. An engine
    that overrides :meth:`train` (the federated engine runs the loop once per round, each with a fresh optimizer)
    has no training that one schedule spans: :meth:`runs_one_loop` says which engines keep the one loop, and a grid
    that sets a schedule for another engine is refused at load.

    Attributes
    ----------
    stacked
        Whether one computation serves all M models (batched matmuls or ``vmap``); False when they run one after
        the other.
    runs_hooks
        The hooks of :class:`TrainingHooks` it can serve (``loss`` always).
    """

    stacked: ClassVar[bool] = True
    runs_hooks: ClassVar[frozenset[str]] = frozenset(TrainingHooks.HOOKS)
    name: ClassVar[str] = ""

    @classmethod
    def runs_one_loop(cls) -> bool:
        """Whether the engine trains by one run of :func:`fit` over the whole training (so a learning-rate schedule
        spans it): the engines that keep :meth:`Engine.train`."""
        return cls.train is Engine.train

    def refuses(self, hooks: type[TrainingHooks]) -> str | None:
        """Why this engine cannot run a defense with these hooks, or None."""
        unserved = [h for h in hooks.filled() if h not in self.runs_hooks]
        if unserved:
            return (f"it fills the training hook(s) {', '.join(unserved)}, which the {self.name} engine does not run")
        return None

    def forward(self, ensemble: Ensemble, x: Inputs, *, training: bool) -> torch.Tensor:
        """Outputs of every model on its own inputs ``x[M, B, ...]`` → ``[M, B, outputs]``, with gradients."""
        return ensemble.forward(x, training)

    def train(
        self, ensemble: Ensemble, X: Inputs, y: torch.Tensor, keep: np.ndarray, settings: TrainingSettings, *,
        seed: int, hooks: TrainingHooks,
    ) -> TrainingLog:
        """Train the ensemble in place (see :func:`fit`)."""
        return fit(ensemble, X, y, keep, settings, seed=seed, hooks=hooks, engine=self)


@ENGINES.register("ensemble", description="The M models stacked parameter by parameter and trained as one "
                  "computation (batched matmuls for chains of linear layers, vmap for other architectures): one "
                  "forward and backward pass per step serve every model.")
class StackedEngine(Engine):
    """The default engine: :meth:`Engine.forward` over the stacked parameters, by the formulation that
    :meth:`~targets.ensemble.Ensemble.formulation` picks for the architecture."""

    name = "ensemble"


@ENGINES.register("loop", description="The same training with each model's forward pass computed on its own, "
                  "one after the other: the reference for the stacked engine, and the fallback for modules that "
                  "vmap cannot run.")
class LoopEngine(Engine):
    """Every step calls each model with :func:`torch.func.functional_call` in turn. Minibatches, optimizer and
    hooks are those of the stacked engine; dropout masks are drawn model after model from the same stream (with
    torch's current ``vmap`` they come out equal to the stacked engine's, which the tests check)."""

    name = "loop"
    stacked = False

    def forward(self, ensemble: Ensemble, x: Inputs, *, training: bool) -> torch.Tensor:
        ensemble.template.train(training)
        outputs = []
        for m in range(ensemble.n_models):
            params = {k: v[m] for k, v in ensemble.params.items()}
            buffers = {k: v[m] for k, v in ensemble.buffers.items()}
            outputs.append(torch.func.functional_call(ensemble.template, (params, buffers),
                                                        (ensemble.collate(take(x, m), 1),)))
        return torch.stack(outputs)
