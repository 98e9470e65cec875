"""Molecular graphs as edge lists: the stored per-record layout and the packed batch that message passing runs on.

A dataset stores graphs per record, padded so that every array has the records as its first dimension (what the
pipeline indexes, caches and splits; see :func:`targets.featurizers.graph`)::

    atoms      [N, A, F]  float  atom features, a molecule's atoms first (rows beyond its atoms are zero)
    mask       [N, A]     float  1 for an atom, 0 for padding
    bonds      [N, E, 3]  int    directed bonds (source atom, receiving atom, bond type), a molecule's bonds first
    bond_mask  [N, E]     float  1 for a bond, 0 for padding

``A`` is the largest molecule's atoms and ``E`` its largest number of directed bonds (two per chemical bond), so
a record costs ``A·F + 4E`` numbers instead of the ``A²·K`` of a dense adjacency.

Message passing runs on a *packed* batch: the graphs of a batch concatenated into one graph, as PyTorch Geometric
batches them::

    atoms      [T, F]     the atoms of every graph, one after another
    graph      [T]        int  the graph of each atom (0 … G-1), or G for a padding atom
    bonds      [S, 3]     int  (source, receiver, type) with atom indices into the T atoms
    bond_mask  [S]        1 for a bond, 0 for padding (a padding bond joins atom 0 to itself)
    size       [G]        atoms per graph

:func:`pack` builds it without padding (outside ``vmap``: its sizes depend on the data; stacked models' batches
are padded to the largest); :func:`pack_padded` builds it with every record's padding kept (fixed sizes, so it runs
under ``vmap``, for example over the samples of a per-sample gradient). Both give the same outputs, to float
rounding.
"""

from __future__ import annotations

from collections.abc import Mapping

from privkernel.lazy import lazy_import

torch = lazy_import("torch")

#: The keys of the stored per-record layout, and of the packed layout.
RECORD_KEYS = ("atoms", "mask", "bonds", "bond_mask")
PACKED_KEYS = ("atoms", "graph", "bonds", "bond_mask", "size")


def is_packed(x: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``x`` is a packed batch (it has the atoms' ``graph``) rather than per-record graphs."""
    return "graph" in x


def pack_padded(x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The packed batch of per-record graphs ``x`` (``[B, A, ...]``), padding kept: ``T = B·A``, ``S = B·E``.

    Fixed-size: it runs under ``vmap``. A padding atom belongs to graph ``B`` (no graph), a padding bond keeps
    its stored indices, which point at atom 0 of its record, and its mask 0.
    """
    atoms, mask, bonds, bond_mask = (x[k] for k in RECORD_KEYS)
    B, A = mask.shape
    records = torch.arange(B, device=mask.device)
    graph = torch.where(mask > 0, records[:, None], B).reshape(B * A)
    offset = (records * A)[:, None]
    src, dst = bonds[..., 0] + offset, bonds[..., 1] + offset
    flat = torch.stack([src, dst, bonds[..., 2]], dim=-1).reshape(-1, 3)
    return {"atoms": atoms.reshape(B * A, atoms.shape[-1]), "graph": graph, "bonds": flat,
            "bond_mask": bond_mask.reshape(-1), "size": mask.sum(-1)}


def pack(x: Mapping[str, torch.Tensor], batch_dims: int) -> dict[str, torch.Tensor]:
    """The packed batch of per-record graphs without padding; with ``batch_dims`` 2 (``x[M, B, ...]``, a batch
    per model) every model's batch is packed on its own and padded to the largest, so that they stack.

    Returns the packed layout with a leading ``M`` dimension when ``batch_dims`` is 2. The real atoms and bonds
    come in the stored order, so a graph's atom ``j`` is packed atom ``offset + j``.
    """
    if batch_dims == 1:
        return {k: v[0] for k, v in pack({k: v[None] for k, v in x.items()}, 2).items()}
    atoms, mask, bonds, bond_mask = (x[k] for k in RECORD_KEYS)
    M, B, A = mask.shape
    device = mask.device
    n_atoms = mask.sum(-1).long()  # [M, B]
    n_bonds = bond_mask.sum(-1).long()
    offset = torch.cumsum(n_atoms, -1) - n_atoms  # first packed atom of each graph
    T = max(int(n_atoms.sum(-1).max()), 1)
    S = max(int(n_bonds.sum(-1).max()), 1)

    real = mask > 0  # [M, B, A], a molecule's atoms first
    m_idx, b_idx, j_idx = real.nonzero(as_tuple=True)
    position = offset[m_idx, b_idx] + j_idx
    packed_atoms = atoms.new_zeros((M, T, atoms.shape[-1]))
    packed_atoms[m_idx, position] = atoms[m_idx, b_idx, j_idx]
    graph = torch.full((M, T), B, dtype=torch.long, device=device)
    graph[m_idx, position] = b_idx

    has_bond = bond_mask > 0  # [M, B, E], a molecule's bonds first
    m_b, b_b, e_b = has_bond.nonzero(as_tuple=True)
    bond_offset = torch.cumsum(n_bonds, -1) - n_bonds
    slot = bond_offset[m_b, b_b] + e_b
    stored = bonds[m_b, b_b, e_b].long()  # [nnz, 3]
    shift = offset[m_b, b_b]
    packed_bonds = torch.zeros((M, S, 3), dtype=torch.long, device=device)
    packed_bonds[m_b, slot] = torch.stack([stored[:, 0] + shift, stored[:, 1] + shift, stored[:, 2]], -1)
    packed_mask = bond_mask.new_zeros((M, S))
    packed_mask[m_b, slot] = 1.0
    return {"atoms": packed_atoms, "graph": graph, "bonds": packed_bonds, "bond_mask": packed_mask,
            "size": mask.sum(-1)}


def trim(x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-record graphs cut to the most atoms and bonds any of them has (padding beyond is dropped): the same
    graphs, in arrays as small as this batch allows. Outside ``vmap`` (the sizes depend on the data)."""
    atoms = max(int(x["mask"].sum(-1).max()), 1)
    bonds = max(int(x["bond_mask"].sum(-1).max()), 1)
    return {"atoms": x["atoms"][..., :atoms, :], "mask": x["mask"][..., :atoms],
            "bonds": x["bonds"][..., :bonds, :], "bond_mask": x["bond_mask"][..., :bonds]}


def from_dense(atoms: torch.Tensor, adjacency: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-record graphs from a dense adjacency ``[N, A, A, K]`` (1 where atom ``j`` sends to atom ``i`` along a
    bond of type ``k``: entry ``[n, i, j, k]``), masked at both ends by ``mask [N, A]``; the directed bonds come in
    the order of ``(i, j, k)``."""
    adjacency = adjacency * mask[:, :, None, None] * mask[:, None, :, None]
    present = adjacency > 0
    counts = present.flatten(1).sum(-1)
    bonds = torch.zeros((len(mask), max(int(counts.max()), 1), 3), dtype=torch.long)
    bond_mask = torch.zeros(bonds.shape[:2], dtype=atoms.dtype)
    for n in range(len(mask)):
        receiver, source, kind = present[n].nonzero(as_tuple=True)
        bonds[n, : len(kind)] = torch.stack([source, receiver, kind], -1)
        bond_mask[n, : len(kind)] = 1.0
    return {"atoms": atoms, "mask": mask, "bonds": bonds, "bond_mask": bond_mask}
