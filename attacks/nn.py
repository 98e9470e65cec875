"""The neural-network (shadow-model) attack: a classifier trained on the reference models' outputs.

Shokri, R., Stronati, M., Song, C. and Shmatikov, V. "Membership Inference Attacks Against Machine Learning
Models", IEEE S&P 2017, with the single label-aware attack model (sorted top-k probabilities and the one-hot
label as features) of Salem et al. (NDSS 2019) and Nasr et al. (CCS 2018), as evaluated by Song & Mittal
(USENIX Security 2021).
"""

from __future__ import annotations

import numpy as np

from attacks.base import AttackData
from attacks.classifier import member_probabilities
from attacks.requirements import Release, always
from attacks.signals import clean_log_probs
from privkernel.registry import ATTACKS, Param


def attack_features(log_probs: np.ndarray, labels: np.ndarray, top_k: int, task: str = "classification") -> np.ndarray:
    """Features ``[..., N, k + C]``: the ``k`` largest probabilities in decreasing order, then the one-hot label.

    For regression (``log_probs`` holds predictions ``[..., N, 1]``): ``[prediction, label, residual]``
    (Gupta et al. 2021).
    """
    if task == "regression":
        pred = np.asarray(log_probs, dtype=np.float64)[..., 0]
        y = np.broadcast_to(np.asarray(labels, dtype=np.float64), pred.shape)
        return np.stack([pred, y, pred - y], axis=-1)
    probs = np.exp(clean_log_probs(log_probs))
    n_classes = probs.shape[-1]
    top = -np.sort(-probs, axis=-1)[..., : min(top_k, n_classes)]
    one_hot = np.broadcast_to(np.eye(n_classes)[np.asarray(labels)], probs.shape)
    return np.concatenate([top, one_hot], axis=-1)


@ATTACKS.register(
    "nn",
    description="MLP attack classifier trained on the references' sorted top-k probabilities and the label "
    "(regression: prediction, label, residual), labelled by their membership (Shokri et al. 2017; Salem et al. "
    "2019; Gupta et al. 2021).",
    params=[
        Param("top_k", int, 3, "number of largest probabilities used as features (clipped to the classes)",
              low=1),
        Param("hidden", int, 64, "width of the attack MLP's hidden layer", low=1, high=4096),
        Param("max_iter", int, 200, "maximum training epochs of the attack MLP (Adam)", low=1, high=10000),
        Param("max_train", int, 20000, "at most this many reference (model, point) rows to train on", low=2),
        Param("seed", int, 0, "seed of the row subsample and of the MLP's initialisation and shuffling", low=0),
    ],
    requires=always(Release("probabilities")),
    tasks=("classification", "regression"),
)
def nn_attack(
    data: AttackData, top_k: int = 3, hidden: int = 64, max_iter: int = 200, max_train: int = 20000, seed: int = 0
) -> np.ndarray:
    """Score = the attack classifier's member probability for the target's output on each point.

    Every (reference model ``r``, pool point ``x``) pair is a training row with features ``[sort↓(p_r(x))_{1..k},
    onehot(y)]`` and target ``reference_keep[r, x]``; an MLP (one ReLU hidden layer, Adam, scikit-learn) is
    fitted to at most ``max_train`` rows drawn without replacement with ``seed``, and applied to the target's
    features. With shadow models (the classic setting) the rows are theirs, on their own records, instead of the
    references'. Deterministic for a given ``seed``.

    Raises
    ------
    ValueError
        Without references, or if their rows are all IN or all OUT.
    """
    learn = data.labelled_outputs()
    if learn is None or learn.keep.all() or not learn.keep.any():
        raise ValueError(
            "attack 'nn' trains on models of known membership and needs both IN and OUT points among them: give "
            "reference models (grids: protocol.n_models >= 2) or shadow models on their own records (bench audit)"
        )
    X = attack_features(learn.outputs, learn.labels, top_k, data.task)
    return member_probabilities(
        X.reshape(-1, X.shape[-1]), learn.keep.ravel(), attack_features(data.target, data.labels, top_k, data.task),
        hidden=hidden, max_iter=max_iter, max_train=max_train, seed=seed, attack="nn", scale=False,
    )
