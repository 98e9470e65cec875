"""Errors that the command line reports as one line and exit code 2."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable


class BenchError(Exception):
    """A problem with the user's input or environment: the message names the problem and the fix."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return a ``" (did you mean 'x'?)"`` suffix for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxset = 3, 4, 6, 6, 6
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 80, 80, 80


def short_repr(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut to a few levels and items (``[[1, 2, [...]], ...]``) and at most ``limit`` characters: a
    user's value in a message stays short, however large it is (YAML aliases let a file of a few lines hold a value
    of billions of items)."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
