"""Message passing over edge lists against a known answer: the dense-adjacency MPNN that privbench ran before.

``dense_forward`` is that implementation, kept here as the slow reference: it runs the same parameters over the
``[N, A, A, K]`` adjacency. The edge-list MPNN must give its outputs and its per-sample gradient norms to 1e-5 on
real molecules, packed or padded; DP-SGD's chunked per-sample step must not depend on the chunk and must equal
Opacus' DPOptimizer fed the reference's per-sample gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from opacus.optimizers import DPOptimizer

from defenses.base import Defense
from defenses.dpsgd import draw_noise, private_gradients, vmap_clipped_sum
from privkernel.errors import BenchError
from privkernel.memory import ENV, HOST_CAP, memory_budget, parse_size
from targets import featurizers as fz
from targets.architectures import mpnn
from targets.ensemble import Ensemble, records_within, take
from targets.graphs import pack, pack_padded, trim

#: Molecules with rings, charges, salts (disconnected), triple and double bonds, a single atom and a large one.
MOLECULES = [
    "CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C#N", "[Na+].[Cl-]", "C", "C[N+](C)(C)C", "O=C(O)c1ccccc1OC(C)=O",
    "CN1CCC[C@H]1c1cccnc1", "Clc1ccc(cc1)C(c1ccccc1)N1CCN(CC1)CCOCC(=O)O", "S=C=S", "FC(F)(F)c1ccc(Br)cc1",
]


def graphs(smiles=MOLECULES) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in fz.graph(smiles).items()}


def dense_adjacency(g: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[N, A, A, K]`` with entry ``[n, receiver, source, type]`` 1 for each real directed bond."""
    n, a = g["mask"].shape
    out = torch.zeros(n, a, a, len(fz.BOND_TYPE_NAMES))
    for i in range(n):
        for (source, receiver, kind), real in zip(g["bonds"][i].tolist(), g["bond_mask"][i].tolist(), strict=True):
            out[i, receiver, source, kind] += real
    return out


def dense_forward(model, atoms: torch.Tensor, adjacency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The dense padded MPNN of privbench before edge lists, on ``model``'s parameters (eval mode)."""
    keep = mask.unsqueeze(-1)
    adjacency = adjacency * mask[..., :, None, None] * mask[..., None, :, None]
    h = torch.relu(model.embed(atoms)) * keep
    for weight, update, norm in zip(model.message, model.update, model.norm, strict=True):
        per_type = torch.einsum("bjh,khg->bjkg", h, weight)
        incoming = torch.einsum("bijk,bjkg->big", adjacency, per_type)
        h = norm(h + torch.relu(update(h) + incoming)) * keep
    pooled = h.sum(dim=-2)
    if model.readout == "mean":
        pooled = pooled / mask.sum(dim=-1, keepdim=True).clamp_min(1.0)
    return model.head(pooled)


def model(readout: str, n_outputs: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    shape = {"atoms": (1, fz.ATOM_FEATURES), "mask": (1,), "bonds": (1, 3), "bond_mask": (1,)}
    return mpnn(shape, n_outputs, 16, 3, 0.0, readout).eval()


def per_sample_gradients(net, forward, y) -> list[dict[str, torch.Tensor]]:
    """Each record's gradient of its cross-entropy, one autograd call per record (``forward(i)`` → logits)."""
    out = []
    for i in range(len(y)):
        loss = F.cross_entropy(forward(i), y[i : i + 1])
        grads = torch.autograd.grad(loss, list(net.parameters()))
        out.append({name: g for (name, _), g in zip(net.named_parameters(), grads, strict=True)})
    return out


@pytest.mark.parametrize("readout", ["mean", "sum"])
def test_outputs_equal_the_dense_implementation(readout):
    g, net = graphs(), model(readout)
    adjacency = dense_adjacency(g)
    with torch.no_grad():
        expected = dense_forward(net, g["atoms"], adjacency, g["mask"])
        for got in (net(g), net(pack(g, 1)), net(trim(g)), net(pack_padded(g))):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert expected.std(0).min() > 1e-3  # the molecules give different outputs: the comparison has teeth


@pytest.mark.parametrize("readout", ["mean", "sum"])
def test_per_sample_gradient_norms_equal_the_dense_implementation(readout):
    g, net = graphs(), model(readout)
    y = torch.arange(len(MOLECULES)) % 2
    adjacency = dense_adjacency(g)
    one = lambda i: {k: v[i : i + 1] for k, v in g.items()}  # noqa: E731
    sparse = per_sample_gradients(net, lambda i: net(one(i)), y)
    dense = per_sample_gradients(
        net, lambda i: dense_forward(net, g["atoms"][i : i + 1], adjacency[i : i + 1], g["mask"][i : i + 1]), y)
    norm = lambda gs: torch.stack([torch.cat([v.flatten() for v in s.values()]).norm() for s in gs])  # noqa: E731
    torch.testing.assert_close(norm(sparse), norm(dense), rtol=1e-5, atol=1e-6)
    for s, d in zip(sparse, dense, strict=True):
        for k in s:
            torch.testing.assert_close(s[k], d[k], rtol=1e-4, atol=1e-6)


def test_stacked_models_on_packed_batches_equal_each_model_on_its_own_records():
    """The ensemble packs every model's batch without padding and pads the packs to the largest; each model's
    outputs equal that model alone on its own records, per-record layout."""
    g = graphs()
    ensemble = Ensemble.initialise(lambda: model("mean"), 3, seed=4)
    index = torch.tensor([[0, 1, 2, 3], [9, 4, 5, 11], [5, 5, 10, 6]])  # batches of different atom counts
    x = take(g, index)
    packed = pack(x, 2)
    assert packed["atoms"].shape[1] == int(x["mask"].sum((1, 2)).max())  # no padding beyond the largest batch
    out = ensemble.forward(x, training=False)
    for m in range(3):
        alone = torch.func.functional_call(ensemble.template, {k: v[m] for k, v in ensemble.params.items()},
                                           (take(g, index[m]),))
        torch.testing.assert_close(out[m], alone, rtol=1e-5, atol=1e-6)
    predicted = ensemble.predict(g, batch_size=5)  # shared records, packed in chunks
    for m in range(3):
        alone = torch.func.functional_call(ensemble.template, {k: v[m] for k, v in ensemble.params.items()}, (g,))
        torch.testing.assert_close(predicted[m], alone, rtol=1e-5, atol=1e-6)


def test_chunked_per_sample_gradients_do_not_depend_on_the_chunk():
    g = graphs()
    ensemble = Ensemble.initialise(lambda: model("sum", seed=1), 2, seed=2)
    index = torch.tensor([list(range(12)), list(range(11, -1, -1))])
    x, y = take(g, index), (index % 2)
    weights = torch.ones(2, 12)
    weights[1, 9:] = 0.0
    loss = Defense().loss
    results = [vmap_clipped_sum(ensemble, x, y, weights, loss, 0.5, chunk=c) for c in (1, 5, 12)]
    for summed, losses in results[1:]:
        for k in summed:
            torch.testing.assert_close(summed[k], results[0][0][k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(losses, results[0][1])
    assert all(v.abs().sum() > 0 for v in results[0][0].values())
    with torch.no_grad():  # the losses come back in the batch's order, though the molecules are taken by size
        direct = F.cross_entropy(ensemble.forward(x).flatten(0, 1), y.flatten(), reduction="none").view(2, 12)
    torch.testing.assert_close(results[0][1], direct, rtol=1e-5, atol=1e-6)


def test_a_dp_step_equals_opacus_fed_the_dense_per_sample_gradients():
    """One model, real molecules: our DP-SGD step (edge lists, chunked per-sample gradients) equals Opacus'
    DPOptimizer given the dense reference's per-sample gradients as ``grad_sample``, with the same noise."""
    g = graphs()
    y = torch.arange(len(MOLECULES)) % 2
    sigma, C, expected, lr = 0.6, 0.05, 10.0, 0.1
    ensemble = Ensemble.initialise(lambda: model("mean", seed=3), 1, seed=3)
    net = model("mean")
    net.load_state_dict({k: v[0].detach() for k, v in ensemble.params.items()})
    adjacency = dense_adjacency(g)
    grads = per_sample_gradients(
        net, lambda i: dense_forward(net, g["atoms"][i : i + 1], adjacency[i : i + 1], g["mask"][i : i + 1]), y)
    params = dict(net.named_parameters())
    for name, p in params.items():
        p.grad_sample = torch.stack([s[name] for s in grads])
    norms = torch.stack([torch.cat([v.flatten() for v in s.values()]).norm() for s in grads])
    assert (norms > C).all()  # every sample is clipped
    opt = DPOptimizer(torch.optim.SGD(net.parameters(), lr=lr), noise_multiplier=sigma, max_grad_norm=C,
                      expected_batch_size=int(expected), generator=torch.Generator().manual_seed(9))
    opt.step()
    noise = draw_noise({k: v[0] for k, v in ensemble.params.items()}, sigma * C, torch.Generator().manual_seed(9))
    ours, _ = private_gradients(ensemble, take(g, torch.arange(12)[None]), y[None], torch.ones(1, 12),
                                Defense().loss, max_grad_norm=C, noise_multiplier=sigma,
                                expected_batch_size=torch.tensor([expected]),
                                noise={k: v[None] for k, v in noise.items()}, method="vmap")
    before = {k: v[0].detach() for k, v in ensemble.params.items()}
    for name, p in params.items():
        torch.testing.assert_close(before[name] - lr * ours[name][0], p.detach(), rtol=0, atol=1e-6)


def test_records_within_a_budget_shrink_with_it():
    g = graphs()
    ensemble = Ensemble.initialise(lambda: model("mean"), 4, seed=0)
    big = records_within(ensemble, g, 1 << 30, per_sample_gradients=True)
    small = records_within(ensemble, g, 1 << 20, per_sample_gradients=True)
    assert big > 100 * small >= 100
    assert records_within(ensemble, g, 1) == 1  # never less than one record


def test_memory_budget_sizes(monkeypatch):
    assert parse_size("512M") == 512 << 20 and parse_size("1.5G") == 3 << 29 and parse_size("4GiB") == 4 << 30
    assert parse_size("1000") == 1000
    for bad in ("", "-1G", "lots", "0"):
        with pytest.raises(BenchError, match="not a positive size; write it like 512M"):
            parse_size(bad)
    monkeypatch.setenv(ENV, "3G")
    assert memory_budget() == 3 << 30
    monkeypatch.delenv(ENV)
    assert 0 < memory_budget() <= HOST_CAP


def test_features_cached_before_edge_lists_are_refused_with_a_hint():
    with pytest.raises(BenchError, match="needs graph inputs.*features: graph"):
        mpnn({"atoms": (3, 5), "bonds": (3, 3, 4), "mask": (3,)}, 2, 8, 1, 0.0, "mean")
    assert np.prod(graphs()["bonds"].shape[1:]) < np.prod(dense_adjacency(graphs()).shape[1:])
