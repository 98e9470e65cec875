"""Canonical hashing and seed derivation: the identities of cache entries, cells and random streams."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal specs give equal strings.

    Objects with an ``as_dict()`` method (component specs) are written as that dict, NumPy scalars as their
    Python value; anything else that JSON cannot represent is a ``TypeError``.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if callable(getattr(obj, "as_dict", None)):
        return obj.as_dict()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"cannot hash {type(obj).__name__} {obj!r}")


def stable_hash(obj: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def derive_seed(seed: int, *labels: Any) -> int:
    """A 63-bit seed for one purpose (``labels``), derived from the cell's ``seed``.

    Different labels give independent streams; the same labels always give the same seed, so e.g. the
    split of a dataset depends only on the dataset and the seed, not on the architecture trained on it.
    """
    return int(stable_hash(["seed", seed, *labels])[:16], 16) >> 1
