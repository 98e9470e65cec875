"""Shared fixtures: a tiny grid that trains in about a second per cell, and isolated cache/results folders."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from privkernel.registry import REGISTRIES, Registry

TINY_GRID = {
    "name": "tiny",
    "datasets": ["breast_cancer"],
    "architectures": ["logreg", {"name": "mlp", "params": {"width": 16, "depth": 1}}],
    "defenses": ["none"],
    "attacks": ["loss"],
    "seeds": [0],
    "protocol": {"n_models": 4, "n_targets": 2, "calibration_models": 1},
    "training": {"epochs": 5, "batch_size": 64, "lr": 0.01},
}


def write_grid(folder: Path, content: object, name: str = "grid.yaml") -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


@pytest.fixture
def registries() -> Iterator[dict[str, Registry]]:
    """Every registry, restored after the test: what the test registers (``DATASETS.register(...)``) is gone
    afterwards. For one registry in a block, use ``with DATASETS.temporarily(): ...``."""
    with ExitStack() as stack:
        for registry in REGISTRIES.values():
            stack.enter_context(registry.temporarily())
        yield REGISTRIES


@pytest.fixture
def tiny_grid(tmp_path: Path) -> Path:
    return write_grid(tmp_path, TINY_GRID, "tiny.yaml")


@pytest.fixture
def workdirs(tmp_path: Path) -> dict[str, Path]:
    return {"cache": tmp_path / "cache", "results": tmp_path / "results"}
