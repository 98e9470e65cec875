"""privbench: membership-inference benchmark harness (grid, registry, cache, store, metrics, CLI)."""

__version__ = "0.1.0"
