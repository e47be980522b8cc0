"""The constraint sets of ADMM-style pruning (ADMM, AutoCompress, SLR) and their projections.

A constraint says "these weights have at most so many non-zero structures". It is per layer for
the `unstructured`, `channel`, `column` and `nm` schemes (`LayerConstraint`), and per channel group
for `filter` (`FilterConstraint`: the coupled filters of one group channel are one structure, so the
hard prune can remove them physically, with their BatchNorm channel and their readers' inputs).
Each constraint gives:

- `project(tensors)`: the exact Euclidean projection Π onto the set, for ADMM's Z-step. It keeps the
  structures of largest L2 norm and zeroes the rest; N:M keeps the N largest |w| of every M.
- `keep(tensors)`: the element keep-masks of that projection (exact counts, ties in index order).
- `prune(pruner)`: the hard prune of the model's current weights W into the pruner's masks.

How many structures are zero is fixed when a constraint is made (`zero_count`), so the set does
not move while ADMM runs. Structures that are already zero (masked, or removed by a neighbour's
filter pruning) have norm 0 and count toward it first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch

from prunekit.sparsity.groups import ChannelGroup, Role, aligned_removal
from prunekit.sparsity.units import (
    expand_units,
    granularity,
    keep_vector,
    lowest,
    nm_mask,
    unit_matrix,
)

Tensors = Dict[str, torch.Tensor]  # layer name -> a tensor of its weight's shape


def zero_count(norms: torch.Tensor, alive: torch.Tensor, n_dense: int, rate: float) -> int:
    """How many of the structures (their L2 `norms` and `alive` non-zero weights each) to zero,
    lowest norm first, so the weights left are closest to (1 - rate) * n_dense. Already-zero
    structures go first; at least one live structure is kept."""
    alive = alive.long().cpu()
    n, dead = alive.numel(), int((alive == 0).sum())
    total = int(alive.sum())
    want = (1.0 - rate) * n_dense
    live = alive[alive > 0]
    if len(live) == 0:
        return n
    if bool((live == live[0]).all()):  # one size per live structure (nearly always): closed form
        extra = math.floor((total - want) / int(live[0]) + 0.5)
    else:  # removal in norm order, the prefix whose remaining count is closest
        order = torch.argsort(norms.double().cpu(), stable=True)
        remaining = total - torch.cat([torch.zeros(1, dtype=torch.long), alive[order].cumsum(0)])
        err = (remaining.double() - want).abs()[: n]  # k = 0 .. n - 1
        k = int(torch.nonzero(err <= err.min() + 1e-9).max())
        return max(k, dead)
    return dead + min(max(extra, 0), len(live) - 1)


@dataclass
class LayerConstraint:
    """At most `units - n_zero` non-zero units of `scheme` in one layer's weight (N:M: `nm`)."""

    layer: str
    scheme: str  # unstructured | channel | column | nm
    n_zero: int = 0
    nm: Tuple[int, int] = (2, 4)

    @property
    def layers(self) -> List[str]:
        return [self.layer]

    def keep(self, tensors: Tensors) -> Tensors:
        t = tensors[self.layer].detach()
        if granularity(self.scheme).one_step:  # a fixed pattern: the constraint is the pattern
            return {self.layer: nm_mask(t, *self.nm)}
        norms = unit_matrix(t, self.scheme).float().pow(2).sum(1)
        return {self.layer: expand_units(keep_vector(norms, self.n_zero), t.shape, self.scheme)}

    def project(self, tensors: Tensors) -> Tensors:
        return {n: tensors[n] * m for n, m in self.keep(tensors).items()}

    def prune(self, pruner) -> None:
        weights = {self.layer: pruner.weight(self.layer)}
        pruner.masks.restrict(f"{self.layer}.weight", self.keep(weights)[self.layer])

    @classmethod
    def for_rate(cls, weight: torch.Tensor, layer: str, scheme: str, rate: float, n_dense: int,
                 nm: Tuple[int, int] = (2, 4)) -> "LayerConstraint":
        """The constraint that leaves (1 - rate) of the layer's dense weights."""
        if granularity(scheme).one_step:
            return cls(layer, scheme, 0, nm)
        m = unit_matrix(weight.detach(), scheme)
        n_zero = zero_count(m.float().pow(2).sum(1), m.ne(0).sum(1), n_dense, rate)
        return cls(layer, scheme, n_zero)


@dataclass
class FilterConstraint:
    """At most `size - n_zero` channels of a channel group with non-zero filters (the rows of every
    layer whose output channels the group couples: across a residual add, all of them)."""

    group: ChannelGroup
    n_zero: int

    @property
    def layers(self) -> List[str]:
        return [m.module for m in self.group.outputs()]

    def channel_norms(self, tensors: Tensors) -> torch.Tensor:
        return self.group.per_channel(tensors, lambda rows: rows.float().pow(2).sum(1)).sqrt()

    def removed(self, tensors: Tensors) -> torch.Tensor:
        return lowest(self.channel_norms(tensors), self.n_zero)

    def keep(self, tensors: Tensors) -> Tensors:
        chans = self.removed(tensors).tolist()
        out = {}
        for m in self.group.members:
            if m.role is Role.OUT:
                t = tensors[m.module]
                rows = torch.ones(t.shape[0], dtype=torch.bool)
                rows[m.take(chans)] = False
                out[m.module] = rows.to(t.device).view(-1, *([1] * (t.dim() - 1))).expand(t.shape)
        return out

    def project(self, tensors: Tensors) -> Tensors:
        return {n: tensors[n] * m for n, m in self.keep(tensors).items()}

    def prune(self, pruner) -> None:
        weights = {n: pruner.weight(n) for n in self.layers}
        pruner.groups.mask_channels(self.group, self.removed(weights), pruner.masks)

    @classmethod
    def for_rate(cls, group: ChannelGroup, weights: Tensors, rate: float, n_dense: int,
                 multiple: int = 1) -> "FilterConstraint":
        """The constraint that leaves (1 - rate) of the n_dense weights of the group's filters;
        with a channel `multiple`, the nearest count of filters that keeps a multiple of it."""
        c = cls(group, 0)
        alive = group.per_channel(weights, lambda rows: rows.ne(0).sum(1)).long()
        n = zero_count(c.channel_norms(weights), alive, n_dense, rate)
        return cls(group, aligned_removal(n, group.size, group.dense_size,
                                          int((alive == 0).sum()), multiple))


def project_all(constraints, tensors: Tensors) -> Tensors:
    """Π of every constraint (each layer belongs to one), tensors of other layers dropped."""
    out: Tensors = {}
    for c in constraints:
        out.update(c.project(tensors))
    return out


def hard_prune(constraints, pruner) -> None:
    """Mask the model's current weights onto the constraint sets (mask from W, exact top-k)."""
    for c in constraints:
        c.prune(pruner)
    pruner.masks.apply()
