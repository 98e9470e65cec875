"""Molecular featurizers built on RDKit: fingerprints (ECFP, MACCS, RDKit path) and graphs as edge lists.

Every featurizer takes a sequence of molecules, given as SMILES strings or as RDKit ``Mol`` objects, and returns
float32 arrays with one row per molecule. :func:`featurize` is the entry point used by the dataset loaders: it
parses the SMILES once (:func:`parse_smiles`), then dispatches by name through :data:`FEATURIZERS`.

Fingerprints are float32 arrays ``[N, n_bits]`` (``[N, 167]`` for MACCS) holding 0/1 bits, or occurrence counts
when ``counts`` is true. A graph is a dict of arrays padded to the largest molecule (``A`` heavy atoms;
hydrogens stay implicit and enter the atom features as a count) and its bonds (``E`` directed bonds)::

    atoms      [N, A, ATOM_FEATURES]  per-atom features (see ATOM_FEATURE_NAMES); zero rows for padding
    mask       [N, A]                 1 for a real atom, 0 for padding
    bonds      [N, E, 3]              int32 directed bonds (source, receiver, channel of BOND_TYPE_NAMES)
    bond_mask  [N, E]                 1 for a real bond, 0 for padding

(the per-record layout of :mod:`targets.graphs`).

RDKit is imported only when a molecule is parsed or featurized (inside the functions below), so that importing
this module (every ``python -m bench`` command registers the datasets that use it) costs nothing. The RDKit enums
of the graph features are built on first use by :func:`hybridizations` and :func:`bond_types`; the module
attributes ``HYBRIDIZATIONS`` and ``BOND_TYPES`` still resolve to them (lazily, through ``__getattr__``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from privkernel.errors import BenchError

if TYPE_CHECKING:
    from rdkit import Chem

log = logging.getLogger(__name__)

# --- parsing ---------------------------------------------------------------------------------------------------


def parse_smiles(
    smiles: Sequence[Any],
    *,
    row_names: Sequence[str] | None = None,
    drop_invalid: bool = False,
    source: str = "SMILES",
) -> tuple[list[Chem.Mol], np.ndarray]:
    """Parse every SMILES once; return the molecules and a boolean mask of the rows that parsed.

    A row is invalid when RDKit rejects it, when it is empty, or when it is not a string (e.g. a missing value).
    With ``drop_invalid=False`` the first invalid rows are named in a :class:`BenchError` (by ``row_names``,
    e.g. "line 7", else by their 0-based index); with ``drop_invalid=True`` they are left out, and their count
    and first rows are reported with :func:`warnings.warn` and the log.
    """
    from rdkit import Chem, rdBase

    names = list(row_names) if row_names is not None else [f"row {i}" for i in range(len(smiles))]
    if len(names) != len(smiles):
        raise ValueError(f"{len(names)} row names for {len(smiles)} SMILES")
    mols: list[Chem.Mol] = []
    ok = np.zeros(len(smiles), dtype=bool)
    bad: list[str] = []
    with rdBase.BlockLogs():  # RDKit would print one line per rejected SMILES; we report them ourselves
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s.strip() else None
            if mol is None or mol.GetNumAtoms() == 0:
                bad.append(f"{names[i]}: {s!r}")
                continue
            ok[i] = True
            mols.append(mol)
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        if not drop_invalid:
            raise BenchError(
                f"{source}: {len(bad)} of {len(smiles)} SMILES are invalid (RDKit cannot parse them) — {shown}; "
                "fix or remove those rows, or set drop_invalid: true to drop them"
            )
        notice = f"{source}: dropped {len(bad)} of {len(smiles)} rows with invalid SMILES (drop_invalid=true) — {shown}"
        log.warning(notice)
        warnings.warn(notice, stacklevel=2)
    return mols, ok


def _as_mols(molecules: Sequence[str | Chem.Mol]) -> list[Chem.Mol]:
    """Molecules as RDKit ``Mol`` objects: strings are parsed (invalid ones raise), ``Mol`` objects pass through."""
    from rdkit import Chem

    if all(isinstance(m, Chem.Mol) for m in molecules):
        return list(molecules)
    strings = [m for m in molecules if not isinstance(m, Chem.Mol)]
    parsed = iter(parse_smiles(strings)[0])
    return [m if isinstance(m, Chem.Mol) else next(parsed) for m in molecules]


# --- fingerprints ----------------------------------------------------------------------------------------------


def _generator_fingerprints(generator: Any, mols: list[Chem.Mol], n_bits: int, counts: bool) -> np.ndarray:
    out = np.zeros((len(mols), n_bits), dtype=np.float32)
    fingerprint = generator.GetCountFingerprintAsNumPy if counts else generator.GetFingerprintAsNumPy
    for i, mol in enumerate(mols):
        out[i] = fingerprint(mol)
    return out


def ecfp(molecules: Sequence[str | Chem.Mol], radius: int = 2, n_bits: int = 2048, counts: bool = False) -> np.ndarray:
    """Extended-connectivity (Morgan) fingerprints ``[N, n_bits]``: radius 2 is ECFP4, radius 3 is ECFP6."""
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return _generator_fingerprints(generator, _as_mols(molecules), n_bits, counts)


def rdkit_path(molecules: Sequence[str | Chem.Mol], n_bits: int = 2048, counts: bool = False) -> np.ndarray:
    """RDKit path (Daylight-like) fingerprints ``[N, n_bits]``: linear and branched subgraphs of 1–7 bonds."""
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetRDKitFPGenerator(fpSize=n_bits)
    return _generator_fingerprints(generator, _as_mols(molecules), n_bits, counts)


MACCS_BITS = 167


def maccs(molecules: Sequence[str | Chem.Mol]) -> np.ndarray:
    """The 166 MACCS structural keys as ``[N, 167]`` bits (RDKit's numbering: bit 0 is unused and always 0)."""
    from rdkit.Chem import MACCSkeys

    mols = _as_mols(molecules)
    out = np.zeros((len(mols), MACCS_BITS), dtype=np.float32)
    for i, mol in enumerate(mols):
        out[i, list(MACCSkeys.GenMACCSKeys(mol).GetOnBits())] = 1.0
    return out


# --- graphs ----------------------------------------------------------------------------------------------------

#: Elements with their own one-hot slot; any other element sets the "other" slot.
ELEMENTS = ("C", "N", "O", "S", "F", "Cl", "Br", "I", "P", "B", "Si", "Se")
DEGREES = (0, 1, 2, 3, 4, 5)  # 5 means "5 or more"
FORMAL_CHARGES = (-1, 0, 1)  # plus an "other" slot
#: Names of the ``rdkit.Chem.rdchem.HybridizationType`` members with their own slot (:func:`hybridizations`).
HYBRIDIZATION_NAMES = ("SP", "SP2", "SP3")  # plus an "other" slot (S, SP3D, SP3D2, unspecified …)
NUM_HS = (0, 1, 2, 3, 4)  # 4 means "4 or more"

#: Bond types (the third entry of a directed bond), as names of ``rdkit.Chem.rdchem.BondType`` members
#: (:func:`bond_types`); any other bond type (dative, zero-order …) is counted as single.
BOND_TYPE_NAMES = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")


@cache
def hybridizations() -> tuple[Chem.rdchem.HybridizationType, ...]:
    """The RDKit hybridization types with their own one-hot slot, in the order of :data:`HYBRIDIZATION_NAMES`."""
    from rdkit import Chem

    return tuple(getattr(Chem.rdchem.HybridizationType, name) for name in HYBRIDIZATION_NAMES)


@cache
def bond_types() -> tuple[Chem.rdchem.BondType, ...]:
    """The RDKit bond types, in the order of :data:`BOND_TYPE_NAMES`."""
    from rdkit import Chem

    return tuple(getattr(Chem.rdchem.BondType, name) for name in BOND_TYPE_NAMES)


@cache
def _hybrid_index() -> dict[Chem.rdchem.HybridizationType, int]:
    return {h: i for i, h in enumerate(hybridizations())}


@cache
def _bond_index() -> dict[Chem.rdchem.BondType, int]:
    return {b: i for i, b in enumerate(bond_types())}


_LAZY = {"HYBRIDIZATIONS": hybridizations, "BOND_TYPES": bond_types}


def __getattr__(name: str) -> Any:
    """``HYBRIDIZATIONS`` and ``BOND_TYPES``, the RDKit enums, built (importing RDKit) on first access."""
    if name in _LAZY:
        return _LAZY[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

ATOM_FEATURE_NAMES: tuple[str, ...] = (
    *(f"element={e}" for e in ELEMENTS),
    "element=other",
    *(f"degree={d}" for d in DEGREES[:-1]),
    f"degree>={DEGREES[-1]}",
    *(f"charge={c:+d}" for c in FORMAL_CHARGES),
    "charge=other",
    "aromatic",
    *(f"hybridization={h}" for h in HYBRIDIZATION_NAMES),
    "hybridization=other",
    *(f"num_hs={h}" for h in NUM_HS[:-1]),
    f"num_hs>={NUM_HS[-1]}",
)
ATOM_FEATURES = len(ATOM_FEATURE_NAMES)

_ELEMENT_INDEX = {e: i for i, e in enumerate(ELEMENTS)}
_CHARGE_INDEX = {c: i for i, c in enumerate(FORMAL_CHARGES)}


def atom_features(atom: Chem.Atom) -> np.ndarray:
    """One atom's feature vector (``ATOM_FEATURES`` floats, named by :data:`ATOM_FEATURE_NAMES`)."""
    blocks = (
        (_ELEMENT_INDEX.get(atom.GetSymbol(), len(ELEMENTS)), len(ELEMENTS) + 1),
        (min(atom.GetDegree(), DEGREES[-1]), len(DEGREES)),
        (_CHARGE_INDEX.get(atom.GetFormalCharge(), len(FORMAL_CHARGES)), len(FORMAL_CHARGES) + 1),
        (int(atom.GetIsAromatic()), None),
        (_hybrid_index().get(atom.GetHybridization(), len(HYBRIDIZATION_NAMES)), len(HYBRIDIZATION_NAMES) + 1),
        (min(atom.GetTotalNumHs(), NUM_HS[-1]), len(NUM_HS)),
    )
    parts = []
    for value, width in blocks:
        if width is None:  # a plain flag
            parts.append(np.array([value], dtype=np.float32))
        else:
            one_hot = np.zeros(width, dtype=np.float32)
            one_hot[value] = 1.0
            parts.append(one_hot)
    return np.concatenate(parts)


def graph(molecules: Sequence[str | Chem.Mol]) -> dict[str, np.ndarray]:
    """Molecular graphs as padded edge lists (the per-record layout of :mod:`targets.graphs`):
    ``{"atoms": [N, A, F], "mask": [N, A], "bonds": [N, E, 3], "bond_mask": [N, E]}``.

    Every chemical bond gives two directed bonds, (a, b) and (b, a), each ``(source, receiver, type)`` with the
    type's channel of :data:`BOND_TYPE_NAMES`, in RDKit's bond order; a molecule's atoms and bonds come first in
    their rows and the rest is padding (zeros, mask 0). ``A`` is the largest molecule's heavy atoms and ``E`` its
    largest number of directed bonds.
    """
    mols = _as_mols(molecules)
    n_atoms = max((m.GetNumAtoms() for m in mols), default=0)
    n_bonds = max((2 * m.GetNumBonds() for m in mols), default=0)
    atoms = np.zeros((len(mols), n_atoms, ATOM_FEATURES), dtype=np.float32)
    mask = np.zeros((len(mols), n_atoms), dtype=np.float32)
    bonds = np.zeros((len(mols), n_bonds, 3), dtype=np.int32)
    bond_mask = np.zeros((len(mols), n_bonds), dtype=np.float32)
    bond_index = _bond_index()
    single = BOND_TYPE_NAMES.index("SINGLE")
    for i, mol in enumerate(mols):
        for atom in mol.GetAtoms():
            atoms[i, atom.GetIdx()] = atom_features(atom)
        mask[i, : mol.GetNumAtoms()] = 1.0
        for e, bond in enumerate(mol.GetBonds()):
            a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            channel = bond_index.get(bond.GetBondType(), single)
            bonds[i, 2 * e] = (a, b, channel)
            bonds[i, 2 * e + 1] = (b, a, channel)
        bond_mask[i, : 2 * mol.GetNumBonds()] = 1.0
    return {"atoms": atoms, "mask": mask, "bonds": bonds, "bond_mask": bond_mask}


# --- dispatch --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Featurizer:
    """A named featurization of parsed molecules: ``fn(mols, n_bits, counts)`` and the input kind it yields."""

    fn: Callable[[list[Chem.Mol], int, bool], np.ndarray | dict[str, np.ndarray]]
    inputs: str
    description: str
    #: Enters the features' cache key from 2 on: bump it when the arrays the featurizer gives change (2: graphs
    #: as edge lists instead of a dense adjacency).
    version: int = 1


FEATURIZERS: dict[str, Featurizer] = {
    "ecfp4": Featurizer(lambda m, n, c: ecfp(m, 2, n, c), "vector", "Morgan fingerprint, radius 2 (ECFP4)"),
    "ecfp6": Featurizer(lambda m, n, c: ecfp(m, 3, n, c), "vector", "Morgan fingerprint, radius 3 (ECFP6)"),
    "maccs": Featurizer(lambda m, n, c: maccs(m), "vector", "166 MACCS keys (n_bits and counts ignored)"),
    "rdkit_path": Featurizer(lambda m, n, c: rdkit_path(m, n, c), "vector", "RDKit path fingerprint"),
    "graph": Featurizer(lambda m, n, c: graph(m), "graph", "molecular graph as edge lists (n_bits and counts ignored)",
                        version=2),
}


def featurize(
    smiles: Sequence[Any],
    features: str = "ecfp4",
    n_bits: int = 2048,
    counts: bool = False,
    *,
    row_names: Sequence[str] | None = None,
    drop_invalid: bool = False,
    source: str = "SMILES",
) -> tuple[np.ndarray | dict[str, np.ndarray], np.ndarray]:
    """Parse ``smiles`` once and featurize it with :data:`FEATURIZERS` ``[features]``.

    Returns the features of the valid rows and the boolean mask of those rows in ``smiles`` (all true unless
    ``drop_invalid`` dropped some; see :func:`parse_smiles` for how invalid rows are reported).
    """
    try:
        featurizer = FEATURIZERS[features]
    except KeyError:
        raise BenchError(f"unknown molecular features {features!r}; choose one of {', '.join(FEATURIZERS)}") from None
    mols, ok = parse_smiles(smiles, row_names=row_names, drop_invalid=drop_invalid, source=source)
    if not mols:
        raise BenchError(f"{source}: no valid molecule left to featurize; check the SMILES column")
    return featurizer.fn(mols, n_bits, counts), ok
