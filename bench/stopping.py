"""Stopping a run cleanly: SIGINT (Ctrl-C) or SIGTERM stops it after the stage in progress.

The first signal only sets a flag. The pipeline looks at it after every stage (:func:`check`), so the stage being
computed is finished and cached before its cell stops with :class:`Interrupted`; the cells that had finished are
already in the store, and a rerun of the same command resumes from the cache. The driver passes the signal on to
the worker processes of a local pool, which stop the same way. A second SIGINT to the driver stops it at once
(``KeyboardInterrupt``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: The signals that stop a run after its current stage.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None


class Interrupted(Exception):
    """A cell stopped after a finished stage because the run was asked to stop (by signal ``signum``)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    def __reduce__(self) -> tuple[type, tuple[int]]:  # crosses process boundaries with its signal number
        return Interrupted, (self.signum,)


def received() -> int | None:
    """The signal that asked this process to stop, or None."""
    return _received


def check() -> None:
    """Raise :class:`Interrupted` if a stop was asked for (called between stages)."""
    if _received is not None:
        raise Interrupted(_received)


def _driver_handler(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is not None and signum == signal.SIGINT:
        raise KeyboardInterrupt
    _received = signum
    for child in multiprocessing.active_children():  # a local pool's workers (Ctrl-C reaches them anyway)
        try:
            os.kill(child.pid, signum)
        except (ProcessLookupError, TypeError):
            continue


def _worker_handler(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signum


def install_in_worker() -> None:
    """In a pool's worker process: a stop signal only sets the flag (the driver decides when to give up)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _worker_handler)


@contextmanager
def stop_after_stage() -> Iterator[None]:
    """While the body runs, SIGINT and SIGTERM stop the run after the current stage instead of at once.

    Only the main thread can set signal handlers; elsewhere (a notebook's worker thread) signals keep their
    handlers. The flag is cleared on entry and the previous handlers are restored on exit."""
    global _received
    _received = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _driver_handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
