"""Datasets, architectures, the membership protocol, and the training and observation of the M models."""

from targets import architectures, datasets  # noqa: F401  (registers)
