"""Attacks: pure functions of released outputs → one membership score per pool point (higher = member)."""

from attacks import loss  # noqa: F401  (registers)
