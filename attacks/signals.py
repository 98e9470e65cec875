"""Per-record signals of a released output that several attacks read, each computed accurately.

- :func:`true_class_loss`: the cross-entropy ``−log p_y``, accurate where ``p_y`` rounds to 1;
- :func:`true_class_log_probs`: ``log p_y`` and ``log(1 − p_y)``, both accurate to the release's precision.

An audit of ``M`` models computes the true-class signals of every model once (:func:`model_signals`, chunked over
the models so that no ``[M, N, C]`` float64 copy is made); each attacker's view slices them
(:meth:`attacks.base.AttackData.true_class`), so the attacks, the targets and the calibration audits of a cell share
one computation instead of repeating a log-sum-exp over every reference's outputs on every call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Floor of a released log-probability: log of the smallest positive float32 (≈ −103.3). A release may hold
#: exact zeros (rounding, top-k, label-only defenses); flooring them keeps every signal finite while leaving
#: any probability a float32 softmax can produce unchanged.
LOG_FLOOR = float(np.log(np.finfo(np.float32).smallest_subnormal))

def true_class_loss(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy −log p_y of each point, accurate also when p_y rounds to 1.

    Near p_y = 1 the released log p_y is rounding noise (float32 holds 1 − 1e-7 at best), which would tie
    the most confident points. The other classes' probabilities are still exact, so the loss is computed as
    −log1p(−Σ_{j≠y} p_j) there, and as −log p_y where p_y < 1/2.

    Parameters
    ----------
    log_probs
        Released log-probabilities ``[..., N, C]``.
    labels
        True classes ``[N]``.
    """
    return _loss(*_true_class_parts(log_probs, labels))


def _true_class_parts(log_probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The released ``log p_y`` and the sum ``Σ_{j≠y} p_j`` of the other classes (exact: no ``1 − p_y``)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    on_label = np.broadcast_to(true_class_mask(lp.shape[-1], labels), lp.shape)
    log_p_y = np.where(on_label, lp, 0.0).sum(-1)
    p = np.exp(lp)
    np.copyto(p, 0.0, where=on_label)
    return log_p_y, p.sum(-1)


def _loss(log_p_y: np.ndarray, p_wrong: np.ndarray) -> np.ndarray:
    confident = p_wrong < 0.5
    return np.where(confident, -np.log1p(-np.minimum(p_wrong, 0.5)), -log_p_y)


def clean_log_probs(log_probs: np.ndarray) -> np.ndarray:
    """Released log-probabilities as float64, clipped to ``[LOG_FLOOR, 0]`` (−inf becomes ``LOG_FLOOR``)."""
    return np.clip(np.asarray(log_probs, dtype=np.float64), LOG_FLOOR, 0.0)


def true_class_mask(n_classes: int, labels: np.ndarray) -> np.ndarray:
    """Boolean mask ``[N, C]`` of each point's true class (broadcasts against ``[..., N, C]``)."""
    return np.arange(n_classes) == np.asarray(labels)[:, None]


def true_class_log_probs(log_probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log p_y`` and ``log(1 − p_y)`` of each point, both accurate to the release's precision.

    ``log p_y`` is ``−true_class_loss`` (exact also where ``p_y`` rounds to 1); ``log(1 − p_y)`` is
    ``log Σ_{j≠y} p_j``, summed over the other classes, never computed from ``1 − p_y``. The cleaned release lies
    in ``[LOG_FLOOR, 0]``, so no term of the sum overflows or is lost. Both are floored at :data:`LOG_FLOOR` so
    that degenerate releases (one class, one-hot) stay finite.

    Parameters
    ----------
    log_probs
        Released log-probabilities ``[..., N, C]``.
    labels
        True classes ``[N]``.
    """
    log_p_y, p_wrong = _true_class_parts(clean_log_probs(log_probs), labels)
    with np.errstate(divide="ignore"):  # one class only: no other class, log 0 = −inf, floored below
        log_rest = np.log(p_wrong)
    return np.maximum(-_loss(log_p_y, p_wrong), LOG_FLOOR), np.maximum(log_rest, LOG_FLOOR)


def in_model_chunks(
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray], outputs: np.ndarray, labels: np.ndarray,
    chunk_elements: int = 1 << 24,
) -> np.ndarray:
    """A per-record ``statistic(outputs, labels)`` of every model's outputs ``[M, N, C]``, computed a few models at a
    time so that its float64 work arrays stay below about ``chunk_elements`` values (never an ``[M, N, C]`` float64
    copy); the values equal those of one call on all the outputs."""
    outputs = np.asarray(outputs)
    if outputs.ndim < 3:
        return statistic(outputs, labels)
    step = max(1, chunk_elements // max(1, int(np.prod(outputs.shape[1:]))))
    return np.concatenate([statistic(outputs[m:m + step], labels) for m in range(0, len(outputs), step)])


def model_signals(outputs: np.ndarray, labels: np.ndarray, chunk_elements: int = 1 << 24) -> np.ndarray:
    """:func:`true_class_log_probs` of every model's outputs ``[M, N, C]``, stacked: ``[M, N, 2]`` holds ``log p_y``
    then ``log(1 − p_y)``, computed in model chunks (:func:`in_model_chunks`)."""
    return in_model_chunks(lambda lp, y: np.stack(true_class_log_probs(lp, y), -1), outputs, labels, chunk_elements)
