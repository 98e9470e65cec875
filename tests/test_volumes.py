"""Volumetric inputs (brain-MRI-like regression, Gupta et al. MIDL 2021): the cnn3d architecture, the seeded
synthetic_volumes dataset and the npz loader's volume layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.func import functional_call

from bench.cli import main
from bench.grid import expand_grid
from bench.store import read_samples, read_store
from defenses.base import Defense
from privkernel.errors import BenchError
from privkernel.registry import ARCHITECTURES, DATASETS
from targets.architectures import cnn3d
from targets.datasets import VOLUME_MAX_VOXELS
from targets.ensemble import Ensemble
from targets.membership import membership_matrix
from tests.attack_data import pairwise_auc
from tests.conftest import write_grid
from tests.training import train


def load(name, **params):
    """Load a dataset as the pipeline does: parameters validated (defaults filled in) by the registry."""
    component = DATASETS.get(name)
    return component.obj(**component.validate(params))


def tag(name, tag_name, **params):
    return DATASETS.get(name).tag(tag_name, DATASETS.get(name).validate(params))


def build(shape, n_outputs=3, channels=4, depth=2, kernel_size=3, dropout=0.0):
    return cnn3d(shape, n_outputs, channels=channels, depth=depth, kernel_size=kernel_size, dropout=dropout)


# --- cnn3d ------------------------------------------------------------------------------------------------------


def test_cnn3d_is_registered_for_volumes_with_the_cnn_params():
    component = ARCHITECTURES.get("cnn3d")
    assert component.tags["accepts"] == ("volume",)
    defaults = component.validate({})
    assert defaults == {"channels": 8, "depth": 2, "kernel_size": 3, "dropout": 0.0}
    assert {p.name for p in component.params} == {p.name for p in ARCHITECTURES.get("cnn").params}


@pytest.mark.parametrize("shape", [(5, 6, 7), (2, 5, 6, 7)])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_cnn3d_shapes_for_one_or_several_channels(shape, kernel_size):
    torch.manual_seed(0)
    model = build(shape, n_outputs=3, channels=6, depth=3, kernel_size=kernel_size, dropout=0.2).eval()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 3 and convs[0].in_channels == (shape[0] if len(shape) == 4 else 1)
    assert all(c.out_channels == 6 and c.kernel_size == (kernel_size,) * 3 for c in convs)
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == 3
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 3
    x = torch.rand(4, *shape)
    original = x.clone()
    out = model(x)
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    torch.testing.assert_close(x, original, rtol=0, atol=0)  # the input is not modified
    # same padding: every block keeps (D, H, W)
    h = x
    for module in model:
        h = module(h)
        if isinstance(module, nn.Conv3d):
            assert h.shape[-3:] == shape[-3:]
    assert build(shape, n_outputs=1, kernel_size=kernel_size)(x).shape == (4, 1)  # regression head


def test_cnn3d_single_channel_volume_equals_an_explicit_channel_axis():
    torch.manual_seed(0)
    bare, explicit = build((4, 5, 6)).eval(), build((1, 4, 5, 6)).eval()
    explicit.load_state_dict(dict(zip(explicit.state_dict(), bare.state_dict().values(), strict=True)))
    x = torch.rand(3, 4, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(bare(x), explicit(x[:, None]))


def test_cnn3d_pools_over_every_spatial_axis_and_sees_each_record_alone():
    torch.manual_seed(0)
    model = build((6, 6, 6), depth=1).eval()
    x = torch.rand(3, 6, 6, 6)
    with torch.no_grad():
        out = model(x)
        # a record's output does not depend on the other records of its batch (no BatchNorm)
        torch.testing.assert_close(model(x[1:2]), out[1:2], rtol=1e-5, atol=1e-6)
        # the head reads the mean of the last block's features over all of (D, H, W)
        features = model[:-2](x)
        assert features.shape == (3, 4, 6, 6, 6)
        torch.testing.assert_close(out, model[-1](features.mean(dim=(2, 3, 4))))


def test_cnn3d_refuses_wrong_ranks_even_kernels_and_graphs():
    for shape in [(64,), (8, 8), (1, 1, 4, 4, 4)]:
        with pytest.raises(BenchError, match=r"'cnn3d' needs volume inputs shaped \[D, H, W\] or \[C, D, H, W\]"):
            build(shape)
    with pytest.raises(BenchError, match="kernel_size=4 must be odd"):
        build((4, 4, 4), kernel_size=4)
    with pytest.raises(BenchError, match="'cnn3d' takes volume inputs.*dict of arrays"):
        build({"atoms": (3, 5), "mask": (3,), "bonds": (6, 3), "bond_mask": (6,)})
    # an image [C, H, W] is 3-d too: it is read as a one-channel volume, which is why the grid checks input kinds
    assert build((1, 8, 8))(torch.rand(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("shape", [(5, 5, 5), (2, 4, 5, 3)])
def test_cnn3d_in_an_ensemble_equals_each_model_alone(shape):
    n_models, n, n_outputs = 3, 7, 2
    factory = lambda: build(shape, n_outputs=n_outputs, channels=4)  # noqa: E731
    ensemble = Ensemble.initialise(factory, n_models, seed=0)
    template = factory()
    g = torch.Generator().manual_seed(1)
    X = torch.rand(n, *shape, generator=g)
    per_model_x = torch.rand(n_models, n, *shape, generator=g)

    predicted = ensemble.predict(X, batch_size=3)  # chunks of 3 records
    trained_mode = ensemble.forward(per_model_x)
    assert predicted.shape == (n_models, n, n_outputs) and trained_mode.shape == (n_models, n, n_outputs)
    for m in range(n_models):
        params = {k: v[m] for k, v in ensemble.params.items()}
        buffers = {k: v[m] for k, v in ensemble.buffers.items()}
        with torch.no_grad():
            alone = functional_call(template.eval(), (params, buffers), (X,))
            alone_train = functional_call(template.train(), (params, buffers), (per_model_x[m],))
        torch.testing.assert_close(predicted[m], alone, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(trained_mode[m], alone_train, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(predicted[0], predicted[1])  # each model has its own initialisation


def test_cnn3d_dropout_masks_differ_between_models_of_an_ensemble():
    factory = lambda: build((4, 4, 4), channels=4, dropout=0.5)  # noqa: E731
    ensemble = Ensemble.initialise(factory, 2, seed=0)
    ensemble.params = {k: v[:1].expand_as(v).clone() for k, v in ensemble.params.items()}  # two identical models
    X = torch.rand(1, 5, 4, 4, 4).expand(2, -1, -1, -1, -1)
    torch.manual_seed(0)
    out = ensemble.forward(X)
    assert not torch.allclose(out[0], out[1])  # randomness="different": each model draws its own masks
    evaluated = ensemble.predict(X[0])
    torch.testing.assert_close(evaluated[0], evaluated[1])  # and no dropout in evaluation


@pytest.fixture
def one_thread():
    """Run on one CPU thread: the volumes are tiny, and two OpenMP threads on a busy 2-core runner spin-wait (this
    test took 9 s instead of 0.5 s beside another process)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_lowers_the_loss_on_synthetic_volumes(one_thread):
    data = load("synthetic_volumes", n_samples=48, size=6)
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    n_models = 2
    ensemble = Ensemble.initialise(lambda: build(X.shape[1:], n_outputs=1, channels=8, depth=2), n_models, seed=0)
    before = ensemble.predict(X)[..., 0].numpy()
    keep = membership_matrix(n_models, len(y), seed=1)
    history = train(ensemble, X, y, keep, Defense().loss, epochs=15, batch_size=8, lr=0.03,
                             optimizer="adam", momentum=0.0, seed=2).history
    assert history.shape == (15, n_models) and np.isfinite(history).all()
    assert (history[-3:].mean(0) < 0.9 * history[:2].mean(0)).all(), history
    # what the models learned is the target: their predictions, unrelated to it at initialisation, now follow it
    after = ensemble.predict(X)[..., 0].numpy()
    for m in range(n_models):
        assert abs(np.corrcoef(before[m], data.y)[0, 1]) < 0.4
        assert np.corrcoef(after[m], data.y)[0, 1] > 0.6


# --- synthetic_volumes -------------------------------------------------------------------------------------------


def test_synthetic_volumes_shapes_tags_and_description():
    component = DATASETS.get("synthetic_volumes")
    defaults = component.validate({})
    assert (defaults["n_samples"], defaults["size"], defaults["task"]) == (200, 12, "regression")
    data = load("synthetic_volumes")
    assert data.X.shape == (200, 12, 12, 12) and data.X.dtype == np.float32
    assert data.y.shape == (200,) and data.y.dtype == np.float32
    assert data.task == "regression" and data.n_classes == 1
    assert abs(data.y.mean()) < 0.3 and 0.8 < data.y.std() < 1.2  # about unit variance
    assert tag("synthetic_volumes", "inputs") == "volume"
    assert tag("synthetic_volumes", "task") == "regression" and tag("synthetic_volumes", "n_classes") == 1
    assert tag("synthetic_volumes", "task", task="classification") == "classification"
    assert tag("synthetic_volumes", "n_classes", task="classification") == 2
    assert "SYNTHETIC" in component.description and "not real MRI" in component.description
    small = load("synthetic_volumes", n_samples=5, size=4)
    assert small.X.shape == (5, 4, 4, 4)


def test_synthetic_volumes_are_deterministic_per_seed():
    a = load("synthetic_volumes", n_samples=30, size=6, seed=3)
    b = load("synthetic_volumes", n_samples=30, size=6, seed=3)
    c = load("synthetic_volumes", n_samples=30, size=6, seed=4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X) and not np.array_equal(a.y, c.y)
    cls_a = load("synthetic_volumes", n_samples=30, size=6, seed=3, task="classification")
    np.testing.assert_array_equal(cls_a.X, a.X)  # the task changes the labels only
    np.testing.assert_array_equal(cls_a.y, a.y >= np.median(a.y))


def test_synthetic_volumes_target_follows_the_content():
    data = load("synthetic_volumes", n_samples=300, size=10)
    brightness = data.X.reshape(len(data.X), -1).mean(1)  # the ball's volume, plus noise
    assert np.corrcoef(brightness, data.y)[0, 1] > 0.9
    # noise only blurs the relation: without any, the brightness orders the targets (up to the voxel grid)
    clean = load("synthetic_volumes", n_samples=300, size=10, noise=0.0, target_noise=0.0)
    assert spearmanr(clean.X.reshape(300, -1).sum(1), clean.y).statistic > 0.999
    # the ball sits at a random position: its centre varies from record to record (by more than a voxel along
    # each axis) and says nothing about the target
    inside = clean.X > 0.5
    for axis in (1, 2, 3):
        coordinate = np.arange(10).reshape([-1 if a == axis else 1 for a in range(4)])
        centre = (inside * coordinate).sum((1, 2, 3)) / inside.sum((1, 2, 3))
        assert 3.5 < centre.mean() < 5.5 and centre.std() > 0.7
        assert abs(np.corrcoef(centre, clean.y)[0, 1]) < 0.2
    noisy = load("synthetic_volumes", n_samples=300, size=10, noise=1.0, target_noise=2.0)
    assert np.corrcoef(noisy.X.reshape(300, -1).mean(1), noisy.y)[0, 1] < 0.9


def test_synthetic_volumes_classification_is_two_balanced_classes():
    data = load("synthetic_volumes", n_samples=41, size=5, task="classification")
    assert data.y.dtype == np.int64 and data.n_classes == 2 and data.task == "classification"
    assert set(np.unique(data.y)) == {0, 1} and abs(int(data.y.sum()) - 20) <= 1
    brightness = data.X.reshape(len(data.X), -1).mean(1)
    assert brightness[data.y == 1].mean() > brightness[data.y == 0].mean()


def test_synthetic_volumes_refuses_more_voxels_than_memory_allows():
    check = DATASETS.get("synthetic_volumes").tags["check"]
    params = DATASETS.get("synthetic_volumes").validate({"n_samples": 10_000_000, "size": 256})
    assert "voxels exceeds" in check(params) and check(DATASETS.get("synthetic_volumes").validate({})) is None
    assert 10_000_000 * 256**3 > VOLUME_MAX_VOXELS
    with pytest.raises(BenchError, match="synthetic_volumes: n_samples × size³ = .* lower n_samples or size"):
        load("synthetic_volumes", n_samples=10_000_000, size=256)


# --- npz volumes --------------------------------------------------------------------------------------------------


def save(tmp_path, X, y, name="volumes.npz"):
    path = tmp_path / name
    np.savez(path, X=X, y=y)
    return str(path)


def test_npz_loads_volumes_with_or_without_a_channel_axis(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([61.5, 70.0, 45.25, 80.0])  # ages
    bare = rng.random((4, 3, 5, 6))
    data = load("npz", path=save(tmp_path, bare, y), inputs="volume", task="regression")
    assert data.X.shape == (4, 3, 5, 6) and data.X.dtype == np.float32
    np.testing.assert_allclose(data.X, bare, rtol=1e-6)
    assert data.y.dtype == np.float32 and data.y.tolist() == y.tolist()
    channels = rng.random((4, 2, 3, 5, 6))
    data = load("npz", path=save(tmp_path, channels, y, "c.npz"), inputs="volume", task="regression")
    assert data.X.shape == (4, 2, 3, 5, 6)
    classes = load("npz", path=save(tmp_path, channels, np.array(["a", "b", "a", "b"]), "k.npz"), inputs="volume")
    assert classes.n_classes == 2 and classes.y.tolist() == [0, 1, 0, 1]
    assert tag("npz", "inputs", path="x.npz", inputs="volume") == "volume"
    assert tag("npz", "inputs", path="x.npz") == "vector"  # the default is unchanged
    # the loaded arrays fit cnn3d
    assert build(data.X.shape[1:])(torch.from_numpy(data.X)).shape == (4, 3)


def test_npz_volume_rank_mismatches_name_the_layout_and_the_fix(tmp_path):
    y = np.array([0, 1, 0])
    flat = save(tmp_path, np.zeros((3, 8)), y, "flat.npz")
    with pytest.raises(BenchError, match=r"shape \(3, 8\), but inputs=volume needs 4 or 5 dimensions "
                                         r"\(\[N, D, H, W\] or \[N, C, D, H, W\]\); set inputs: vector"):
        load("npz", path=flat, inputs="volume")
    too_many = save(tmp_path, np.zeros((3, 1, 1, 2, 2, 2)), y, "six.npz")
    with pytest.raises(BenchError, match=r"needs 4 or 5 dimensions .*; reshape X"):
        load("npz", path=too_many, inputs="volume")
    five = save(tmp_path, np.zeros((3, 1, 2, 2, 2)), y, "five.npz")
    with pytest.raises(BenchError, match=r"inputs=vector needs 2 dimensions \(\[N, F\]\); set inputs: volume"):
        load("npz", path=five)
    with pytest.raises(BenchError, match=r"inputs=image needs 4 dimensions .*; set inputs: volume"):
        load("npz", path=five, inputs="image")
    four = save(tmp_path, np.zeros((3, 2, 2, 2)), y, "four.npz")
    with pytest.raises(BenchError, match="set inputs: image or volume"):
        load("npz", path=four)
    assert load("npz", path=four, inputs="image").X.shape == (3, 2, 2, 2)  # images are read as before
    bad = np.zeros((3, 2, 2, 2))
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(BenchError, match="1 rows of X hold NaN"):
        load("npz", path=save(tmp_path, bad, y, "nan.npz"), inputs="volume")


# --- the grid ---------------------------------------------------------------------------------------------------


def grid(dataset, architecture):
    return {"datasets": [dataset], "architectures": [architecture], "defenses": ["none"], "attacks": ["loss"]}


def test_the_grid_pairs_volumes_with_cnn3d_only(tmp_path):
    volumes = {"name": "synthetic_volumes", "params": {"n_samples": 40, "size": 6}}
    assert len(expand_grid(grid(volumes, "cnn3d"), tmp_path / "g.yaml").cells) == 1
    npz_volumes = {"name": "npz", "params": {"path": "scans.npz", "inputs": "volume", "task": "regression"}}
    assert len(expand_grid(grid(npz_volumes, "cnn3d"), tmp_path / "g.yaml").cells) == 1
    with pytest.raises(BenchError, match="architecture 'cnn' takes image inputs but dataset .* gives volume inputs"):
        expand_grid(grid(volumes, "cnn"), tmp_path / "g.yaml")
    with pytest.raises(BenchError, match="architecture 'cnn3d' takes volume inputs but dataset .* gives image"):
        expand_grid(grid("digits", "cnn3d"), tmp_path / "g.yaml")
    with pytest.raises(BenchError, match="voxels exceeds"):
        expand_grid(grid({"name": "synthetic_volumes", "params": {"n_samples": 10_000_000, "size": 256}}, "cnn3d"),
                    tmp_path / "g.yaml")


def test_a_volume_cell_runs_end_to_end(tmp_path):
    content = {
        **grid({"name": "synthetic_volumes", "params": {"n_samples": 48, "size": 6}},
               {"name": "cnn3d", "params": {"channels": 4, "depth": 1}}),
        "name": "volumes", "seeds": [0],
        "protocol": {"n_models": 4, "n_targets": 2, "calibration_models": 1},
        "training": {"epochs": 3, "batch_size": 16, "lr": 0.01},
    }
    path = write_grid(tmp_path, content)
    assert main(["grid", "--grid", str(path), "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r"),
                 "--quiet", "--no-report"]) == 0
    rows = read_store(tmp_path / "r")
    assert len(rows) == 2 and set(rows["architecture"]) == {"cnn3d"} and set(rows["dataset"]) == {"synthetic_volumes"}
    samples = read_samples(tmp_path / "r")
    for (cell_key, attack_key, target), group in samples.groupby(["cell_key", "attack_key", "target"]):
        row = rows[(rows.cell_key == cell_key) & (rows.attack_key == attack_key) & (rows.target == target)]
        assert pairwise_auc(group["score"].to_numpy(), group["member"].to_numpy()) == pytest.approx(row["auc"].item())
