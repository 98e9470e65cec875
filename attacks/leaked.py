"""The leaked-samples attacker: it knows the target's membership of some records and learns from the target itself.

Where reference models cannot reproduce the target (an unknown training recipe, a private data source, a signal of
the target's own), an attacker who holds some of the target's training records and some records it knows were left
out can train its membership classifier on the *target's* outputs (or white-box features) on them, and apply it to
the rest. Gupta, Stripelis et al. (MIDL 2021) study this threat for neuroimaging models, with the black-box outputs
and the white-box gradient features of Nasr et al. (IEEE S&P 2019). The harness draws the leaked records
(``fraction`` of the target's members and of its non-members, with ``seed``) and scores the attack on the others.
"""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData
from attacks.classifier import check_finite, member_probabilities
from attacks.nn import attack_features
from attacks.requirements import LeakedMembership, Release, WhiteBoxFeatures
from attacks.white_box import require_white_box, white_box_rows
from privkernel.registry import ATTACKS, Param


def leaked_rows(data: AttackData) -> tuple[np.ndarray, np.ndarray]:
    """The leaked record indices ``[L]`` and their membership in the target ``[L]`` (bool), checked.

    Raises
    ------
    ValueError
        If nothing was leaked, the two arrays disagree, an index is outside the pool, or the leaked records are all
        members or all non-members.
    """
    if data.leaked_index is None or data.leaked_membership is None:
        raise ValueError(
            "attack 'leaked' needs the target's membership of some records (AttackData.leaked_index and "
            "leaked_membership); the harness draws them for attacks that require LeakedMembership — run it through "
            "the grid, or pass them when building AttackData"
        )
    index = np.asarray(data.leaked_index)
    membership = np.asarray(data.leaked_membership)
    n = len(data.labels)
    if index.ndim != 1 or membership.shape != index.shape:
        raise ValueError(f"attack 'leaked': leaked_index {index.shape} and leaked_membership {membership.shape} "
                         "must be two arrays of the same length [L]")
    if not np.issubdtype(index.dtype, np.integer) or (index.size and (index.min() < 0 or index.max() >= n)):
        raise ValueError(f"attack 'leaked': leaked_index must hold record indices in [0, {n}); got {index.dtype} "
                         f"values from {index.min() if index.size else None} to {index.max() if index.size else None}")
    membership = membership.astype(bool)
    if membership.all() or not membership.any():
        raise ValueError(
            f"attack 'leaked': the {len(index)} leaked records are all "
            f"{'members' if membership.any() else 'non-members'} of the target; the attacker needs both to learn "
            "from — raise its parameter fraction or use a pool with both members and non-members"
        )
    return index, membership


@ATTACKS.register(
    "leaked",
    description="Leaked-samples attacker: an MLP classifier trained on the target's own outputs (or white-box "
    "features) on records whose membership leaked, scoring the others; needs no reference model (Gupta et al. "
    "2021; Nasr et al. 2019).",
    params=[
        Param("fraction", float, 0.5, "fraction of the target's members and of its non-members whose membership "
              "the attacker knows (the harness draws them; scored on the others)", low=0.0, high=1.0,
              low_inclusive=False, high_inclusive=False),
        Param("features", str, "outputs", "what the classifier reads: the released outputs (sorted top-k "
              "probabilities and label; regression: prediction, label, residual) or the white-box features",
              choices=("outputs", "white_box")),
        Param("top_k", int, 3, "features=outputs: number of largest probabilities used (clipped to the classes)",
              low=1),
        Param("hidden", int, 64, "width of the attack MLP's hidden layer", low=1, high=4096),
        Param("max_iter", int, 1000, "maximum training epochs of the attack MLP (Adam; few leaked records make an "
              "epoch one or a few steps, hence more epochs than nn's)", low=1, high=10000),
        Param("seed", int, 0, "seed of the leaked records' draw and of the MLP's initialisation and shuffling",
              low=0),
    ],
    knowledge="leaked",
    tasks=("classification", "regression"),
    requires=lambda p: (
        LeakedMembership(fraction=p["fraction"], seed=p["seed"]),
        WhiteBoxFeatures() if p["features"] == "white_box" else Release("probabilities"),
    ),
    access=lambda p: "white-box" if p["features"] == "white_box" else "black-box",
)
def leaked_attack(
    data: AttackData,
    features: str = "outputs",
    top_k: int = 3,
    hidden: int = 64,
    max_iter: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Score = the member probability of a classifier trained on the target's own leaked records.

    The rows are the target's features on every pool point — ``features="outputs"``:
    :func:`attacks.nn.attack_features` of its released outputs; ``features="white_box"``:
    :func:`attacks.white_box.white_box_rows` of its white-box features — and the classifier
    (:func:`attacks.classifier.member_probabilities`: standardised features, one ReLU hidden layer, Adam, seeded)
    is fitted to the rows of ``leaked_index`` labelled ``leaked_membership``, then scores every point (the harness
    evaluates only the points that did not leak). The parameter ``fraction`` selects the leak the harness draws
    (:class:`LeakedMembership`); the attack does not read it. No reference model is read.

    Raises
    ------
    ValueError
        Without leaked records, if they are all members or all non-members (:func:`leaked_rows`), or with
        ``features="white_box"`` and no white-box features.
    """
    index, membership = leaked_rows(data)
    if features == "white_box":
        require_white_box(data, "leaked", references=False)
        check_finite(data.target_white_box, "leaked", data.white_box_names)
        n_classes = data.target.shape[-1] if data.task == "classification" else None
        rows = white_box_rows(data.target_white_box, data.labels, data.task, n_classes)
    else:
        rows = attack_features(data.target, data.labels, top_k, data.task)
        check_finite(rows, "leaked")
    return member_probabilities(
        rows[index], membership, rows, hidden=hidden, max_iter=max_iter, max_train=None, seed=seed, attack="leaked"
    )
