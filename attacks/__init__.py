"""Attacks: pure functions of released outputs → one membership score per pool point (higher = member)."""

from attacks import label_only, lira, loss, metric, nn, risk, rmia  # noqa: F401  (registers)
