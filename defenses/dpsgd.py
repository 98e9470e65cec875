"""DP-SGD (Abadi et al. 2016) for the M models of a cell trained together, accounted with Opacus.

One step of model ``m`` with minibatch :math:`B_m` (Poisson-sampled at rate :math:`q` from its members), clipping
norm :math:`C` and noise multiplier :math:`\\sigma` updates its parameters with

.. math::

    \\tilde g_m = \\frac{1}{q\\,n_m}\\Big(\\sum_{i \\in B_m} g_{m,i}\\,
        \\min\\Big(1, \\frac{C}{\\lVert g_{m,i}\\rVert_2 + 10^{-6}}\\Big) + \\mathcal N(0, \\sigma^2 C^2 I)\\Big)

where :math:`g_{m,i}` is the gradient of sample ``i``'s loss with respect to *all* of model ``m``'s parameters,
:math:`n_m` its number of members and :math:`q\\,n_m` the expected batch size (Opacus' ``expected_batch_size``
convention for Poisson sampling; the :math:`10^{-6}` is Opacus' stabiliser). The optimizer (Adam or SGD, as in
the cell's training settings) then steps on :math:`\\tilde g_m`. Every model runs ``T`` steps with the same
``(σ, q)``, and the privacy spent, ε at the given δ, is what Opacus' accountant (RDP or PRV) reports for
``(σ, q, T)``.

Per-sample gradients come from one of two interchangeable computations (the tests check they agree):

* :func:`vmap_clipped_sum`, the reference for any architecture: ``vmap`` over models of ``vmap`` over samples
  of ``torch.func.grad``, which materialises every per-sample gradient ``[M, B, *param]``;
* :func:`book_keeping_clipped_sum`, for chains of ``nn.Linear`` and parameter-free layers (MLPs, logistic
  regression): the per-sample gradient of a linear layer ``z = W a + b`` is :math:`\\partial\\ell_i/\\partial z_i
  \\, a_i^\\top`, so its squared norm is :math:`\\lVert \\partial\\ell_i/\\partial z_i\\rVert^2(\\lVert a_i\\rVert^2
  + 1)` and the clipped sum is one matrix product :math:`(c \\odot G)^\\top A` (the "book-keeping" trick of Bu et
  al. 2022, related to ghost clipping, Li et al. 2021): no ``[B, out, in]`` tensor is ever formed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from defenses.base import Defense
from privkernel.errors import BenchError
from privkernel.hashing import derive_seed
from privkernel.lazy import lazy_import
from privkernel.memory import memory_budget
from privkernel.registry import DEFENSES, Param
from targets.ensemble import (
    Ensemble,
    Inputs,
    is_linear_chain,
    minibatch_indices,
    record_shape,
    records_within,
    run_linear_chain,
    take,
)
from targets.training import Batch, Grads, LossFn, TrainingHooks, TrainingRun

torch = lazy_import("torch")

ACCOUNTANTS = ("rdp", "prv")
#: Opacus' stabiliser in the clipping factor ``min(1, C / (‖g‖ + 1e-6))``.
CLIP_STABILISER = 1e-6
#: The most samples of every model whose per-sample gradients :func:`vmap_clipped_sum` forms at once for graph
#: inputs (fewer when the memory budget holds fewer). Measured on 2 CPU cores, 16 MPNNs (hidden 64) on B3DB
#: batches of 64, molecules sorted by size: a step took 0.48 s in chunks of 4, 0.43 s of 8, 0.69 s of 16 and
#: 1.85 s of 64 (larger per-sample tensors fall out of the caches, and a chunk's padding grows with its largest
#: molecule).
PER_SAMPLE_CHUNK = 8



# --- privacy accounting ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivacyPlan:
    """The accounted quantities of one private training: every model runs ``steps`` steps of noise multiplier
    ``noise_multiplier`` at sampling rate ``sample_rate``, which spends ``epsilon`` at ``delta``."""

    sample_rate: float
    steps_per_epoch: int
    steps: int
    noise_multiplier: float
    epsilon: float
    delta: float

    def info(self) -> dict[str, float]:
        """The store columns of the plan."""
        return {"epsilon": self.epsilon, "delta": self.delta, "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate, "steps": float(self.steps)}


@functools.lru_cache(maxsize=256)
def accountant_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str) -> float:
    """ε spent at ``delta`` by ``steps`` subsampled Gaussian steps ``(σ, q)``, by Opacus' ``accountant``.

    Without noise (σ = 0) nothing is private: ε = ∞. Results are memoised: cells of a grid on the same data
    and seed share ``(σ, q, T)``, and an accountant call takes up to a second.
    """
    if noise_multiplier == 0:
        return math.inf
    from opacus.accountants import create_accountant  # imported here: Opacus costs a second to import

    acc = create_accountant(mechanism=accountant)
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=256)
def noise_for_epsilon(epsilon: float, sample_rate: float, steps: int, delta: float, accountant: str) -> float:
    """The smallest σ (to Opacus' search tolerance of 0.01 in ε) whose ε after ``steps`` steps is ≤ ``epsilon``
    (memoised: Opacus' bisection costs seconds to tens of seconds at small σ)."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                          steps=steps, accountant=accountant))
    except ValueError as exc:
        raise BenchError(f"defense 'dpsgd': ε={epsilon} at δ={delta} is out of reach in {steps} steps at sampling "
                         f"rate {sample_rate:.4g} ({exc}); raise epsilon or lower the epochs") from None


def plan_privacy(
    keep: np.ndarray, batch_size: int, epochs: int, *, epsilon: float | None, noise_multiplier: float,
    delta: float, accountant: str, poisson: bool,
) -> PrivacyPlan:
    """σ, q and the number of steps shared by every model of the ensemble, and the ε they spend.

    All models use one sampling rate :math:`q = \\min(1, b / \\max_m n_m)` for batch size ``b`` — the smallest of
    the models' own rates ``b / n_m`` — and the same number of steps, so one accountant history ``(σ, q, T)``
    describes every model: the target and its references get the same guarantee (ε is the same for all M,
    hence also the largest among them), and no model's expected batch ``q n_m`` exceeds ``b``. The models'
    sizes differ by a few percent (each record is a member of about half of them), so their own rates would
    barely change σ.

    Poisson sampling runs ``round(1/q)`` steps per epoch; shuffled fixed-size batches run the harness's
    ``ceil(max_m n_m / b)``.
    """
    n_max = int(keep.sum(axis=1).max())
    if keep.sum(axis=1).min() == 0:
        raise ValueError("a model of the ensemble has no training points; use a larger dataset or fewer models")
    q = min(1.0, batch_size / n_max)
    per_epoch = max(1, round(1 / q)) if poisson else math.ceil(n_max / batch_size)
    steps = epochs * per_epoch
    if epsilon is not None:
        noise_multiplier = noise_for_epsilon(epsilon, q, steps, delta, accountant)
    reached = accountant_epsilon(noise_multiplier, q, steps, delta, accountant)
    return PrivacyPlan(q, per_epoch, steps, noise_multiplier, reached, delta)


# --- minibatches -----------------------------------------------------------------------------------------------


def poisson_batch(members: list[np.ndarray], rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One Poisson-sampled minibatch per model, padded to a common length.

    Each member of model ``m`` enters its batch independently with probability ``rate``. Returns indices
    ``[M, L]`` into the pool and weights ``[M, L]`` (1 for a sampled record, 0 for padding), ``L`` the largest
    batch (at least 1, so that a step with empty batches still adds its noise).
    """
    chosen = [row[rng.random(len(row)) < rate] for row in members]
    length = max(1, max(len(c) for c in chosen))
    index = np.stack([np.concatenate([c, np.full(length - len(c), row[0])]) for c, row in zip(chosen, members,
                                                                                               strict=True)])
    weight = (np.arange(length) < np.array([len(c) for c in chosen])[:, None]).astype(np.float32)
    return index, weight


def epoch_batches(
    keep: np.ndarray, plan: PrivacyPlan, batch_size: int, poisson: bool, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The ``(index [M, L], weight [M, L])`` minibatches of one epoch: Poisson-sampled at the plan's rate, or the
    harness's shuffled fixed-size batches (:func:`targets.ensemble.minibatch_indices`) with unit weights."""
    if poisson:
        members = [np.flatnonzero(row) for row in keep]
        for _ in range(plan.steps_per_epoch):
            yield poisson_batch(members, plan.sample_rate, rng)
    else:
        for index in minibatch_indices(keep, batch_size, rng):
            yield index, np.ones(index.shape, dtype=np.float32)


# --- clipped per-sample gradients ------------------------------------------------------------------------------


def per_sample_losses(loss: LossFn, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's loss ``[M, B]`` from a defense's mean-per-model loss hook (``[M, B, C], [M, B] → [M]``),
    by presenting every sample as a model with a batch of one."""
    M, B = labels.shape[:2]
    return loss(outputs.reshape(M * B, 1, *outputs.shape[2:]), labels.reshape(M * B, 1)).view(M, B)


def clip_factors(squared_norms: torch.Tensor, weights: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """:math:`w_i \\min(1, C / (\\lVert g_i\\rVert + 10^{-6}))` for squared per-sample norms ``[M, B]``."""
    return weights * (max_grad_norm / (squared_norms.sqrt() + CLIP_STABILISER)).clamp(max=1.0)


def vmap_clipped_sum(
    ensemble: Ensemble, X: Inputs, y: torch.Tensor, weights: torch.Tensor, loss: LossFn, max_grad_norm: float,
    chunk: int | None = None,
) -> tuple[Grads, torch.Tensor]:
    """Reference clipped sum :math:`\\sum_i w_i c_i g_{m,i}` ``{name: [M, *shape]}`` for any architecture, and the
    per-sample losses ``[M, B]``.

    ``X[M, B, ...]`` and ``y[M, B]`` are each model's batch, ``weights[M, B]`` 1 for a record and 0 for padding.
    The per-sample gradients ``[M, b, *shape]`` of ``chunk`` samples at a time (default: as many as the memory
    budget holds, :func:`targets.ensemble.records_within`, and for graphs at most :data:`PER_SAMPLE_CHUNK`) are
    formed in full by ``vmap`` (models) ∘ ``vmap`` (samples) ∘ ``grad``; their global norm (all parameters
    together) sets the clip factor, and the chunks' clipped sums are added in order. For a template with
    ``collate`` (graphs) every model's samples are taken smallest molecule first, and each chunk's records are cut
    to the padding they need (``targets.graphs.trim``), which changes no number a record gives; the losses come
    back in the batch's order.
    """

    def sample_loss(params: Grads, buffers: Grads, x: Inputs, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        unsqueezed = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), x)
        out = torch.func.functional_call(ensemble.template, (params, buffers), (unsqueezed,))
        value = loss(out[None], label.reshape(1, 1))[0]
        return value, value.detach()

    per_sample = torch.func.vmap(torch.func.grad(sample_loss, has_aux=True), in_dims=(None, None, 0, 0),
                                 randomness="different")
    per_model = torch.func.vmap(per_sample, randomness="different")
    ensemble.template.train()
    params = {k: v.detach() for k, v in ensemble.params.items()}
    B = y.shape[1]
    graphs = hasattr(ensemble.template, "collate")
    order = None
    if graphs:  # every model's batch smallest molecule first, so that a chunk's molecules need little padding
        from targets.graphs import trim

        order = torch.argsort(X["mask"].sum(-1), dim=1, stable=True)
        X = take(X, (torch.arange(len(order))[:, None], order))
        y, weights = y.gather(1, order), weights.gather(1, order)
    if chunk is None:
        chunk = records_within(ensemble, take(X, (slice(None), slice(-1, None))), memory_budget(ensemble.device),
                               per_sample_gradients=True)
        chunk = min(PER_SAMPLE_CHUNK, chunk) if graphs else chunk
    summed: Grads = {}
    losses = []
    for start in range(0, B, chunk):
        part = (slice(None), slice(start, start + chunk))
        x = trim(take(X, part)) if graphs else take(X, part)
        grads, chunk_losses = per_model(params, ensemble.buffers, x, y[part])
        squared = sum(g.flatten(2).pow(2).sum(-1) for g in grads.values())
        factors = clip_factors(squared, weights[part], max_grad_norm)
        for k, g in grads.items():
            clipped = torch.einsum("mb,mb...->m...", factors, g)
            summed[k] = clipped if k not in summed else summed[k] + clipped
        losses.append(chunk_losses)
    losses = torch.cat(losses, 1)
    return summed, losses if order is None else losses.scatter(1, order, losses)


def book_keeping_clipped_sum(
    ensemble: Ensemble, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, loss: LossFn, max_grad_norm: float
) -> tuple[Grads, torch.Tensor]:
    """The clipped sum of :func:`vmap_clipped_sum` for a chain of linear layers, without per-sample gradients.

    One forward pass keeps each linear layer's input :math:`A_l` ``[M, B, in]``; one backward pass gives
    :math:`G_l = \\partial(\\sum_i \\ell_i)/\\partial Z_l` ``[M, B, out]``, whose row ``i`` is sample ``i``'s own
    :math:`\\partial\\ell_i/\\partial z_{l,i}` (a sample's loss reaches layer ``l`` only through its own row).
    Sample ``i``'s squared gradient norm is :math:`\\sum_l \\lVert G_{l,i}\\rVert^2 (\\lVert A_{l,i}\\rVert^2 +
    [\\text{bias}])`, and with clip factors :math:`c_i = w_i \\min(1, C/(\\lVert g_i\\rVert + 10^{-6}))` the clipped
    sums are :math:`(c \\odot G_l)^\\top A_l` (weight) and :math:`\\sum_i c_i G_{l,i}` (bias). Dropout masks are
    drawn per model and sample, as in training. Cost: about one forward and one backward pass.
    """
    inputs, outputs, layers = [], [], []

    def linear(name: str, h: torch.Tensor) -> torch.Tensor:
        weight, bias = ensemble.params[f"{name}.weight"], ensemble.params.get(f"{name}.bias")
        z = torch.bmm(h, weight.transpose(1, 2)) if bias is None else torch.baddbmm(
            bias.unsqueeze(1), h, weight.transpose(1, 2))
        inputs.append(h.detach())
        outputs.append(z)
        layers.append(name)
        return z

    ensemble.template.train()
    losses = per_sample_losses(loss, run_linear_chain(ensemble.template, X, linear), y)
    out_grads = torch.autograd.grad(losses.sum(), outputs)
    squared = sum(g.pow(2).sum(-1) * (a.pow(2).sum(-1) + (f"{n}.bias" in ensemble.params))
                  for n, a, g in zip(layers, inputs, out_grads, strict=True))
    factors = clip_factors(squared, weights, max_grad_norm).unsqueeze(-1)
    summed: Grads = {}
    for name, a, g in zip(layers, inputs, out_grads, strict=True):
        scaled = factors * g
        summed[f"{name}.weight"] = torch.bmm(scaled.transpose(1, 2), a)
        if f"{name}.bias" in ensemble.params:
            summed[f"{name}.bias"] = scaled.sum(1)
    return summed, losses.detach()


def draw_noise(like: Grads, std: float, generator: torch.Generator | None) -> Grads:
    """Gaussian noise ``N(0, std²)`` shaped like each tensor of ``like``, drawn in its order with ``torch.normal``
    (as Opacus' ``DPOptimizer`` draws it, so one model alone gets Opacus' very numbers from the same generator)."""
    if std == 0:  # Opacus draws nothing then either
        return {k: torch.zeros_like(v) for k, v in like.items()}
    return {k: torch.normal(0.0, std, size=v.shape, generator=generator, device=v.device, dtype=v.dtype)
            for k, v in like.items()}


def private_gradients(
    ensemble: Ensemble, X: Inputs, y: torch.Tensor, weights: torch.Tensor, loss: LossFn, *, max_grad_norm: float,
    noise_multiplier: float, expected_batch_size: torch.Tensor, generator: torch.Generator | None = None,
    noise: Grads | None = None, method: str = "auto", per_model: bool = False,
) -> tuple[Grads, torch.Tensor]:
    """The DP-SGD gradient :math:`\\tilde g_m` of every model (see the module docstring) and the per-sample
    losses ``[M, B]``.

    Parameters
    ----------
    X, y, weights
        Each model's padded batch ``[M, B, ...]``, labels ``[M, B]`` and weights ``[M, B]`` (1 for a sampled
        record, 0 for padding).
    expected_batch_size
        The divisor per model ``[M]``: :math:`q\\,n_m` for Poisson sampling, the batch size otherwise.
    generator, noise
        The noise :math:`\\mathcal N(0, \\sigma^2C^2)` is ``noise`` (``{name: [M, *shape]}``) if given, else drawn
        from ``generator`` by :func:`draw_noise`.
    method
        ``"vmap"`` (:func:`vmap_clipped_sum`), ``"book_keeping"`` (:func:`book_keeping_clipped_sum`) or
        ``"auto"``: book-keeping wherever :func:`is_linear_chain` allows it.
    per_model
        Compute each model's clipped sum on its own (the loop engine); the noise is drawn for all models at once
        either way.
    """
    if method == "auto":
        method = "book_keeping" if is_linear_chain(ensemble.template, record_shape(X, 2)) else "vmap"
    clipped_sum = book_keeping_clipped_sum if method == "book_keeping" else vmap_clipped_sum
    if per_model:
        parts = [clipped_sum(ensemble.select(m), take(X, slice(m, m + 1)), y[m : m + 1], weights[m : m + 1], loss,
                             max_grad_norm) for m in range(ensemble.n_models)]
        summed = {k: torch.cat([part[0][k] for part in parts]) for k in parts[0][0]}
        losses = torch.cat([part[1] for part in parts])
    else:
        summed, losses = clipped_sum(ensemble, X, y, weights, loss, max_grad_norm)
    if noise is None:
        noise = draw_noise(summed, noise_multiplier * max_grad_norm, generator)
    scale = expected_batch_size.to(weights.dtype)
    for k, s in summed.items():  # fresh tensors: update in place
        s.add_(noise[k]).div_(scale.view(-1, *[1] * (s.dim() - 1)))
    return summed, losses


# --- the defense -----------------------------------------------------------------------------------------------


def dpsgd_problem(params: dict[str, Any], *, task: str | None, n_classes: int | None) -> str | None:
    """Grid-load check (the ``check`` tag): the PRV accountant cannot represent a run without noise."""
    if params.get("epsilon") is None and params["noise_multiplier"] == 0 and params["accountant"] == "prv":
        return ("noise_multiplier=0 adds no noise (ε = ∞), which the PRV accountant cannot represent; use "
                "accountant: rdp for a clipping-only run, or a positive noise_multiplier or epsilon")
    return None


@DEFENSES.register(
    "dpsgd",
    description="DP-SGD (Abadi et al. 2016): per-sample gradients clipped to max_grad_norm, Gaussian noise of "
    "std noise_multiplier × max_grad_norm, Poisson sampling; ε from Opacus' accountant (store column `epsilon`).",
    params=[
        Param("epsilon", float, None, "target ε (σ is searched with Opacus' get_noise_multiplier); null: use "
              "noise_multiplier. When set, it wins over noise_multiplier", low=0.0, low_inclusive=False),
        Param("noise_multiplier", float, 1.0, "σ: noise std / max_grad_norm (used when epsilon is null)", low=0.0,
              high=1e6),
        Param("delta", float, 1e-5, "δ of the (ε, δ) guarantee", low=0.0, high=1.0, low_inclusive=False,
              high_inclusive=False),
        Param("max_grad_norm", float, 1.0, "C: each sample's whole gradient is clipped to this L2 norm", low=0.0,
              low_inclusive=False),
        Param("accountant", str, "rdp", "Opacus accountant for ε: Rényi DP or privacy random variables",
              choices=ACCOUNTANTS),
        Param("poisson", bool, True, "Poisson sampling at rate batch_size / n (false: shuffled fixed-size batches, "
              "for which the accountant's ε is not a proof)"),
    ],
    tasks=("classification", "regression"),
    check=dpsgd_problem,
)
class DPSGD(Defense):
    """DP-SGD on every model of the ensemble at once.

    ``epsilon`` and ``noise_multiplier`` are two ways to set σ: with ``epsilon`` given, σ is the smallest (to
    0.01 in ε) that spends at most ``epsilon`` at ``delta`` over the run and ``noise_multiplier`` is ignored
    ("epsilon wins"); otherwise σ = ``noise_multiplier`` and ε is what it spends. Either way the store reports
    the ε reached (``epsilon``), ``delta``, ``noise_multiplier`` (σ used), ``sample_rate`` and ``steps``.

    With ``poisson: false`` the models train on the harness's shuffled fixed-size batches, each record once per
    epoch (a model with fewer members than the largest repeats a few). The accountant's ε assumes Poisson
    sampling at ``q = batch_size / n``: for shuffled batches it is the customary approximation, not a proof.

    Per-sample gradients need a model without cross-sample layers (no BatchNorm: none of the registered
    architectures has one). The loss is the defense's :meth:`loss` hook, applied to one sample at a time.
    """

    def plan(self, keep: np.ndarray, batch_size: int, epochs: int) -> PrivacyPlan:
        """σ, q, steps and ε of a run with these members, batch size and epochs."""
        p = self.params
        return plan_privacy(keep, batch_size, epochs, epsilon=p.get("epsilon"), noise_multiplier=p["noise_multiplier"],
                            delta=p["delta"], accountant=p["accountant"], poisson=p["poisson"])

    def hooks(self) -> TrainingHooks:
        return DPSGDHooks(self)


class DPSGDHooks(TrainingHooks):
    """The training loop's hooks for :class:`DPSGD`: the plan's batches (Poisson-sampled, or the harness's
    shuffled ones with unit weights) and the private gradient of every step in place of the backward pass.

    With an engine that does not stack the models (``loop``), each model's clipped sum is computed on its own;
    the batches and the noise are the stacked engine's, so both engines run the same algorithm on the same draws.
    """

    def __init__(self, defense: DPSGD) -> None:
        super().__init__(defense.loss)
        self.params = defense.params
        self.defense = defense

    def start(self, run: TrainingRun) -> None:
        p, settings = self.params, run.settings
        self.plan = self.defense.plan(run.keep, settings.batch_size, settings.epochs)
        self.rng = np.random.default_rng(derive_seed(run.seed, "dp_batches"))
        self.generator = torch.Generator(device=run.device).manual_seed(derive_seed(run.seed, "dp_noise"))
        self.dtype = next(iter(run.ensemble.params.values())).dtype
        sizes = torch.as_tensor(run.keep.sum(axis=1), dtype=self.dtype, device=run.device)
        self.expected = self.plan.sample_rate * sizes if p["poisson"] else torch.full_like(sizes, settings.batch_size)
        self.method = "book_keeping" if is_linear_chain(run.ensemble.template, record_shape(run.X, 1)) else "vmap"

    def batches(self, run: TrainingRun) -> Iterator[Batch]:
        for index, weight in epoch_batches(run.keep, self.plan, run.settings.batch_size, self.params["poisson"],
                                           self.rng):
            yield Batch(torch.from_numpy(index).to(run.device),
                        torch.from_numpy(weight).to(device=run.device, dtype=self.dtype))

    def gradients(self, run: TrainingRun, batch: Batch) -> tuple[Grads, torch.Tensor]:
        grads, losses = private_gradients(
            run.ensemble, take(run.X, batch.index), run.y[batch.index], batch.weight, self.loss,
            max_grad_norm=self.params["max_grad_norm"], noise_multiplier=self.plan.noise_multiplier,
            expected_batch_size=self.expected, generator=self.generator, method=self.method,
            per_model=not run.engine.stacked,
        )
        w = batch.weight
        return grads, (losses * w).sum(1) / w.sum(1).clamp(min=1)

    def finish(self, run: TrainingRun) -> dict[str, float]:
        return self.plan.info()
