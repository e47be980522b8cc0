"""Purification (AutoCompress): remove the weights that cannot, or can barely, affect the output.

- `mask_unread`: a channel that no layer reads (each reader's weights for it are zero) cannot
  affect the output. Its filters, BatchNorm channel and reader columns are removed with it; this
  changes nothing, exactly. Removing channels can strand more (a reader losing its last live
  input), so it runs to a fixpoint. Channel groups make this dependency-aware: across a residual
  add, a channel of the stream goes only when no block reads it, and then it goes from every
  branch that writes it.
- `mask_near_zero(τ)`: removes three kinds of structure relative to their neighbours.
  - Group channels whose filters' joint L2 norm is at most τ × the group's mean over live channels.
  - Group channels whose readers' joint L2 norm is at most τ × the group's mean over live channels.
  - A layer's columns whose L2 norm is at most τ × the layer's mean over live columns.

  Then it masks what that strands. τ = 0 takes exactly-zero filters and columns only, but even that
  is not exact: a zero filter's channel still carries the BatchNorm constant β − γμ/σ, which its
  removal drops. So the caller checks each τ on validation accuracy.

A group always keeps at least one channel and a layer at least one column.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prunekit.sparsity.groups import ChannelGroup
from prunekit.sparsity.units import expand_units, pruned_units, unit_matrix


@dataclass
class Purified:
    channels: int = 0  # group channels removed
    columns: int = 0  # columns masked

    def __add__(self, other: "Purified") -> "Purified":
        return Purified(self.channels + other.channels, self.columns + other.columns)


def channel_norms(pruner, group: ChannelGroup, kind: str) -> torch.Tensor:
    """Per group channel, the joint L2 norm of its filters (`out`) or of its readers' weights
    (`in`), from the model's current (masked) weights."""
    weights = {m.module: pruner.model.get_submodule(m.module).weight for m in group.members}
    return group.per_channel(weights, lambda rows: rows.double().pow(2).sum(1), kind).sqrt()


def _keep_one(candidates: torch.Tensor, gone: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """Drop from `candidates` the strongest survivor if they would leave nothing."""
    if bool((candidates | gone).all()):
        candidates = candidates.clone()
        alive = ~gone
        best = torch.where(alive, norms, torch.full_like(norms, -1.0)).argmax()
        candidates[best] = False
    return candidates


def _below(norms: torch.Tensor, live: torch.Tensor, tau: float) -> torch.Tensor:
    mean = norms[live].mean() if bool(live.any()) else norms.new_tensor(0.0)
    return norms <= tau * mean


def mask_unread(pruner) -> int:
    """Mask every channel no layer reads, to a fixpoint; returns how many went."""
    groups = pruner.groups
    removed = 0
    while True:
        pruner.masks.apply()
        now = 0
        for g in groups.groups:
            if not any(m.kind == "in" for m in g.members):
                continue
            gone = groups.masked_channels(g, pruner.masks)
            reads = channel_norms(pruner, g, "in")
            unread = _keep_one((reads == 0) & ~gone, gone, channel_norms(pruner, g, "out"))
            if bool(unread.any()):
                groups.mask_channels(g, torch.nonzero(unread).flatten(), pruner.masks)
                now += int(unread.sum())
        removed += now
        if now == 0:
            return removed


def mask_near_zero(pruner, tau: float) -> Purified:
    """Mask the near-zero channels and columns at relative threshold `tau` and what they strand.
    Channels go first; columns are then judged on what is left, so a layer's last live column is
    never one whose channel just went."""
    groups = pruner.groups
    masks = pruner.masks
    masks.apply()
    channels = columns = 0
    plans = []
    for g in groups.groups:  # every group judged on the same weights
        gone = groups.masked_channels(g, masks)
        out = channel_norms(pruner, g, "out")
        weak = _below(out, ~gone, tau)
        if any(m.kind == "in" for m in g.members):
            weak |= _below(channel_norms(pruner, g, "in"), ~gone, tau)
        plans.append((g, _keep_one(weak & ~gone, gone, out)))
    for g, weak in plans:
        if bool(weak.any()):
            groups.mask_channels(g, torch.nonzero(weak).flatten(), masks)
            channels += int(weak.sum())
    masks.apply()
    for name in pruner.layer_names:
        w = pruner.weight(name).detach()
        norms = unit_matrix(w, "column").double().pow(2).sum(1).sqrt().cpu()
        mask = masks.get(f"{name}.weight")
        gone = pruned_units(mask, "column").cpu() if mask is not None else torch.zeros_like(
            norms, dtype=torch.bool)
        weak = _keep_one(_below(norms, (norms > 0) & ~gone, tau) & ~gone, gone, norms)
        if bool(weak.any()):
            masks.restrict(f"{name}.weight", expand_units(~weak.to(w.device), w.shape, "column"))
            columns += int(weak.sum())
    channels += mask_unread(pruner)
    return Purified(channels, columns)
