import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rdkit import Chem
from torch import nn

from defenses.base import Defense
from privkernel.errors import BenchError
from privkernel.registry import ARCHITECTURES
from targets import featurizers as fz
from targets.architectures import cnn, logreg, mlp, mpnn
from targets.ensemble import Ensemble
from targets.membership import membership_matrix
from tests.training import train

SMILES = ["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "C#N", "CN1CCC[C@H]1c1cccnc1", "O=C(O)c1ccccc1OC(C)=O",
          "C[N+](C)(C)C", "FC(F)(F)c1ccc(Cl)cc1"]


def inputs(kind: str, n: int = 24):
    """Model inputs of one kind as a tensor or dict of tensors, with ``input_shape`` as the pipeline gives it."""
    g = torch.Generator().manual_seed(0)
    if kind == "vector":
        X = torch.randn(n, 6, generator=g)
    elif kind == "image":
        X = torch.rand(n, 1, 8, 8, generator=g)
    elif kind == "volume":
        X = torch.rand(n, 5, 5, 5, generator=g)
    else:
        X = {k: torch.from_numpy(v) for k, v in fz.graph([SMILES[i % len(SMILES)] for i in range(n)]).items()}
    shape = {k: tuple(v.shape[1:]) for k, v in X.items()} if isinstance(X, dict) else tuple(X.shape[1:])
    return X, shape


SMALL = {"mlp": {"width": 16}, "cnn": {"channels": 8}, "cnn3d": {"channels": 4}, "mpnn": {"hidden": 16, "steps": 2}}
CASES = [
    (name, kind) for name in ARCHITECTURES.names() for kind in ARCHITECTURES.get(name).tags["accepts"]
]


def test_every_architecture_declares_what_it_accepts():
    assert {"logreg", "mlp", "cnn", "cnn3d", "mpnn"} <= set(ARCHITECTURES.names())
    assert {kind for _, kind in CASES} == {"vector", "image", "volume", "graph"}
    assert ARCHITECTURES.get("cnn").tags["accepts"] == ("image",)
    assert ARCHITECTURES.get("cnn3d").tags["accepts"] == ("volume",)
    assert ARCHITECTURES.get("mpnn").tags["accepts"] == ("graph",)


@pytest.mark.parametrize("name, kind", CASES)
def test_architecture_trains_and_predicts_as_a_vmapped_ensemble(name, kind):
    component = ARCHITECTURES.get(name)
    has_dropout = any(p.name == "dropout" for p in component.params)
    params = component.validate({**SMALL.get(name, {}), **({"dropout": 0.1} if has_dropout else {})})
    n, n_outputs, n_models = 24, 3, 3
    X, shape = inputs(kind, n)
    y = torch.arange(n) % n_outputs
    factory = lambda: component.obj(shape, n_outputs, **params)  # noqa: E731
    model = factory()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())

    ensemble = Ensemble.initialise(factory, n_models, seed=0)
    before = {k: v.clone() for k, v in ensemble.params.items()}
    keep = membership_matrix(n_models, n, seed=1)
    history = train(ensemble, X, y, keep, Defense().loss, epochs=2, batch_size=8, lr=0.01,
                             optimizer="adam", momentum=0.0, seed=2).history
    assert history.shape == (2, n_models) and np.isfinite(history).all()
    assert all(not torch.equal(before[k], v) for k, v in ensemble.params.items())  # every parameter trained

    out = ensemble.predict(X, batch_size=10)
    assert out.shape == (n_models, len(y), n_outputs) and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])  # the models are different models
    # the vmapped prediction of model m equals running model m alone
    alone = factory()
    alone.load_state_dict({k: v[1] for k, v in {**ensemble.params, **ensemble.buffers}.items()})
    alone.eval()
    with torch.no_grad():
        torch.testing.assert_close(out[1], alone(X), rtol=1e-4, atol=1e-5)


def test_regression_heads_have_one_output():
    for build, kind, params in [(mlp, "vector", (1, 8, "relu", 0.0)), (cnn, "image", (4, 1, 3, 0.0)),
                                (mpnn, "graph", (8, 1, 0.0, "sum"))]:
        X, shape = inputs(kind, 5)
        ensemble = Ensemble.initialise(lambda b=build, s=shape, p=params: b(s, 1, *p), 2, seed=0)
        assert ensemble.predict(X).shape == (2, 5, 1)


def test_shape_mismatches_are_refused_with_a_hint():
    _, graph_shape = inputs("graph", 2)
    with pytest.raises(BenchError, match="'mlp' takes vector or image inputs.*use mpnn"):
        mlp(graph_shape, 2, 1, 8, "relu", 0.0)
    with pytest.raises(BenchError, match="'logreg' takes vector or image inputs"):
        logreg(graph_shape, 2)
    with pytest.raises(BenchError, match="'mpnn' needs graph inputs"):
        mpnn((2048,), 2, 16, 2, 0.0, "mean")
    with pytest.raises(BenchError, match=r"'cnn' needs image inputs shaped \[C, H, W\]"):
        cnn((64,), 2, 8, 2, 3, 0.0)
    with pytest.raises(BenchError, match="kernel_size=4 must be odd"):
        cnn((1, 8, 8), 2, 8, 2, 4, 0.0)


def graph_tensors(mols):
    return {k: torch.from_numpy(v) for k, v in fz.graph(mols).items()}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    out = {}
    for readout in ("mean", "sum"):
        shape = {"atoms": (1, fz.ATOM_FEATURES), "mask": (1,), "bonds": (1, 3), "bond_mask": (1,)}
        model = mpnn(shape, 3, 16, 3, 0.2, readout)
        out[readout] = model.eval()  # dropout off: a deterministic function of the graph
    return out


@settings(max_examples=25, deadline=None)
@given(data=st.data(), smiles=st.sampled_from(SMILES[1:]), readout=st.sampled_from(["mean", "sum"]))
def test_mpnn_is_invariant_to_the_order_of_atoms(models, data, smiles, readout):
    mol = Chem.MolFromSmiles(smiles)
    order = data.draw(st.permutations(range(mol.GetNumAtoms())))
    renumbered = Chem.RenumberAtoms(mol, list(order))
    assert Chem.MolToSmiles(renumbered) == Chem.MolToSmiles(mol)
    with torch.no_grad():
        a = models[readout](graph_tensors([mol]))
        b = models[readout](graph_tensors([renumbered]))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("readout", ["mean", "sum"])
def test_mpnn_ignores_padded_atoms_whatever_they_hold(models, readout):
    alone = graph_tensors(["CCO"])  # 3 atoms, no padding
    padded = graph_tensors(["CCO", "CC(=O)Nc1ccc(O)cc1"])  # ethanol padded to 11 atoms
    g = torch.Generator().manual_seed(3)
    junk = {k: v.clone() for k, v in padded.items()}  # junk in ethanol's padding: the masks alone keep it out
    junk["atoms"][0, 3:] = torch.rand(junk["atoms"][0, 3:].shape, generator=g)
    junk["bonds"][0, 4:] = torch.tensor([3, 0, 1])  # padding bonds from a padding atom into a real one
    with torch.no_grad():
        reference = models[readout](alone)[0]
        torch.testing.assert_close(models[readout](padded)[0], reference, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(models[readout](junk)[0], reference, rtol=1e-4, atol=1e-5)
        # the padding does matter when it is not masked: the test would catch a model that ignored the mask
        unmasked = dict(junk, mask=torch.ones_like(junk["mask"]), bond_mask=torch.ones_like(junk["bond_mask"]))
        assert not torch.allclose(models[readout](unmasked)[0], reference, atol=1e-3)


def test_mpnn_readouts_differ_on_molecule_size():
    torch.manual_seed(0)
    shape = {"atoms": (1, fz.ATOM_FEATURES), "mask": (1,), "bonds": (1, 3), "bond_mask": (1,)}
    small, large = graph_tensors(["C"]), graph_tensors(["CCCCCCCCCC"])
    model_sum = mpnn(shape, 1, 8, 1, 0.0, "sum").eval()
    model_mean = mpnn(shape, 1, 8, 1, 0.0, "mean").eval()
    model_mean.load_state_dict(model_sum.state_dict())
    with torch.no_grad():
        # pooled state of n identical-ish atoms: sum grows with n while the mean does not, so the two differ
        assert not torch.allclose(model_sum(large), model_mean(large))
        torch.testing.assert_close(model_sum(small), model_mean(small))  # one atom: sum == mean
