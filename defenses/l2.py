"""L2 regularisation (weight decay) as a membership-inference defense."""

from __future__ import annotations

from typing import Any

from defenses.base import Defense
from privkernel.registry import DEFENSES, Param


@DEFENSES.register(
    "l2",
    description="L2 penalty on every parameter through the optimizer's weight decay (Shokri et al. 2017).",
    params=[Param("weight_decay", float, 1e-3, "L2 coefficient λ: each step adds λ·θ to the gradient",
                  low=0.0, low_inclusive=False, high=10.0)],
)
class L2Defense(Defense):
    """Weight decay: the gradient of every step gains ``weight_decay · θ``.

    Shokri, Stronati, Song and Shmatikov, "Membership inference attacks against machine learning models",
    IEEE S&P 2017, Section VI, evaluate L2 regularisation as a mitigation; Nasr et al. (CCS 2018) use it as a
    baseline for adversarial regularisation.

    Parameters
    ----------
    weight_decay
        λ > 0. The optimizer's update uses ``∇L(θ) + λ·θ``, the gradient of ``L(θ) + λ/2·‖θ‖²`` (PyTorch's
        ``weight_decay``). With SGD and no momentum one step is ``θ ← θ − lr·(∇L(θ) + λ·θ)``. With Adam the
        penalty is added to the gradient before Adam's rescaling (coupled L2, as ``torch.optim.Adam``; not
        AdamW's decoupled decay). Every parameter is decayed, biases included.
    """

    def __init__(self, weight_decay: float = 1e-3) -> None:
        super().__init__(weight_decay=weight_decay)
        self.weight_decay = weight_decay

    def optimizer_overrides(self) -> dict[str, Any]:
        return {"weight_decay": self.weight_decay}
