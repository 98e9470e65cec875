"""The insider of a federation who sees the model after every round (Gupta et al. 2021; Nasr et al. 2019).

An outsider sees only the final global model. A curious server sees every round's global model and each site's
update; so does a participant for the global model, which it receives every round. Each round's model is one
more look at the same training records: this attack runs a black-box attack (LOSS, LiRA or RMIA) on every
round's outputs, with the references' outputs of the same round, and combines the per-round scores.
"""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData, AttackOutput
from attacks.requirements import Population, Release, RoundSnapshots
from privkernel.registry import ATTACKS, Param

BASES = ("loss", "lira", "rmia")
COMBINE = ("mean", "max", "last")


def combine_rounds(scores: np.ndarray, combine: str) -> np.ndarray:
    """One score per record from per-round scores ``[T, N]``.

    ``mean`` averages the rounds (for LiRA, whose scores are log-likelihood ratios, the mean is the joint test of
    all rounds up to a factor ``1/T``, as if the rounds were independent looks); ``max`` keeps each record's most
    member-like round; ``last`` keeps the final round, the outsider's view.
    """
    if combine == "mean":
        return scores.mean(0)
    if combine == "max":
        return scores.max(0)
    return scores[-1]


@ATTACKS.register(
    "rounds",
    description="Federated insider (curious server or participant): runs `base` (loss, lira or rmia) on the "
    "model after every round — the global model, or one site's local model — and combines the per-round scores.",
    params=[
        Param("base", str, "lira", "black-box attack run on each round", choices=BASES),
        Param("view", str, "global", "the global model after each round (server or participant), or one site's "
              "local model after each round (server)", choices=("global", "site")),
        Param("site", int, 0, "the site whose local models the server watches (view: site)", low=0),
        Param("combine", str, "mean", "how per-round scores become one score", choices=COMBINE),
    ],
    tasks=("classification", "regression"),
    version=2,  # 2: its base RMIA breaks ties (attacks.rmia, version 2)
    requires=lambda p: (
        Release("probabilities"),
        RoundSnapshots(p["view"], p["site"] if p["view"] == "site" else None),
        *((Population(),) if p["base"] == "rmia" else ()),
    ),
    access="insider",
)
def rounds_attack(data: AttackData, base: str = "lira", combine: str = "mean") -> AttackOutput:
    """Score = the combination (:func:`combine_rounds`) of ``base``'s scores on each round's outputs.

    The parameters ``view`` and ``site`` select the models whose outputs the harness puts in
    ``data.target_rounds`` and ``data.reference_rounds`` (:class:`RoundSnapshots`); the attack does not read them.

    Raises
    ------
    ValueError
        Without per-round outputs (a cell that is not federated).
    """
    if data.target_rounds is None or data.reference_rounds is None:
        raise ValueError(
            "attack 'rounds' needs the outputs of every federated round; run it on a cell with training engine "
            "'federated'"
        )
    attack = ATTACKS.get(base).obj
    has_population = data.population_target_rounds is not None
    per_round = []
    for t in range(len(data.target_rounds)):
        view_t = data.with_outputs(  # the signals of the final outputs are not this round's
            target=data.target_rounds[t], references=data.reference_rounds[t],
            population_target=data.population_target_rounds[t] if has_population else None,
            population_references=data.population_reference_rounds[t] if has_population else None,
            population_labels=data.population_labels if has_population else None,
        )
        out = attack(view_t)
        per_round.append(np.asarray(out.scores if isinstance(out, AttackOutput) else out, dtype=np.float64))
    return AttackOutput(combine_rounds(np.stack(per_round), combine), {"rounds_seen": float(len(per_round))})
