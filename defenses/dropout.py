"""Dropout (Srivastava et al., JMLR 2014) as a membership-inference defense."""

from __future__ import annotations

from typing import Any

from defenses.base import Defense
from privkernel.registry import DEFENSES, Param


@DEFENSES.register(
    "dropout",
    description="Dropout at the given rate in every layer that has one (Srivastava et al. 2014); needs an "
    "architecture with a `dropout` parameter (mlp, cnn, mpnn).",
    params=[Param("rate", float, 0.5, "probability of zeroing a unit during training", low=0.0, high=1.0,
                  high_inclusive=False)],
)
class DropoutDefense(Defense):
    """Train with dropout, a regulariser that narrows the gap between train and test loss.

    Dropout was proposed against overfitting by Srivastava et al., "Dropout: a simple way to prevent neural
    networks from overfitting", JMLR 15 (2014); Salem et al., "ML-Leaks", NDSS 2019, evaluate it as a defense
    against membership inference.

    Parameters
    ----------
    rate
        Dropout probability in ``[0, 1)``. It replaces the architecture's own ``dropout`` parameter (a value
        set in the grid for the architecture is overridden). ``0`` trains without dropout.

    Notes
    -----
    The rate reaches the model as the keyword argument ``dropout`` of the architecture's factory. An
    architecture without that parameter (``logreg``) cannot take it: its factory raises a ``TypeError`` when the
    cell trains, and the cell fails. Each of the M stacked models draws its own dropout masks
    (:meth:`targets.ensemble.Ensemble.forward`); released outputs are computed in evaluation mode, without
    dropout.
    """

    def __init__(self, rate: float = 0.5) -> None:
        super().__init__(rate=rate)
        self.rate = rate

    def architecture_overrides(self) -> dict[str, Any]:
        return {"dropout": self.rate}
