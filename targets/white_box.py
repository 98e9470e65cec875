"""White-box observation: per-record features computed from each model's parameters (Nasr et al. 2019; Gupta et al.
2021).

For every model ``m`` of an ensemble and every record ``i`` of the pool, with ``ℓ_{m,i}`` the record's loss under
model ``m`` in evaluation mode (dropout off):

* ``loss`` — ``ℓ_{m,i}``: cross-entropy for integer labels, ``(output[..., 0] − y)²`` for float labels (regression);
* ``grad_norm.<group>`` — the L2 norm of ``∂ℓ_{m,i}/∂θ`` over the parameters of one *group*: the parameters of one
  parameterised leaf module (``grad_norm.1`` for the ``nn.Linear`` at index 1 of an ``nn.Sequential``,
  ``grad_norm.head.0``), or one parameter on its own where it is registered directly on a container
  (``nn.ParameterList``: ``grad_norm.message.0``) or on a module with submodules;
* ``grad_norm.total`` — the L2 norm of the whole per-record gradient;
* ``activation_norm.<module>`` — the L2 norm of the output of each activation module (:func:`activation_types`)
  on the record (over every call, if the module runs more than once per forward pass).

Members are fitted better than non-members, so their losses, gradients and often their activations differ: these
are the white-box attack's features. They are computed with ``torch.func``: ``vmap`` over models of ``vmap`` over
records of ``grad``, with forward hooks whose captured outputs are returned from the vmapped function (so nothing
batched escapes the transform), in chunks of records (and, for very large models, of models) so that at most about
``max_elements`` per-sample gradient values exist at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from privkernel.lazy import lazy_import
from targets.ensemble import Ensemble, Inputs, n_records, take

if TYPE_CHECKING:
    from torch import nn

torch = lazy_import("torch")

#: The ``torch.nn`` modules, by class name, whose outputs give ``activation_norm.<module>`` features.
ACTIVATION_NAMES = ("ReLU", "Tanh", "GELU", "LeakyReLU", "ELU", "SiLU", "Sigmoid", "Softplus")


def activation_types() -> tuple[type[nn.Module], ...]:
    """The module classes of :data:`ACTIVATION_NAMES` (looked up on use, so that importing this module does not
    load torch)."""
    return tuple(getattr(torch.nn, name) for name in ACTIVATION_NAMES)


def __getattr__(name: str) -> Any:
    """``ACTIVATION_TYPES``, the tuple of :func:`activation_types`, for the callers that import it by that name."""
    if name == "ACTIVATION_TYPES":
        return activation_types()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parameter_groups(template: nn.Module) -> dict[str, list[str]]:
    """The parameter names of each gradient-norm group, in the order of ``template.named_parameters()``.

    A parameter belongs to the group of its owning module's path when that module is a leaf (no submodules) and not
    a parameter container; otherwise (``nn.ParameterList``/``nn.ParameterDict`` entries, parameters registered
    directly on a module with submodules or on a bare root module) it is a group of its own, named by its full
    parameter name.
    """
    groups: dict[str, list[str]] = {}
    for name, _ in template.named_parameters():
        owner_path, _, _ = name.rpartition(".")
        owner = template.get_submodule(owner_path)
        is_container = isinstance(owner, (torch.nn.ParameterList, torch.nn.ParameterDict))
        has_children = next(owner.children(), None) is not None
        group = name if (not owner_path or is_container or has_children) else owner_path
        groups.setdefault(group, []).append(name)
    return groups


def activation_modules(template: nn.Module) -> dict[str, nn.Module]:
    """The activation modules of ``template`` (:func:`activation_types`) by module path, in module order."""
    types = activation_types()
    return {name: module for name, module in template.named_modules() if isinstance(module, types)}


def feature_names(template: nn.Module) -> tuple[str, ...]:
    """Names of the columns of :func:`white_box_features` for an architecture."""
    return (
        "loss",
        *(f"grad_norm.{group}" for group in parameter_groups(template)),
        "grad_norm.total",
        *(f"activation_norm.{name}" for name in activation_modules(template)),
    )


def record_loss(outputs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The loss of one record from the model's outputs ``[1, C]`` on it: cross-entropy for an integer label,
    squared error of ``outputs[..., 0]`` for a float label (the training loss of :mod:`defenses.base`)."""
    if label.is_floating_point():
        return (outputs[0, 0] - label.to(outputs.dtype)) ** 2
    return torch.nn.functional.cross_entropy(outputs, label.reshape(1).long())


def _chunk_sizes(n_models: int, n_params: int, max_elements: int) -> tuple[int, int]:
    """Models and records per chunk so that ``models × records × n_params ≤ max_elements`` (at least one each)."""
    models = max(1, min(n_models, max_elements // max(n_params, 1)))
    records = max(1, max_elements // (models * max(n_params, 1)))
    return models, records


def white_box_features(
    ensemble: Ensemble, X: Inputs, y: torch.Tensor, *, max_elements: int = 2**26
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Loss, per-group gradient norms and activation norms of every model on every record.

    Parameters
    ----------
    ensemble
        The ``M`` models; they are run in evaluation mode (dropout inactive) and their training flag is restored.
    X
        Inputs of ``N`` records ``[N, ...]`` (a tensor, or a dict of tensors sharing their first dimension), on the
        ensemble's device.
    y
        Labels ``[N]``: integers (classification, cross-entropy) or floats (regression, squared error).
    max_elements
        About how many per-sample gradient values may exist at once: records (and, if one record of every model
        is already more, models) are processed in chunks of that size.

    Returns
    -------
    features, names
        ``float32`` features ``[M, N, F]`` and their ``F`` names (see the module docstring and
        :func:`feature_names`).

    Raises
    ------
    ValueError
        If ``y`` does not have one label per record, or ``max_elements`` is not positive.
    """
    n = n_records(X)
    if y.shape != (n,):
        raise ValueError(f"white_box_features: labels shaped {tuple(y.shape)} for {n} records; pass one label per "
                         "record, shaped [N]")
    if max_elements < 1:
        raise ValueError(f"white_box_features: max_elements={max_elements} must be at least 1")
    template = ensemble.template
    groups = parameter_groups(template)
    activations = activation_modules(template)
    names = feature_names(template)
    n_params = sum(math.prod(v.shape[1:]) for v in ensemble.params.values())
    model_chunk, record_chunk = _chunk_sizes(ensemble.n_models, n_params, max_elements)

    captured: dict[str, list[torch.Tensor]] = {}

    def hook_for(name: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            captured[name].append(output)

        return hook

    def record_features(
        params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: Inputs, label: torch.Tensor
    ) -> torch.Tensor:
        def loss_of(p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            for name in activations:
                captured[name] = []
            unsqueezed = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), x)
            outputs = torch.func.functional_call(template, (p, buffers), (unsqueezed,))
            value = record_loss(outputs, label)
            norms = [
                torch.sqrt(sum(o.detach().pow(2).sum() for o in captured[name])) if captured[name]
                else value.new_zeros(())
                for name in activations
            ]
            stacked = torch.stack(norms) if norms else value.new_zeros(0)
            return value, (value.detach(), stacked)

        grads, (value, activation_norms) = torch.func.grad(loss_of, has_aux=True)(params)
        squares = [sum(grads[k].pow(2).sum() for k in members) for members in groups.values()]
        total = torch.sqrt(sum(squares)) if squares else value.new_zeros(())
        group_norms = torch.stack([torch.sqrt(s) for s in squares]) if squares else value.new_zeros(0)
        return torch.cat([value.reshape(1), group_norms, total.reshape(1), activation_norms])

    per_record = torch.func.vmap(record_features, in_dims=(None, None, 0, 0), randomness="same")
    per_model = torch.func.vmap(per_record, in_dims=(0, 0, None, None), randomness="same")

    handles = [module.register_forward_hook(hook_for(name)) for name, module in activations.items()]
    was_training = template.training
    template.eval()
    out = np.empty((ensemble.n_models, n, len(names)), dtype=np.float32)
    try:
        params = {k: v.detach() for k, v in ensemble.params.items()}
        for m0 in range(0, ensemble.n_models, model_chunk):
            models = slice(m0, m0 + model_chunk)
            p = {k: v[models] for k, v in params.items()}
            b = {k: v[models] for k, v in ensemble.buffers.items()}
            for i0 in range(0, n, record_chunk):
                records = slice(i0, i0 + record_chunk)
                features = per_model(p, b, take(X, records), y[records])
                out[models, records] = features.float().cpu().numpy()
    finally:
        for handle in handles:
            handle.remove()
        captured.clear()
        template.train(was_training)
    return out, names
