"""Defenses: one module per defense, registered in :data:`privkernel.registry.DEFENSES`."""

from defenses import (  # noqa: F401  (registers)
    advreg,
    dpsgd,
    dropout,
    early_stopping,
    l2,
    label_smoothing,
    memguard,
    none,
    release,
)
