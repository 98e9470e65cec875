"""How the M models of a cell are trained: the ``engine`` training setting.

* ``ensemble``: the M models stacked and trained as one vmap-ed computation (:mod:`targets.ensemble`);
* ``loop``: the same algorithm one model after the other (the reference, and the fallback for modules that
  cannot be stacked);
* ``federated``: each model trained by FedAvg over sites of its records (:mod:`targets.federated`).
"""

from __future__ import annotations

from collections.abc import Callable

from targets.ensemble import TrainingLog, train_ensemble, train_loop
from targets.federated import train_federated

ENGINES: dict[str, Callable[..., TrainingLog]] = {
    "ensemble": train_ensemble, "loop": train_loop, "federated": train_federated,
}
