"""The ``nn.Module`` classes that the architectures of :mod:`targets.architectures` build, apart from torch's own.

They subclass ``torch.nn.Module``, so defining them needs torch; they live here, apart from the registered factories,
so that registering the architectures (every command) does not import torch. The factories import this module when
they build a model; the leading underscore keeps ``targets/__init__`` from importing it at registration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


class GlobalMeanPool(nn.Module):
    """Mean over the last ``spatial`` dimensions: ``[B, C, H, W] → [B, C]`` (2), ``[B, C, D, H, W] → [B, C]`` (3)."""

    def __init__(self, spatial: int = 2) -> None:
        super().__init__()
        self.dims = tuple(range(-spatial, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims)


class MPNN(nn.Module):
    """Message passing over a dense padded graph ``{"atoms": [B, A, F], "bonds": [B, A, A, K], "mask": [B, A]}``.

    Atom states start as ``relu(W_in · atoms)``. Each of ``steps`` rounds sends along every bond of type ``k`` the
    message ``W_k · h_j`` (one weight per bond type), sums them per receiving atom and updates
    ``h_i ← LayerNorm(h_i + relu(U · h_i + Σ messages))``, then dropout. States of padded atoms (``mask`` 0) are
    zeroed after every round and bonds are masked at both ends, so padding never reaches a real atom; the readout
    (masked mean or sum over atoms) feeds an MLP head. Everything is elementwise or a contraction with no
    data-dependent branch, so the module runs under ``torch.func.vmap`` and is invariant to the order of atoms.
    """

    def __init__(
        self, atom_features: int, bond_types: int, n_outputs: int, hidden: int, steps: int, dropout: float,
        readout: str,
    ) -> None:
        super().__init__()
        self.readout = readout
        self.embed = nn.Linear(atom_features, hidden)
        self.message = nn.ParameterList(
            [nn.Parameter(torch.empty(bond_types, hidden, hidden)) for _ in range(steps)]
        )
        self.update = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(steps)])
        self.norm = nn.ModuleList([nn.LayerNorm(hidden) for _ in range(steps)])
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_outputs)
        )
        bound = 1.0 / math.sqrt(hidden)
        for weight in self.message:
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        atoms, bonds, mask = x["atoms"], x["bonds"], x["mask"]
        keep = mask.unsqueeze(-1)  # [B, A, 1]
        bonds = bonds * mask[..., :, None, None] * mask[..., None, :, None]  # [B, A, A, K], padding cut off
        h = torch.relu(self.embed(atoms)) * keep  # [B, A, H]
        for weight, update, norm in zip(self.message, self.update, self.norm, strict=True):
            per_type = torch.einsum("bjh,khg->bjkg", h, weight)  # message of atom j along a bond of type k
            incoming = torch.einsum("bijk,bjkg->big", bonds, per_type)
            h = norm(h + torch.relu(update(h) + incoming))
            h = self.dropout(h) * keep
        pooled = h.sum(dim=-2)
        if self.readout == "mean":
            pooled = pooled / mask.sum(dim=-1, keepdim=True).clamp_min(1.0)
        return self.head(pooled)


class AddChannel(nn.Module):
    """Insert a channel axis of size one before the last three: ``[B, D, H, W] → [B, 1, D, H, W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-4)
