import pytest

from bench.cli import main
from bench.grid import load_grid
from privkernel.errors import BenchError
from tests.conftest import TINY_GRID, write_grid


def grid_with(tmp_path, **changes):
    return write_grid(tmp_path, {**TINY_GRID, **changes})


def test_default_grid_loads():
    grid = load_grid("default")
    assert grid.name == "default" and len(grid.cells) >= 1
    assert all(cell.protocol_params["n_models"] >= 2 for cell in grid.cells)


def test_expansion_is_the_cartesian_product_of_axes_and_sweeps(tmp_path):
    path = grid_with(
        tmp_path,
        architectures=["logreg", {"name": "mlp", "params": {"width": [8, 16], "depth": [1, 2]}}],
        seeds=[0, 1, 2],
        training={"epochs": 2, "lr": [0.01, 0.001]},
    )
    grid = load_grid(str(path))
    assert len(grid.cells) == (1 + 2 * 2) * 3 * 2
    widths = {c.architecture.kwargs.get("width") for c in grid.cells}
    assert widths == {None, 8, 16}
    assert len({c.key for c in grid.cells}) == len(grid.cells)


def test_excludes_remove_matching_cells_only(tmp_path):
    path = grid_with(
        tmp_path,
        architectures=["logreg", {"name": "mlp", "params": {"width": [8, 16]}}],
        seeds=[0, 1],
        exclude=[{"architecture": "logreg", "seed": 1}, {"architecture.width": [16]}],
    )
    grid = load_grid(str(path))
    labels = {(c.architecture.name, c.architecture.kwargs.get("width"), c.seed) for c in grid.cells}
    assert labels == {("logreg", None, 0), ("mlp", 8, 0), ("mlp", 8, 1)}
    assert grid.n_excluded == 3


def test_duplicate_entries_collapse(tmp_path):
    path = grid_with(tmp_path, architectures=["logreg", "logreg"], seeds=[0, 0])
    assert len(load_grid(str(path)).cells) == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("datasets: [breast_cancer\n", "malformed YAML at line 2"),
        ("- a\n- b\n", "top level must be a mapping"),
        ({**TINY_GRID, "datset": ["x"]}, "unknown key 'datset' (did you mean 'datasets'?)"),
        ({**TINY_GRID, "attacks": []}, "'attacks' is missing or empty"),
        ({**TINY_GRID, "datasets": ["breast_cancr"]},
         "unknown dataset 'breast_cancr' (did you mean 'breast_cancer'?)"),
        ({**TINY_GRID, "architectures": [{"name": "mlp", "params": {"widht": 3}}]}, "unknown parameter 'widht'"),
        ({**TINY_GRID, "architectures": [{"name": "mlp", "params": {"width": [8, 0]}}]}, "width=0 is out of range"),
        ({**TINY_GRID, "architectures": [{"name": "mlp", "params": {"width": []}}]}, "empty list"),
        ({**TINY_GRID, "architectures": [{"nam": "mlp"}]}, "must be a name or a mapping"),
        ({**TINY_GRID, "training": {"optimizer": "adamw"}}, "is not one of {'adam', 'sgd'}"),
        ({**TINY_GRID, "protocol": {"n_models": 4, "n_targets": 5}}, "n_targets=5 exceeds n_models=4"),
        ({**TINY_GRID, "protocol": {"n_models": 2, "n_targets": 1, "calibration_models": 2}},
         "calibration_models=2 needs at least 3"),
        ({**TINY_GRID, "seeds": [-1]}, "seeds must be a non-empty list of non-negative integers"),
        ({**TINY_GRID, "exclude": [{"architecure": "mlp"}]}, "names 'architecure' (did you mean 'architecture'?)"),
        ({**TINY_GRID, "exclude": [{"architecture": ["logreg", "mlp"]}]}, "every cell is excluded"),
    ],
)
def test_bad_grids_name_the_problem(tmp_path, content, message):
    path = write_grid(tmp_path, content)
    with pytest.raises(BenchError) as err:
        load_grid(str(path))
    assert message in str(err.value)


def test_unknown_grid_name_exits_2_with_the_known_names(capsys):
    assert main(["grid", "--grid", "nope", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no grid 'nope'") and "default" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_grid_naming_an_unknown_dataset_exits_2(tmp_path, capsys):
    path = grid_with(tmp_path, datasets=["mnist"])
    assert main(["grid", "--grid", str(path)]) == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err


def test_dry_run_prints_cells_and_count_and_runs_nothing(tiny_grid, workdirs, capsys):
    code = main(["grid", "--grid", str(tiny_grid), "--dry-run", "--cache-dir", str(workdirs["cache"]),
                 "--results", str(workdirs["results"])])
    out = capsys.readouterr().out
    assert code == 0 and "2 cells in grid 'tiny'" in out and "breast_cancer / logreg / none / seed=0" in out
    assert not workdirs["cache"].exists() and not workdirs["results"].exists()


@pytest.fixture
def extra_datasets(registries):
    from privkernel.registry import DATASETS

    DATASETS.register("reg_only", description="test", task="regression")(lambda: None)
    DATASETS.register(
        "mols", description="test", params=[], inputs=lambda p: "graph"
    )(lambda: None)


def test_an_attack_that_does_not_fit_the_task_is_refused_at_load(tmp_path, extra_datasets):
    path = grid_with(tmp_path, datasets=["reg_only"], architectures=["mlp"], attacks=["loss", "confidence"])
    message = r"attack 'confidence' supports classification only, but the grid's datasets \(reg_only\) are regression"
    with pytest.raises(BenchError, match=message):
        load_grid(str(path))


def test_an_architecture_that_cannot_read_the_inputs_is_refused_at_load(tmp_path, extra_datasets):
    path = grid_with(tmp_path, datasets=["mols"], architectures=["mlp"])
    message = "architecture 'mlp' takes vector or image inputs but dataset mols gives graph"
    with pytest.raises(BenchError, match=message):
        load_grid(str(path))


def test_a_defense_setting_a_parameter_the_architecture_lacks_is_refused(tmp_path):
    path = grid_with(tmp_path, architectures=["logreg"], defenses=[{"name": "dropout", "params": {"rate": 0.5}}])
    with pytest.raises(BenchError, match="sets dropout of the architecture, which 'logreg' does not have"):
        load_grid(str(path))


def test_a_chembl_threshold_leaving_one_class_is_refused_at_load(tmp_path):
    path = grid_with(tmp_path, datasets=[{"name": "chembl_activity", "params": {"threshold": 12.0}}])
    with pytest.raises(BenchError, match="threshold=12 puts every molecule in one class"):
        load_grid(str(path))
