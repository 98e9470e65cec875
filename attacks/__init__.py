"""Attacks: pure functions of released outputs → one membership score per pool point (higher = member)."""

from attacks import label_only, leaked, lira, loss, metric, nn, risk, rmia, rounds, white_box  # noqa: F401  (registers)
