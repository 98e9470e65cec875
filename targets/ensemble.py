"""The M models of a cell trained together as one stacked computation.

The M copies of an architecture are stacked parameter by parameter (``torch.func.stack_module_state``) and
run as one computation: one forward and one backward pass per step serve every model, each with its own
initialisation, its own minibatch stream drawn from its own training subset, and its own dropout masks.
A chain of linear layers (``mlp``, ``logreg``) runs each layer as one batched matrix product over the stacked
weights, any other architecture through ``torch.func.vmap`` (:meth:`Ensemble.formulation` says which and why).
Adam and SGD act elementwise, so one optimizer over the stacked tensors is M independent optimizers.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from privkernel.hashing import derive_seed
from privkernel.lazy import lazy_import
from privkernel.memory import memory_budget

if TYPE_CHECKING:
    from torch import nn

torch = lazy_import("torch")


@dataclass
class Ensemble:
    """``n_models`` instances of one architecture with stacked parameters (leading dimension M)."""

    template: nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    #: :meth:`formulation` by record shape, since finding it runs the template on meta tensors (~1 ms).
    _formulations: dict[tuple[int, ...] | None, str] = field(default_factory=dict, init=False, repr=False,
                                                              compare=False)

    @classmethod
    def initialise(
        cls, factory: Callable[[], nn.Module], n_models: int, seed: int, device: str | torch.device = "cpu"
    ) -> Ensemble:
        """Build ``n_models`` models, model ``m`` initialised from ``derive_seed(seed, "init", m)``."""
        models = []
        with torch.random.fork_rng(devices=[]):
            for m in range(n_models):
                torch.manual_seed(derive_seed(seed, "init", m))
                models.append(factory().to(device))
        params, buffers = torch.func.stack_module_state(models)
        template = copy.deepcopy(models[0]).to("meta")
        return cls(template, params, buffers)

    @classmethod
    def from_state(
        cls, factory: Callable[[], nn.Module], state: dict[str, torch.Tensor], device: str | torch.device = "cpu"
    ) -> Ensemble:
        """Rebuild an ensemble from :meth:`state` (as saved in the cache)."""
        template = factory().to("meta")
        names = dict(template.named_parameters())
        params = {k[len("param.") :]: v.to(device) for k, v in state.items() if k.startswith("param.")}
        buffers = {k[len("buffer.") :]: v.to(device) for k, v in state.items() if k.startswith("buffer.")}
        if set(params) != set(names):
            raise ValueError(f"saved parameters {sorted(params)} do not match the architecture's {sorted(names)}")
        return cls(template, params, buffers)

    def select(self, m: int) -> Ensemble:
        """Model ``m`` alone, as an ensemble of one whose tensors are views of this one's."""
        return Ensemble(self.template, {k: v[m : m + 1] for k, v in self.params.items()},
                        {k: v[m : m + 1] for k, v in self.buffers.items()})

    @property
    def device(self) -> str:
        """The device of the stacked parameters, as text (``"cpu"``, ``"cuda:0"``)."""
        return str(next(iter(self.params.values())).device)

    @property
    def n_models(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def state(self) -> dict[str, torch.Tensor]:
        """Stacked parameters and buffers, detached, on the CPU (for ``torch.save``)."""
        out = {f"param.{k}": v.detach().cpu() for k, v in self.params.items()}
        out.update({f"buffer.{k}": v.detach().cpu() for k, v in self.buffers.items()})
        return out

    def formulation(self, X: Inputs, batch_dims: int) -> str:
        """How :meth:`forward` (``batch_dims`` 2: ``X[M, B, ...]``) and :meth:`predict` (1: ``X[N, ...]``)
        compute the models: ``"matmul"`` or ``"vmap"``.

        ``"matmul"`` when the template is a chain of linear layers for these records (:func:`is_linear_chain`:
        ``mlp`` and ``logreg`` on vectors or images): each ``nn.Linear`` is one batched matrix product over the
        stacked weights (:class:`targets._layers.StackedLinear`), and the layers between them (flatten,
        activation, dropout) run under ``vmap(randomness="different")`` on the same tensors as in the vmap
        formulation, so they draw the same dropout masks. ``"vmap"`` otherwise: ``vmap`` of ``functional_call``
        of the template.

        Notes
        -----
        Measured on 2 CPU cores (torch 2.13, 16 models): under ``vmap`` a linear layer's weight gradient comes out
        transposed, ``[M, in, out]`` seen as ``[M, out, in]``, and autograd copies it into the parameter's layout,
        which for a 2048-256-2 MLP costs about as much as the layer's backward matmul (~20 ms a step). The matmul
        formulation computes large weights' gradients in their layout (:class:`targets._layers.StackedLinear`),
        and is no slower for a 30-64-2 MLP (``tests/benchmarks/test_ensemble_training.py``), so vmap is kept for
        what only it can run. Outputs and gradients are vmap's, bit for bit at every shape checked (so are the
        models it trains), but for weights of at least ``LAYOUT_GRADIENT_SIZE`` elements with a dimension from 4 to
        11, where the gradient is the same sum to float rounding.
        """
        shape = record_shape(X, batch_dims)
        if shape not in self._formulations:
            self._formulations[shape] = "matmul" if is_linear_chain(self.template, shape) else "vmap"
        return self._formulations[shape]

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.template, (params, buffers), (x,))

    def _linear(self, name: str, h: torch.Tensor) -> torch.Tensor:
        """Linear layer ``name`` of every model on ``h[M, B, in]`` (or ``[B, in]`` shared) → ``[M, B, out]``."""
        from targets._layers import StackedLinear

        return StackedLinear.apply(h, self.params[f"{name}.weight"], self.params.get(f"{name}.bias"))

    def forward(self, x: Inputs, training: bool = True) -> torch.Tensor:
        """Outputs for per-model inputs ``x[M, B, ...]`` → ``[M, B, outputs]``, with gradients, in training mode
        (each model draws its own dropout masks) or evaluation mode."""
        self.template.train(training)
        if self.formulation(x, 2) == "matmul":
            return run_linear_chain(self.template, x, self._linear)
        return torch.func.vmap(self._call, randomness="different")(self.params, self.buffers, self.collate(x, 2))

    def collate(self, x: Inputs, batch_dims: int) -> Inputs:
        """The inputs as the template's ``collate(x, batch_dims)`` lays them out for a batch (a graph network
        packs its graphs without padding, :func:`targets.graphs.pack`), outside ``vmap``; ``x`` itself when the
        template has no ``collate``."""
        collate = getattr(self.template, "collate", None)
        return x if collate is None else collate(x, batch_dims)

    def predict(self, X: Inputs, batch_size: int = 4096) -> torch.Tensor:
        """Evaluation-mode outputs of every model on shared inputs ``X[N, ...]`` → ``[M, N, outputs]``, without
        gradients, ``batch_size`` records at a time (fewer for a template whose ``activation_elements`` says the
        memory budget holds fewer, :func:`records_within`)."""
        with torch.no_grad():  # a context, not the decorator: ``@torch.no_grad()`` would load torch at import
            self.template.eval()
            if self.formulation(X, 1) == "matmul":
                run = functools.partial(run_linear_chain, self.template, linear=self._linear, per_model=False)
            else:
                run = functools.partial(torch.func.vmap(self._call, in_dims=(0, 0, None), randomness="same"),
                                        self.params, self.buffers)
            if hasattr(self.template, "activation_elements"):  # a template that says what a record costs
                batch_size = min(batch_size, records_within(self, X, memory_budget(self.device)))
            chunks = range(0, n_records(X), batch_size)
            return torch.cat([run(self.collate(take(X, slice(i, i + batch_size)), 1)) for i in chunks], 1)


#: A forward reference (a string), so that importing this module, and the modules whose annotations name it, does not
#: load torch; annotations are never evaluated (``from __future__ import annotations`` everywhere).
Inputs: TypeAlias = "torch.Tensor | dict[str, torch.Tensor]"
"""Model inputs: one tensor, or a dict of tensors sharing their first dimension (e.g. a molecular graph's
``atoms``, ``bonds`` and ``mask``), passed to the module's ``forward`` as it is."""


def records_within(ensemble: Ensemble, X: Inputs, budget: int, *, per_sample_gradients: bool = False) -> int:
    """How many records of ``X`` the ensemble's M models can take in one computation within ``budget`` bytes.

    A record costs, per model, the activations the template estimates for it (``activation_elements(X)``, a
    graph network's per-atom states and messages; otherwise 8 numbers per input number) and, for per-sample
    gradients, a copy of the parameters; three bytes in four of the budget go to them, at the parameters' float
    size.
    """
    estimate = getattr(ensemble.template, "activation_elements", None)
    leaves = torch.utils._pytree.tree_flatten(X)[0]
    per_record = estimate(X) if estimate is not None else 8.0 * sum(t[0].numel() for t in leaves)
    if per_sample_gradients:
        per_record += sum(p[0].numel() for p in ensemble.params.values())
    size = next(iter(ensemble.params.values())).element_size()
    return max(1, int(0.75 * budget / (ensemble.n_models * per_record * size)))


def n_records(X: Inputs) -> int:
    """Number of records (first dimension) of model inputs."""
    return len(torch.utils._pytree.tree_flatten(X)[0][0])


def take(X: Inputs, index: torch.Tensor | slice) -> Inputs:
    """Rows ``index`` of every tensor of the inputs."""
    return torch.utils._pytree.tree_map(lambda t: t[index], X)


def record_shape(X: Inputs, batch_dims: int) -> tuple[int, ...] | None:
    """The shape of one record of tensor inputs with ``batch_dims`` leading batch dimensions; None for dicts."""
    return tuple(X.shape[batch_dims:]) if isinstance(X, torch.Tensor) else None


def is_linear_chain(template: nn.Module, record_shape: tuple[int, ...] | None) -> bool:
    """Whether the template, on records of shape ``record_shape`` (None for dict inputs), is an ``nn.Sequential``
    of ``nn.Linear`` layers that each see one vector per record, and of layers without parameters or buffers
    (activations, dropout, flatten): what :func:`run_linear_chain` runs (and DP-SGD's book-keeping clips)."""
    if not isinstance(template, torch.nn.Sequential) or record_shape is None:
        return False
    h = torch.empty((2, *record_shape), device="meta")
    with torch.no_grad():
        for module in template:
            if isinstance(module, torch.nn.Linear):
                if h.dim() != 2:
                    return False
            elif next(module.parameters(), None) is not None or next(module.buffers(), None) is not None:
                return False
            h = module(h)
    return True


def run_linear_chain(
    template: nn.Module, x: torch.Tensor, linear: Callable[[str, torch.Tensor], torch.Tensor], *,
    per_model: bool = True,
) -> torch.Tensor:
    """Every model's outputs through a chain of linear layers (:func:`is_linear_chain`) → ``[M, B, outputs]``.

    Each ``nn.Linear`` child ``name`` is ``linear(name, h)``, ``[M, B, in] → [M, B, out]``; every other child runs
    under ``vmap(randomness="different")``, once the inputs are per model. ``x`` is per model ``[M, B, ...]``, or,
    with ``per_model`` False, shared by every model ``[B, ...]`` (the layers before the first linear one then run
    on it once, and ``linear`` receives it as ``[B, in]``).
    """
    h = x
    for name, module in template.named_children():
        if isinstance(module, torch.nn.Linear):
            h, per_model = linear(name, h), True
        else:
            h = torch.func.vmap(module, randomness="different")(h) if per_model else module(h)
    return h


def minibatch_indices(keep: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """One epoch of minibatches for every model: ``[steps, M, batch_size]`` indices into the pool.

    Model ``m`` draws a fresh permutation of its own members (``keep[m]``); all models take the same number
    of steps, so a model with fewer members than the largest cycles through its permutation again.
    """
    members = [np.flatnonzero(row) for row in keep]
    if min(len(m) for m in members) == 0:
        raise ValueError("a model of the ensemble has no training points; use a larger dataset or fewer models")
    steps = math.ceil(max(len(m) for m in members) / batch_size)
    batches = np.stack([np.resize(rng.permutation(m), steps * batch_size) for m in members])
    return batches.reshape(len(members), steps, batch_size).transpose(1, 0, 2)
