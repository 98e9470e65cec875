"""Defenses: one module per defense, registered in :data:`bench.registry.DEFENSES`."""

from defenses import none  # noqa: F401  (registers)
