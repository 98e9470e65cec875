"""White-box features (targets.white_box) against a slow reference: one model, one record, plain autograd."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from targets.architectures import cnn, logreg, mlp, mpnn
from targets.ensemble import Ensemble, take
from targets.graphs import from_dense
from targets.white_box import ACTIVATION_TYPES, feature_names, parameter_groups, white_box_features


def reference_features(factory: Callable[[], nn.Module], ensemble: Ensemble, X, y: torch.Tensor) -> np.ndarray:
    """A Python loop over models and records: ``loss.backward()`` on one record, then norms per owning module
    (a ``ParameterList``'s entries one by one) and of every activation module's output, captured by hooks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one-record ops are far slower multi-threaded on a busy CPU
    try:
        return _reference_loop(factory, ensemble, X, y)
    finally:
        torch.set_num_threads(threads)


def _reference_loop(factory: Callable[[], nn.Module], ensemble: Ensemble, X, y: torch.Tensor) -> np.ndarray:
    n = len(y)
    rows = []
    for m in range(ensemble.n_models):
        model = factory()
        model.load_state_dict({k: v[m] for k, v in {**ensemble.params, **ensemble.buffers}.items()})
        model.eval()
        outputs: dict[str, list[torch.Tensor]] = {}
        for name, module in model.named_modules():
            if isinstance(module, ACTIVATION_TYPES):
                outputs[name] = []
                module.register_forward_hook(lambda mod, inp, out, seen=outputs[name]: seen.append(out.detach()))
        per_record = []
        for i in range(n):
            for captured in outputs.values():
                captured.clear()
            model.zero_grad(set_to_none=True)
            out = model(take(X, slice(i, i + 1)))
            label = y[i : i + 1]
            loss = ((out[:, 0] - label) ** 2).sum() if label.is_floating_point() else F.cross_entropy(out, label)
            loss.backward()
            row = [loss.item()]
            squares = []
            for module in model.modules():
                if isinstance(module, nn.ParameterList):
                    squares += [p.grad.pow(2).sum().item() for p in module]
                elif next(module.children(), None) is None:
                    own = list(module.parameters(recurse=False))
                    if own:
                        squares.append(sum(p.grad.pow(2).sum().item() for p in own))
            row += [np.sqrt(s) for s in squares] + [np.sqrt(sum(squares))]
            row += [np.sqrt(sum(o.pow(2).sum().item() for o in outs)) for outs in outputs.values()]
            per_record.append(row)
        rows.append(per_record)
    return np.array(rows)


def _graphs(n: int, atoms: int = 5, features: int = 4, bond_types: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, atoms, generator=g) < 0.8).float()
    mask[:, 0] = 1.0
    bonds = (torch.rand(n, atoms, atoms, bond_types, generator=g) < 0.3).float()
    return from_dense(torch.randn(n, atoms, features, generator=g), bonds, mask)


GRAPH_SHAPE = {"atoms": (5, 4), "mask": (5,), "bonds": (50, 3), "bond_mask": (50,)}
CASES = {
    "mlp-classification": (lambda: mlp((6,), 3, depth=2, width=8, activation="relu", dropout=0.5), "vector", 3),
    "mlp-tanh-regression": (lambda: mlp((6,), 1, depth=2, width=8, activation="tanh", dropout=0.0), "vector", 0),
    "mlp-gelu": (lambda: mlp((6,), 3, depth=1, width=5, activation="gelu", dropout=0.0), "vector", 3),
    "logreg": (lambda: logreg((6,), 3), "vector", 3),
    "cnn": (lambda: cnn((2, 5, 5), 3, channels=4, depth=2, kernel_size=3, dropout=0.3), "image", 3),
    "mpnn-regression": (lambda: mpnn(GRAPH_SHAPE, 1, hidden=6, steps=2,
                                     dropout=0.3, readout="mean"), "graph", 0),
    "mpnn-classification": (lambda: mpnn(GRAPH_SHAPE, 2, hidden=6,
                                         steps=1, dropout=0.0, readout="sum"), "graph", 2),
}


def _inputs(kind: str, n: int, n_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if kind == "graph":
        X = _graphs(n, seed=seed)
    else:
        X = torch.randn(n, *((6,) if kind == "vector" else (2, 5, 5)), generator=g)
    y = torch.randint(n_classes, (n,), generator=g) if n_classes else torch.randn(n, generator=g)
    return X, y


@pytest.mark.parametrize("case", list(CASES))
def test_features_equal_a_per_record_autograd_loop(case):
    factory, kind, n_classes = CASES[case]
    ensemble = Ensemble.initialise(factory, 3, seed=1)
    X, y = _inputs(kind, 7, n_classes)
    features, names = white_box_features(ensemble, X, y)
    expected = reference_features(factory, ensemble, X, y)
    assert features.dtype == np.float32 and features.shape == (3, 7, len(names)) == expected.shape
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-6)
    assert names == feature_names(ensemble.template)


def test_names_match_the_columns():
    factory, kind, n_classes = CASES["mlp-classification"]
    ensemble = Ensemble.initialise(factory, 2, seed=0)
    _, names = white_box_features(ensemble, *_inputs(kind, 4, n_classes))
    # Sequential: Flatten, Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
    assert names == ("loss", "grad_norm.1", "grad_norm.4", "grad_norm.7", "grad_norm.total",
                     "activation_norm.2", "activation_norm.5")
    graph = Ensemble.initialise(CASES["mpnn-regression"][0], 2, seed=0)
    _, names = white_box_features(graph, *_inputs("graph", 3, 0))
    assert names == ("loss", "grad_norm.embed", "grad_norm.message.0", "grad_norm.message.1", "grad_norm.update.0",
                     "grad_norm.update.1", "grad_norm.norm.0", "grad_norm.norm.1", "grad_norm.head.0",
                     "grad_norm.head.3", "grad_norm.total", "activation_norm.head.1")
    assert parameter_groups(graph.template)["grad_norm.head.0"[len("grad_norm."):]] == ["head.0.weight", "head.0.bias"]


@pytest.mark.parametrize("case", ["mlp-classification", "mpnn-regression"])
def test_chunking_does_not_change_the_result(case):
    factory, kind, n_classes = CASES[case]
    ensemble = Ensemble.initialise(factory, 3, seed=2)
    X, y = _inputs(kind, 9, n_classes, seed=3)
    whole, names = white_box_features(ensemble, X, y)
    n_params = sum(v[0].numel() for v in ensemble.params.values())
    for max_elements in (2 * n_params, 7 * n_params):  # 2 models × 1 record; 3 models × 2 records (remainders)
        chunked, chunked_names = white_box_features(ensemble, X, y, max_elements=max_elements)
        np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-7)
        assert chunked_names == names


def test_dropout_is_inactive_and_the_training_flag_restored():
    factory, kind, n_classes = CASES["mlp-classification"]
    ensemble = Ensemble.initialise(factory, 2, seed=0)
    ensemble.template.train()
    X, y = _inputs(kind, 5, n_classes)
    first, _ = white_box_features(ensemble, X, y)
    np.testing.assert_array_equal(first, white_box_features(ensemble, X, y)[0])
    assert ensemble.template.training
    loss = F.cross_entropy(ensemble.predict(X)[0], y, reduction="none")  # evaluation mode, dropout off
    np.testing.assert_allclose(first[0, :, 0], loss.numpy(), rtol=1e-5)


def test_bad_labels_are_refused():
    factory, kind, n_classes = CASES["logreg"]
    ensemble = Ensemble.initialise(factory, 2, seed=0)
    X, y = _inputs(kind, 5, n_classes)
    with pytest.raises(ValueError, match="one label per record"):
        white_box_features(ensemble, X, y[:4])
    with pytest.raises(ValueError, match="max_elements"):
        white_box_features(ensemble, X, y, max_elements=0)
