"""Label smoothing as a membership-inference defense."""

from __future__ import annotations

from defenses.base import Defense
from privkernel.lazy import lazy_import
from privkernel.registry import DEFENSES, Param

torch = lazy_import("torch")


@DEFENSES.register(
    "label_smoothing",
    description="Cross-entropy against smoothed targets (1−α)·onehot + α/C (Szegedy et al. 2016).",
    params=[Param("alpha", float, 0.1, "smoothing α: weight of the uniform distribution in the target",
                  low=0.0, high=1.0, high_inclusive=False)],
    tasks=("classification",),
)
class LabelSmoothing(Defense):
    """Train on the target distribution ``(1 − α)·onehot(y) + α/C``.

    Szegedy et al., "Rethinking the Inception architecture for computer vision", CVPR 2016 (Section 7)
    introduced label smoothing; its effect on membership leakage is studied by Kaya and Dumitras, "When does
    data augmentation help with membership inference attacks?", ICML 2021, among others.

    Parameters
    ----------
    alpha
        α in ``[0, 1)``; ``0`` is the plain cross-entropy.

    Notes
    -----
    The loss of one point with log-probabilities ``log p`` over ``C`` classes is

    ``(1 − α)·(−log p_y) + α·(1/C)·Σ_j (−log p_j)``,

    the same as ``torch.nn.functional.cross_entropy(..., label_smoothing=α)``. Classification only.
    """

    def __init__(self, alpha: float = 0.1) -> None:
        super().__init__(alpha=alpha)
        self.alpha = alpha

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(outputs, dim=-1)  # [M, B, C]
        true_class = -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # [M, B]
        uniform = -log_p.mean(dim=-1)  # [M, B]
        return ((1.0 - self.alpha) * true_class + self.alpha * uniform).mean(dim=1)
