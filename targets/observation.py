"""What an attacker observes of the M trained models: releases, label-only queries, white-box features, rounds.

* :func:`release` — every model's outputs on the audited and the test records, shaped by the defense's release
  (MemGuard, top-k, rounding, label only): what a black-box attacker sees.
* :func:`round_releases` — the same for the snapshot models of a federated training (the global model, or every
  site's local model, after each round): what an insider sees.
* :func:`perturbed_label_queries` — label-only queries: how often each model still labels a record correctly under
  Gaussian input noise.
* :func:`targets.white_box.white_box_features` — loss, gradient and activation norms: what a holder of the weights
  computes.

None of them knows which attack will read it, nor which defense shapes the release: the release is anything with a
``release`` method (:class:`Releaser`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from privkernel.errors import BenchError
from privkernel.lazy import lazy_import
from targets.ensemble import Ensemble, Inputs, n_records, take
from targets.federated import GLOBAL_SNAPSHOT, SITE_SNAPSHOT

if TYPE_CHECKING:
    from torch import nn

torch = lazy_import("torch")

#: The snapshot views of a federated training and the prefix of their tensors in a training log's snapshots.
ROUND_VIEWS: dict[str, str] = {"global": GLOBAL_SNAPSHOT, "site": SITE_SNAPSHOT}


class Releaser(Protocol):
    """What shapes a release: a defense, or anything else with its ``release`` method."""

    def release(self, outputs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What is released of ``outputs`` ``[M, N, C]`` (log-probabilities, or regression predictions)."""
        ...


def model_outputs(ensemble: Ensemble, X: Inputs, task: str, chunk: int = 4096) -> np.ndarray:
    """Every model's outputs on every record ``[M, N, C]`` as float32: log-probabilities (log-softmax computed in
    float64) for classification, the predictions for regression. Computed ``chunk`` records at a time (the batches
    of :meth:`targets.ensemble.Ensemble.predict`), so that the float64 work is one chunk's and not ``[M, N, C]``."""
    n = n_records(X)
    out: np.ndarray | None = None
    for start in range(0, n, chunk):
        part = ensemble.predict(take(X, slice(start, start + chunk)), batch_size=chunk).double()
        if task == "classification":
            part = torch.log_softmax(part, dim=-1)
        if out is None:
            out = np.empty((part.shape[0], n, *part.shape[2:]), dtype=np.float32)
        out[:, start:start + chunk] = part.float().cpu().numpy()
    return out


def release(
    ensemble: Ensemble, X: Inputs, parts: tuple[np.ndarray, np.ndarray], task: str, releaser: Releaser,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """What ``releaser`` releases of the models' outputs on two sets of records (the audited pool and the test set).

    Parameters
    ----------
    ensemble
        The ``M`` models.
    X
        Inputs of every record of the dataset.
    parts
        Record indices of the two parts, released one after the other with ``rng``.
    task
        ``"classification"`` or ``"regression"`` (see :func:`model_outputs`).
    releaser
        Shapes each part's release.
    rng
        Randomness of the release (drawn from in order: the first part, then the second).
    """
    outputs = model_outputs(ensemble, X, task)
    first, second = parts
    return releaser.release(outputs[:, first], rng), releaser.release(outputs[:, second], rng)


def round_releases(
    snapshots: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    factory: Callable[[], nn.Module],
    view: Literal["global", "site"],
    release_models: Callable[[Ensemble], tuple[np.ndarray, np.ndarray]],
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """The releases of the snapshot models of ``view`` after every round, for both parts of :func:`release`.

    Parameters
    ----------
    snapshots
        A federated training log's snapshots (:func:`targets.federated.FederatedEngine`): ``round.global.<param>``
        ``[T, M, ...]`` and ``round.site.<param>`` ``[T, M, K, ...]``.
    buffers
        The final models' buffers ``buffer.<name>`` ``[M, ...]`` (shared by every round's models).
    factory
        Builds one model of the architecture.
    view
        ``"global"`` (the global model after each round) or ``"site"`` (every site's local model after each round).
    release_models
        What is released of an ensemble's models, both parts (e.g. :func:`release` with the cell's records,
        defense and random generator, called once per round in round order).
    device
        Where the snapshot models are rebuilt.

    Returns
    -------
    pool, test
        ``[T, M, N, C]`` for the global view, ``[T, M, K, N, C]`` for the sites'; ``(None, None)`` when the log has
        no snapshots of ``view`` (training that is not federated).
    """
    prefix = ROUND_VIEWS[view]
    snaps = {k[len(prefix):]: v for k, v in snapshots.items() if k.startswith(prefix)}
    if not snaps:
        return None, None
    lead = 2 if view == "site" else 1
    first = next(iter(snaps.values()))
    models_shape = first.shape[1:1 + lead]  # (M,) or (M, K)
    repeat = models_shape[1] if view == "site" else 1
    repeated = {k: v.repeat_interleave(repeat, 0) for k, v in buffers.items()}
    firsts, seconds = [], []
    for t in range(len(first)):
        state = {**repeated, **{f"param.{k}": v[t].flatten(0, lead - 1) for k, v in snaps.items()}}
        a, b = release_models(Ensemble.from_state(factory, state, device))
        firsts.append(a.reshape(*models_shape, *a.shape[1:]))
        seconds.append(b.reshape(*models_shape, *b.shape[1:]))
    return np.stack(firsts), np.stack(seconds)


def perturbed_label_queries(
    ensemble: Ensemble, X: torch.Tensor, y: torch.Tensor, noise: float, queries: int, seed: int
) -> np.ndarray:
    """Label-only queries (Choquette-Choo et al. 2021): for each model and record, the fraction of ``queries``
    copies of the record perturbed by Gaussian noise of standard deviation ``noise`` (in feature units) that the
    model labels correctly ``[M, N]``.

    The noise is drawn from a torch generator seeded with ``seed`` on the inputs' device; every model sees the same
    perturbed copies.

    Raises
    ------
    BenchError
        For dict-shaped inputs (graphs), which Gaussian noise cannot perturb.
    """
    if isinstance(X, dict):
        raise BenchError("label-only robustness queries need vector, image or volume inputs, not graphs")
    device = X.device
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = torch.zeros(ensemble.n_models, n_records(X), device=device)
    for _ in range(queries):
        perturbed = X + noise * torch.randn(X.shape, generator=generator, device=device)
        correct += (ensemble.predict(perturbed).argmax(-1) == y).float()
    return (correct / queries).cpu().numpy()
