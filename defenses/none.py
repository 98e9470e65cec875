"""The undefended baseline."""

from defenses.base import Defense
from privkernel.registry import DEFENSES


@DEFENSES.register("none", description="No defense: the model is trained normally and releases its probabilities.")
class NoDefense(Defense):
    """Train normally, release the full probability vector."""
