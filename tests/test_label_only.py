import numpy as np
import pytest

import attacks.label_only  # noqa: F401  (registers)
from attacks.base import AttackData
from attacks.label_only import label_only
from bench.cli import main
from bench.store import read_store
from tests.conftest import TINY_GRID, write_grid
from tests.test_end_to_end import random_labels  # noqa: F401  (fixture)


def test_score_is_robustness_above_the_out_references():
    robust_refs = np.array([[0.5, 1.0, 0.2], [0.7, 0.0, 0.4], [0.9, 0.5, 0.6]])
    keep = np.array([[True, False, False], [False, False, False], [False, True, True]])
    data = AttackData(np.zeros((3, 2)), np.zeros(3, int), np.zeros((3, 3, 2)), keep,
                      target_robustness=np.array([1.0, 0.25, 0.5]), reference_robustness=robust_refs)
    out = label_only(data)
    # OUT means: point 0 -> (0.7+0.9)/2, point 1 -> (1.0+0.0)/2, point 2 -> (0.2+0.4)/2
    np.testing.assert_allclose(out.scores, [1.0 - 0.8, 0.25 - 0.5, 0.5 - 0.3])
    assert out.info["label_only_no_out_refs"] == 0


def test_memorised_points_survive_noise(random_labels, tmp_path):  # noqa: F811
    grid = write_grid(tmp_path, {
        **TINY_GRID, "datasets": ["random_labels"], "attacks": [{"name": "label_only", "params": {"noise": 0.3}}],
        "architectures": [{"name": "mlp", "params": {"width": 256, "depth": 2}}],
        "training": {"epochs": 150, "batch_size": 32, "lr": 0.003},
    })
    assert main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r"),
                 "--quiet", "--no-report"]) == 0
    rows = read_store(tmp_path / "r")
    assert rows["auc"].min() > 0.75
    assert rows["attack.noise"].eq(0.3).all()


def test_graph_inputs_are_refused_at_load(tmp_path, registries):
    from bench.grid import load_grid
    from privkernel.errors import BenchError
    from privkernel.registry import ARCHITECTURES, DATASETS

    DATASETS.register("graphs", description="test", inputs="graph")(lambda: None)
    ARCHITECTURES.register("graph_net", description="test", accepts=("graph",))(lambda: None)
    grid = write_grid(tmp_path, {**TINY_GRID, "datasets": ["graphs"], "architectures": ["graph_net"],
                                 "attacks": ["label_only"]})
    with pytest.raises(BenchError, match="attack 'label_only' queries vector, image or volume inputs"):
        load_grid(str(grid))
