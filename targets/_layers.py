"""The ``nn.Module`` classes that the architectures of :mod:`targets.architectures` build, apart from torch's own,
and the stacked linear layer of :meth:`targets.ensemble.Ensemble.forward` for chains of linear layers.

They subclass torch's classes, so defining them needs torch; they live here, apart from the registered factories,
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


#: Per-model weight size (elements) from which :class:`StackedLinear` computes the weight gradient in the weight's own
#: layout; below it, in autograd's order, whose transposed copy costs little there.
LAYOUT_GRADIENT_SIZE = 2**16


class StackedLinear(torch.autograd.Function):
    r"""Every model's linear layer :math:`z_m = h_m W_m^\top + b_m` over stacked weights ``[M, out, in]``.

    The forward pass is the product that ``vmap`` of ``F.linear`` computes (``h @ W.mT + b``, the same numbers), and
    so are the input and bias gradients. The weight gradient of autograd (and vmap) is
    :math:`(h_m^\top\, \partial L/\partial z_m)^\top`: a product ``[M, in, out]`` that autograd then copies,
    transposed, into the parameter's layout, which for a 2048-256 layer costs as long as the product itself. From
    :data:`LAYOUT_GRADIENT_SIZE` elements per model it is computed as :math:`(\partial L/\partial z_m)^\top h_m`
    instead, which comes out in the layout ``[M, out, in]``: the same sum, taken by another product (equal to the
    bit wherever MKL was checked on it, apart from shapes with a dimension from 4 to 11). ``h`` is ``[M, B, in]``,
    or ``[B, in]`` shared by every model.
    """

    @staticmethod
    def forward(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        z = torch.matmul(h, weight.mT)
        return z if bias is None else z + bias.unsqueeze(-2)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
        h, weight, bias = inputs
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, weight = ctx.saved_tensors
        need_h, need_weight, need_bias = ctx.needs_input_grad
        return (torch.matmul(grad, weight) if need_h else None,
                weight_gradient(h, grad, weight[0].numel()) if need_weight else None,
                grad.sum(-2) if ctx.has_bias and need_bias else None)


def weight_gradient(h: torch.Tensor, grad: torch.Tensor, size: int) -> torch.Tensor:
    r""":math:`(\partial L/\partial z_m)^\top h_m` ``[M, out, in]`` for weights of ``size`` elements per model: in
    their layout from :data:`LAYOUT_GRADIENT_SIZE` on, else as autograd computes it (a transposed view)."""
    return torch.matmul(grad.mT, h) if size >= LAYOUT_GRADIENT_SIZE else torch.matmul(h.mT, grad).mT
