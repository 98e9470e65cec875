import numpy as np
import pytest

from bench.audit import threshold_at_fpr, union_metrics
from bench.grid import load_grid
from privkernel.errors import BenchError
from tests.conftest import TINY_GRID, write_grid

KEEP = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=bool)  # target 0, calibration model 1
SCORES = {
    "a": {"target": np.array([3.0, 0, 0, 0.5, 2.5, 0]), "calibration": np.array([[2.0, 2, 2, 1, 1, 1]])},
    "b": {"target": np.array([0.0, 3, 0, 0, 0, 0]), "calibration": np.array([[2.0, 2, 2, 1, 1, 1]])},
}


def test_threshold_at_fpr_on_references():
    assert threshold_at_fpr(np.array([2.0, 2, 2, 1, 1, 1]), KEEP[1], 0.0) == 2.0
    assert threshold_at_fpr(np.array([2.0, 2, 2, 1, 1, 1]), KEEP[1], 0.5) == 2.0
    assert threshold_at_fpr(np.array([2.0, 2, 2, 1, 1, 1]), KEEP[1], 1.0) == 1.0


def test_union_by_hand():
    row, flagged = union_metrics(SCORES, KEEP, target=0, calibration=[1], max_fpr=0.0)
    # thresholds from the references (2.0 each): a flags records 0 and 4 (a false positive), b flags record 1
    assert np.array_equal(flagged, [True, True, False, False, True, False])
    assert row["tpr.a"] == pytest.approx(1 / 3) and row["fpr.a"] == pytest.approx(1 / 3)
    assert row["tpr.b"] == pytest.approx(1 / 3) and row["fpr.b"] == 0.0
    assert row["union_tpr"] == pytest.approx(2 / 3) and row["union_fpr"] == pytest.approx(1 / 3)
    assert row["overlap_tpr"] == 0.0
    # thresholds from the target's own non-members: FPR 0 for each, and so for the union
    assert row["oracle_union_tpr"] == pytest.approx(2 / 3) and row["oracle_union_fpr"] == 0.0


def test_union_grid_validation(tmp_path):
    grid = write_grid(tmp_path, {**TINY_GRID, "unions": [{"attacks": ["loss", "los"], "fpr": 0.0}]})
    with pytest.raises(BenchError, match="union attack 'los' is not one of the grid's attacks"):
        load_grid(str(grid))
    grid = write_grid(tmp_path, {**TINY_GRID, "unions": [{"attacks": ["loss", "loss"], "fpr": 0.0}]})
    with pytest.raises(BenchError, match="at least two different attacks"):
        load_grid(str(grid))
    grid = write_grid(tmp_path, {**TINY_GRID, "unions": [{"attacks": ["loss"]}]})
    with pytest.raises(BenchError, match="exactly the keys"):
        load_grid(str(grid))
