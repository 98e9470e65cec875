import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import AllChem, MACCSkeys

from privkernel.errors import BenchError
from targets import featurizers as fz

MOLECULES = ["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "CN1CCC[C@H]1c1cccnc1", "O=C(O)c1ccccc1OC(C)=O"]


def bits_of(fp) -> np.ndarray:
    out = np.zeros(fp.GetNumBits(), dtype=np.float32)
    DataStructs.ConvertToNumpyArray(fp, out)
    return out


@pytest.mark.parametrize("radius", [2, 3])
def test_ecfp_equals_rdkits_own_morgan_fingerprint(radius):
    ours = fz.ecfp(MOLECULES, radius=radius, n_bits=1024)
    assert ours.shape == (len(MOLECULES), 1024) and ours.dtype == np.float32
    for row, smiles in zip(ours, MOLECULES, strict=True):
        reference = AllChem.GetMorganFingerprintAsBitVect(Chem.MolFromSmiles(smiles), radius, nBits=1024)
        np.testing.assert_array_equal(row, bits_of(reference))


def test_ecfp6_differs_from_ecfp4_and_counts_dominate_bits():
    ecfp4, ecfp6 = fz.ecfp(MOLECULES, 2), fz.ecfp(MOLECULES, 3)
    assert (ecfp6.sum(1) >= ecfp4.sum(1)).all() and not np.array_equal(ecfp4, ecfp6)
    counts = fz.ecfp(MOLECULES, 2, counts=True)
    assert (counts >= ecfp4).all()
    np.testing.assert_array_equal(counts > 0, ecfp4 > 0)  # same hashed environments, only counted
    benzene = counts[1]
    assert benzene.max() == 6  # the six identical aromatic CH environments at radius 0


def test_maccs_and_path_fingerprints_equal_rdkits_own():
    mols = [Chem.MolFromSmiles(s) for s in MOLECULES]
    maccs = fz.maccs(mols)
    assert maccs.shape == (len(mols), 167)
    path = fz.rdkit_path(mols, n_bits=2048)
    for m, mol in enumerate(mols):
        np.testing.assert_array_equal(maccs[m], bits_of(MACCSkeys.GenMACCSKeys(mol)))
        np.testing.assert_array_equal(path[m], bits_of(Chem.RDKFingerprint(mol, fpSize=2048)))


def feature(name: str) -> int:
    return fz.ATOM_FEATURE_NAMES.index(name)


def adjacency(g: dict[str, np.ndarray]) -> np.ndarray:
    """The dense adjacency ``[N, A, A, K]`` of edge-list graphs (entry ``[n, source, receiver, type]``)."""
    n, a = g["mask"].shape
    out = np.zeros((n, a, a, len(fz.BOND_TYPE_NAMES)), dtype=np.float32)
    for i in range(n):
        for (source, receiver, kind), real in zip(g["bonds"][i], g["bond_mask"][i], strict=True):
            out[i, source, receiver, kind] += real
    return out


def test_graph_of_ethanol_and_benzene_by_hand():
    g = fz.graph(["CCO", "c1ccccc1"])
    assert set(g) == {"atoms", "mask", "bonds", "bond_mask"} and g["bonds"].dtype == np.int32
    assert all(g[k].dtype == np.float32 for k in ("atoms", "mask", "bond_mask"))
    assert g["atoms"].shape == (2, 6, fz.ATOM_FEATURES)  # padded to benzene's 6 heavy atoms
    assert g["bonds"].shape == (2, 12, 3)  # benzene's 6 bonds, both ways
    np.testing.assert_array_equal(g["mask"], [[1, 1, 1, 0, 0, 0], [1] * 6])
    np.testing.assert_array_equal(g["bond_mask"], [[1] * 4 + [0] * 8, [1] * 12])
    assert (g["bonds"][0, 4:] == 0).all()  # padding bonds are zeros
    single, double, triple, aromatic = range(4)

    atoms, bonds = g["atoms"][0], adjacency(g)[0]
    assert atoms[3:].sum() == 0 and bonds[3:].sum() == 0 and bonds[:, 3:].sum() == 0  # padding is empty
    for i, element in enumerate("CCO"):
        assert atoms[i, feature(f"element={element}")] == 1
    np.testing.assert_array_equal(atoms[:, feature("num_hs=3")], [1, 0, 0, 0, 0, 0])  # CH3
    np.testing.assert_array_equal(atoms[:, feature("num_hs=2")], [0, 1, 0, 0, 0, 0])  # CH2
    np.testing.assert_array_equal(atoms[:, feature("num_hs=1")], [0, 0, 1, 0, 0, 0])  # OH
    np.testing.assert_array_equal(atoms[:3, feature("degree=1")], [1, 0, 1])
    assert atoms[:3, feature("hybridization=SP3")].sum() == 3 and atoms[:, feature("aromatic")].sum() == 0
    assert bonds[0, 1, single] == bonds[1, 0, single] == bonds[1, 2, single] == bonds[2, 1, single] == 1
    assert bonds[..., single].sum() == 4 and bonds[..., [double, triple, aromatic]].sum() == 0
    assert all(atoms[i].sum() == 5 for i in range(3))  # one slot in each of the 5 one-hot blocks, aromatic off

    atoms, bonds = g["atoms"][1], adjacency(g)[1]
    assert (atoms[:, feature("element=C")] == 1).all() and (atoms[:, feature("aromatic")] == 1).all()
    assert (atoms[:, feature("degree=2")] == 1).all() and (atoms[:, feature("num_hs=1")] == 1).all()
    assert (atoms[:, feature("hybridization=SP2")] == 1).all()
    assert bonds[..., aromatic].sum() == 12 and bonds[..., [single, double, triple]].sum() == 0  # 6 bonds, both ways
    np.testing.assert_array_equal(bonds, bonds.transpose(1, 0, 2))
    assert (bonds[..., aromatic].sum(1) == 2).all()  # a ring: two neighbours each


def test_graph_charges_elements_outside_the_list_and_bond_orders():
    g = fz.graph(["C[N+](C)(C)C", "[Na+].[Cl-]", "C#N", "C=O"])
    assert g["atoms"][0, 1, feature("charge=+1")] == 1 and g["atoms"][0, 1, feature("degree=4")] == 1
    assert g["atoms"][1, 0, feature("element=other")] == 1 and g["atoms"][1, 1, feature("element=Cl")] == 1
    assert g["atoms"][1, 1, feature("charge=-1")] == 1
    dense = adjacency(g)
    assert dense[1].sum() == 0 and g["bond_mask"][1].sum() == 0  # a salt: two disconnected ions
    assert dense[2, 0, 1, 2] == dense[2, 1, 0, 2] == 1 and dense[3, 0, 1, 1] == 1  # triple, double


def test_invalid_smiles_are_named_or_dropped_and_counted():
    smiles = ["CCO", "C1CC", "c1ccccc1", "not a molecule", ""]
    with pytest.raises(BenchError) as err:
        fz.parse_smiles(smiles, row_names=[f"line {i + 2}" for i in range(5)], source="data.csv")
    message = str(err.value)
    assert "3 of 5 SMILES are invalid" in message and "line 3: 'C1CC'" in message
    assert "line 5: 'not a molecule'" in message and "line 6: ''" in message and "drop_invalid" in message
    with pytest.warns(UserWarning, match="dropped 3 of 5 rows"):
        mols, ok = fz.parse_smiles(smiles, drop_invalid=True)
    np.testing.assert_array_equal(ok, [True, False, True, False, False])
    assert [m.GetNumAtoms() for m in mols] == [3, 6]


def test_featurize_dispatches_by_name_and_keeps_row_alignment():
    assert set(fz.FEATURIZERS) == {"ecfp4", "ecfp6", "maccs", "rdkit_path", "graph"}
    X, ok = fz.featurize(MOLECULES, "ecfp6", n_bits=512)
    np.testing.assert_array_equal(X, fz.ecfp(MOLECULES, 3, 512))
    assert ok.all()
    X, ok = fz.featurize(MOLECULES, "rdkit_path", n_bits=256, counts=True)
    assert X.shape == (5, 256) and X.max() > 1
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        g, ok = fz.featurize(["CCO", "C1CC", "c1ccccc1"], "graph", drop_invalid=True)
    assert g["atoms"].shape[0] == 2 and ok.tolist() == [True, False, True]
    np.testing.assert_array_equal(g["mask"].sum(1), [3, 6])
    with pytest.raises(BenchError, match="unknown molecular features 'ecfp5'"):
        fz.featurize(MOLECULES, "ecfp5")
    with pytest.raises(BenchError, match="no valid molecule"), pytest.warns(UserWarning, match="dropped 1 of 1"):
        fz.featurize(["C1CC"], drop_invalid=True)
