"""The memory budget within which the harness chunks its largest computations.

Per-sample gradients (DP-SGD) and model outputs over many records are computed in chunks of records sized so that
one chunk's tensors fit in the budget (:func:`targets.ensemble.records_within`). The budget is
``--memory-budget`` (which sets :data:`ENV` for the run and its worker processes), or by default half of the memory
available when it is asked for: the host's ``MemAvailable``, or the free memory of the CUDA device in use.

Chunking changes how much is computed at once, never what: results do not depend on the budget (the tests check
it), so the budget is no part of any cache key.
"""

from __future__ import annotations

import os
import re

from privkernel.errors import BenchError

#: The environment variable holding the budget in bytes (inherited by worker processes).
ENV = "PRIVBENCH_MEMORY_BUDGET"
#: The share of the available memory that the default budget takes.
DEFAULT_SHARE = 0.5
#: The budget when the available memory cannot be read.
FALLBACK = 2 << 30
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes of a size written ``512M``, ``4G``, ``1.5G`` or a plain number of bytes (binary units, an optional
    ``B`` or ``iB``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), flags=re.IGNORECASE)
    if match is None or float(match.group(1)) <= 0:
        raise BenchError(f"memory budget {text!r} is not a positive size; write it like 512M, 4G or 1.5G")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def available_memory() -> int | None:
    """The host's available memory in bytes (``MemAvailable`` of ``/proc/meminfo``), or None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(device: str | None = None) -> int:
    """The budget in bytes: :data:`ENV` when set, else :data:`DEFAULT_SHARE` of the free memory of the CUDA
    ``device`` (when it names one) or of the host."""
    given = os.environ.get(ENV)
    if given:
        return parse_size(given)
    free: int | None
    if device is not None and str(device).startswith("cuda"):
        import torch

        free = torch.cuda.mem_get_info(torch.device(device))[0]
    else:
        free = available_memory()
    return int(DEFAULT_SHARE * free) if free else FALLBACK
