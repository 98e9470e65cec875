"""The memory budget within which the harness chunks its largest computations.

Per-sample gradients (DP-SGD) and model outputs over many records are computed in chunks of records sized so that
one chunk's tensors fit in the budget (:func:`targets.ensemble.records_within`). The budget is
``--memory-budget`` (which sets :data:`ENV` for the run and its worker processes), or by default half of the memory
available when it is asked for: the free memory of the CUDA device in use, or the host's ``MemAvailable`` up to
:data:`HOST_CAP` (on a CPU, chunks beyond a few hundred megabytes make nothing faster and only raise the peak).

Chunking changes how much is computed at once, not what: the same sums are taken in other groupings, so results
agree to float rounding whatever the budget (``tests/test_graphs.py`` checks per-sample clipped sums to 1e-5), and
the budget is no part of any cache key. A training run of many steps can carry such a rounding difference into
its models, as a change of thread count can; pin ``--memory-budget`` where two machines must give the same bits.
"""

from __future__ import annotations

import os
import re

from privkernel.errors import BenchError

#: The environment variable holding the budget in bytes (inherited by worker processes).
ENV = "PRIVBENCH_MEMORY_BUDGET"
#: The share of the available memory that the default budget takes.
DEFAULT_SHARE = 0.5
#: The most the default budget takes of the host's memory.
HOST_CAP = 1 << 30
#: The budget when the available memory cannot be read.
FALLBACK = HOST_CAP // 2
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
    ``device`` (when it names one), or of the host's available memory up to :data:`HOST_CAP`."""
    given = os.environ.get(ENV)
    if given:
        return parse_size(given)
    free: int | None
    if device is not None and str(device).startswith("cuda"):
        import torch

        return int(DEFAULT_SHARE * torch.cuda.mem_get_info(torch.device(device))[0])
    free = available_memory()
    return min(int(DEFAULT_SHARE * free), HOST_CAP) if free else FALLBACK
