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
    """Message passing over molecular graphs given as edge lists (:mod:`targets.graphs`).

    Atom states start as ``relu(W_in · atoms)``. Each of ``steps`` rounds sends along every bond of type ``k``
    from atom ``j`` to atom ``i`` the message ``W_k · h_j`` (one weight per bond type), sums them per receiving
    atom and updates ``h_i ← LayerNorm(h_i + relu(U · h_i + Σ messages))``, then dropout. The readout (mean or sum
    of each graph's atom states) feeds an MLP head.

    ``forward`` takes a packed batch (:func:`targets.graphs.pack`, what :meth:`collate` gives the ensemble), or
    per-record graphs ``[B, A, ...]``, which it packs with their padding (:func:`targets.graphs.pack_padded`; so
    under ``vmap`` over samples too). Messages are gathered along the bonds and summed with ``index_add``, as
    PyTorch Geometric does: memory and work grow with the atoms and bonds, not with the square of the largest
    molecule. Padding atoms belong to no graph and padding bonds carry nothing, so padding never reaches a real
    atom or the readout, and the outputs do not depend on the order of a molecule's atoms.
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

    @staticmethod
    def collate(x: Mapping[str, torch.Tensor], batch_dims: int) -> dict[str, torch.Tensor]:
        """The packed batch of per-record graphs ``x`` (``batch_dims`` 1: ``[B, ...]``, 2: ``[M, B, ...]``),
        padding removed: what the ensemble passes to :meth:`forward` (outside ``vmap``)."""
        from targets.graphs import pack

        return pack(x, batch_dims)

    def activation_elements(self, x: Mapping[str, torch.Tensor]) -> float:
        """About how many activation numbers one record of ``x`` (per-record graphs) costs a forward pass that
        keeps them for the backward pass: per atom, each round's per-type messages and a few states."""
        atoms = float(x["mask"].sum()) / max(1, x["mask"][..., 0].numel())
        hidden, types = self.embed.out_features, self.message[0].shape[0]
        return atoms * len(self.message) * (types + 6) * hidden

    def forward(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        from targets.graphs import is_packed, pack_padded

        if not is_packed(x):
            x = pack_padded(x)
        atoms, graph, bonds, bond_mask, size = x["atoms"], x["graph"], x["bonds"], x["bond_mask"], x["size"]
        n_graphs, (n_atoms, _), n_types = size.shape[-1], atoms.shape, self.message[0].shape[0]
        keep = (graph < n_graphs).to(atoms.dtype).unsqueeze(-1)  # [T, 1]
        source, receiver, kind = bonds.unbind(-1)
        slot = receiver * n_types + kind  # row of (receiving atom, bond type) in the per-type sums
        carried = bond_mask.unsqueeze(-1)
        h = torch.relu(self.embed(atoms)) * keep  # [T, H]
        # gather/scatter_add rather than index_select/index_add: vmap batches them in one call, not one per model
        rows = lambda index: index.unsqueeze(-1).expand(-1, h.shape[-1])  # noqa: E731
        source_rows, slot_rows = rows(source), rows(slot)
        for weight, update, norm in zip(self.message, self.update, self.norm, strict=True):
            # Σ_e W_k h_source = Σ_k W_k (Σ over the atom's bonds of type k of h_source): sum the sending states
            # per (receiver, type) first, then apply every type's weight in one product
            sent = h.gather(0, source_rows) * carried  # [S, H]
            per_type = h.new_zeros((n_atoms * n_types, h.shape[-1])).scatter_add(0, slot_rows, sent)
            incoming = per_type.reshape(n_atoms, -1) @ weight.reshape(-1, weight.shape[-1])
            h = norm(h + torch.relu(update(h) + incoming))
            h = self.dropout(h) * keep
        pooled = h.new_zeros((n_graphs + 1, h.shape[-1])).scatter_add(0, rows(graph), h)[:n_graphs]
        if self.readout == "mean":
            pooled = pooled / size.clamp_min(1.0).unsqueeze(-1)
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
