"""Datasets, featurizers, architectures, the membership protocol, and the training and observation of the M models."""

from targets import architectures, datasets, featurizers, federated, training  # noqa: F401  (registers)
