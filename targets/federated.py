"""Federated training with FedAvg (McMahan et al. 2017) for the M models of a cell.

Each of the M models is its own federation: its training records (``keep[m]``) are split over ``K`` sites. In
every round each site starts from the current global model and trains ``epochs`` local epochs on its own records
(a fresh optimizer per round, as a FedAvg client does); the server then averages the ``K`` local models into the
next global model, weighting site ``k`` by its share of the records ``n_k / n`` (``weighted``) or equally
(``unweighted``). The released model is the global model after the last round.

The ``M × K`` local trainings of a round run as one stacked ensemble (:func:`targets.training.fit`),
local model ``m·K + k`` on site ``k`` of federation ``m``. Every site runs the same number of local steps per
round, that of the largest site (smaller sites cycle through their records again: FedAvg with a fixed number of
local steps). Round 0 trains with the cell's training seed and later rounds with seeds derived from it, so a
federation of one site trained for one round *is* centralized training, step for step.

The global model after every round and each site's local model after every round are kept as *snapshots*: an
insider (a curious server, or a participant who receives every round's global model) sees them, an outsider only
the final model. A record's membership is whether any site of the federation trained on it.
"""

from __future__ import annotations

import numpy as np

from privkernel.errors import BenchError
from privkernel.hashing import derive_seed
from privkernel.lazy import lazy_import
from privkernel.registry import ENGINES, Param
from targets.ensemble import Ensemble, Inputs
from targets.training import Engine, TrainingHooks, TrainingLog, TrainingSettings, fit

torch = lazy_import("torch")

#: Prefixes of the snapshot tensors in a federated :class:`TrainingLog`: ``[T, M, ...]`` and ``[T, M, K, ...]``.
GLOBAL_SNAPSHOT, SITE_SNAPSHOT = "round.global.", "round.site."


def site_proportions(sites: int, site_sizes: str) -> np.ndarray:
    """Each site's expected share of a federation's records ``[K]``: equal, or proportional to ``1, …, K``."""
    weights = np.ones(sites) if site_sizes == "iid" else np.arange(1, sites + 1, dtype=np.float64)
    return weights / weights.sum()


def site_membership(keep: np.ndarray, sites: int, site_sizes: str, seed: int) -> np.ndarray:
    """Deal each model's training records to its sites: ``site_keep[M, K, N]``, a partition of ``keep[m]``.

    Model ``m``'s members are shuffled (seeded by ``derive_seed(seed, "sites", m)``) and cut into ``K`` runs
    whose sizes follow :func:`site_proportions` (rounded, every site at least one record).

    Raises
    ------
    BenchError
        When a model has fewer training records than the federation has sites.
    """
    keep = np.asarray(keep, dtype=bool)
    smallest = int(keep.sum(1).min())
    share = site_proportions(sites, site_sizes)
    if smallest < sites or np.floor(share.min() * smallest) < 1:
        raise BenchError(
            f"training.sites={sites} ({site_sizes} sizes) leaves a site without records: the smallest training set "
            f"of the cell has {smallest} records; lower training.sites or use a larger dataset"
        )
    out = np.zeros((keep.shape[0], sites, keep.shape[1]), dtype=bool)
    for m, row in enumerate(keep):
        members = np.random.default_rng(derive_seed(seed, "sites", m)).permutation(np.flatnonzero(row))
        bounds = np.round(np.cumsum(share)[:-1] * len(members)).astype(int)
        for k, part in enumerate(np.split(members, bounds)):
            out[m, k, part] = True
    return out


@ENGINES.register(
    "federated",
    description="Each model trained by FedAvg (McMahan et al. 2017) over sites of its own records; the insider "
    "sees every round's global and local models.",
    params=[
        Param("sites", int, 1, "sites (clients) sharing each model's training records", low=1, high=4096),
        Param("rounds", int, 1, "communication rounds, each of `epochs` local epochs per site", low=1, high=100_000),
        Param("aggregation", str, "weighted", "FedAvg weights site models by their number of records ('weighted') "
              "or equally ('unweighted')", choices=("weighted", "unweighted")),
        Param("site_sizes", str, "iid", "records dealt evenly at random to the sites ('iid') or in sizes "
              "proportional to 1, 2, ..., K ('skewed')", choices=("iid", "skewed")),
    ],
)
class FederatedEngine(Engine):
    """FedAvg over ``sites`` sites of each model's records for ``rounds`` rounds (see the module docstring).

    The local trainings of a round are one run of the training loop (:func:`targets.training.fit`) on the
    ``M × K`` stacked local models, with the defense's loss; hooks beyond the loss (a defense that holds records
    out, samples its own batches, transforms gradients or stops early) are refused at grid load: their
    federated forms (e.g. DP-FedAvg with per-site clipping and its accounting) are not implemented.
    """

    name = "federated"
    runs_hooks = frozenset()

    def __init__(self, sites: int = 1, rounds: int = 1, aggregation: str = "weighted", site_sizes: str = "iid") -> None:
        self.sites, self.rounds, self.aggregation, self.site_sizes = sites, rounds, aggregation, site_sizes

    def train(
        self, ensemble: Ensemble, X: Inputs, y: torch.Tensor, keep: np.ndarray, settings: TrainingSettings, *,
        seed: int, hooks: TrainingHooks,
    ) -> TrainingLog:
        """Train each of the ensemble's M models by FedAvg over its sites, in place.

        ``settings.epochs`` are the local epochs per site and round.

        Returns
        -------
        TrainingLog
            ``history[rounds · epochs, M]``: the local training losses averaged over sites with the aggregation
            weights; ``snapshots``: the global parameters after each round (``round.global.<name>``
            ``[T, M, ...]``) and each site's local parameters (``round.site.<name>`` ``[T, M, K, ...]``).
        """
        reason = self.refuses(type(hooks))
        if reason:
            raise ValueError(f"cannot train federated: {reason}")
        sites = self.sites
        n_models, n_records = keep.shape
        site_keep = site_membership(keep, sites, self.site_sizes, seed)
        counts = site_keep.sum(-1).astype(np.float64)
        weights = (counts / counts.sum(1, keepdims=True) if self.aggregation == "weighted"
                   else np.full(counts.shape, 1 / sites))
        device = y.device
        weight_tensor = torch.as_tensor(weights, device=device)
        global_params = {k: v.detach().clone() for k, v in ensemble.params.items()}
        history, global_snaps, site_snaps = [], [], []
        for r in range(self.rounds):
            local = Ensemble(
                ensemble.template,
                {k: v.repeat_interleave(sites, 0).requires_grad_(True) for k, v in global_params.items()},
                {k: v.repeat_interleave(sites, 0) for k, v in ensemble.buffers.items()},
            )
            log = fit(local, X, y, site_keep.reshape(n_models * sites, n_records), settings, hooks=hooks,
                      seed=seed if r == 0 else derive_seed(seed, "round", r))
            history.append((log.history.reshape(settings.epochs, n_models, sites) * weights).sum(-1))
            site_params = {k: v.detach().view(n_models, sites, *v.shape[1:]) for k, v in local.params.items()}
            global_params = {k: _average(v, weight_tensor) for k, v in site_params.items()}
            global_snaps.append({k: v.cpu() for k, v in global_params.items()})
            site_snaps.append({k: v.cpu() for k, v in site_params.items()})
        for k, v in global_params.items():
            ensemble.params[k] = v.requires_grad_(True)
        snapshots = {
            **{f"{GLOBAL_SNAPSHOT}{k}": torch.stack([s[k] for s in global_snaps]) for k in global_params},
            **{f"{SITE_SNAPSHOT}{k}": torch.stack([s[k] for s in site_snaps]) for k in global_params},
        }
        return TrainingLog(np.concatenate(history).astype(np.float32), snapshots=snapshots)


def _average(site_values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """FedAvg of ``[M, K, ...]`` site parameters with weights ``[M, K]`` → ``[M, ...]``."""
    w = weights.to(site_values.dtype).view(*weights.shape, *([1] * (site_values.dim() - 2)))
    return (w * site_values).sum(1)
