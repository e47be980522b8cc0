"""Purification (AutoCompress): remove the weights that cannot, or can barely, affect the output.

- `mask_unread`: a channel that no layer reads (each reader's weights for it are zero) cannot
  affect the output. Its filters, BatchNorm channel and reader columns are removed with it; this
  changes nothing, exactly. Removing channels can strand more (a reader losing its last live
  input), so it runs to a fixpoint. Channel groups make this dependency-aware: across a residual
  add, a channel of the stream goes only when no block reads it, and then it goes from every
  branch that writes it.
- `mask_near_zero(τ)`: removes the structures whose score is at most τ × their neighbours' mean
  over live ones (`channel_scores`, `column_scores`, `relative`):
  - a group channel's score is what it can move in the layers that read it: the scale of its
    output times its readers' joint L2 norm. The scale is its BatchNorm channels' joint |γ| where
    the group has any (they normalise the filter's own norm away, so a small filter is no small
    output), else its filters' joint L2 norm;
  - a layer's column's score is its L2 norm, against the layer's other columns.

  Then it masks what that strands. τ = 0 takes only channels and columns that score exactly zero,
  but even that is not exact: a channel with a zero filter or a zero γ still carries the BatchNorm
  constant β (− γμ/σ), which its removal drops. So the caller checks each τ on validation
  accuracy. `weakest` gives the lowest relative scores, the τ below which nothing would go.

A group always keeps at least one channel and a layer at least one column.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from prunekit.sparsity.groups import ChannelGroup, Role, kept_counts
from prunekit.sparsity.units import expand_units, pruned_units, unit_matrix


@dataclass
class Purified:
    channels: int = 0  # group channels removed
    columns: int = 0  # columns masked

    def __add__(self, other: "Purified") -> "Purified":
        return Purified(self.channels + other.channels, self.columns + other.columns)


def channel_norms(pruner, group: ChannelGroup, role: Role) -> torch.Tensor:
    """Per group channel, the joint L2 norm of its filters (Role.OUT) or of its readers' weights
    (Role.IN), from the model's current (masked) weights."""
    weights = {m.module: pruner.model.get_submodule(m.module).weight for m in group.members}
    return group.per_channel(weights, lambda rows: rows.double().pow(2).sum(1), role).sqrt()


def channel_scores(pruner, group: ChannelGroup) -> torch.Tensor:
    """Per group channel: its output's scale times its readers' joint L2 norm (see above)."""
    modules = {m.module: pruner.model.get_submodule(m.module) for m in group.members}
    gammas = [(m, modules[m.module].weight) for m in group.norms()
              if getattr(modules[m.module], "weight", None) is not None]
    if gammas:
        scale = sum(m.reduce(w.detach().double().pow(2).cpu(), "sum") for m, w in gammas).sqrt()
    else:
        scale = channel_norms(pruner, group, Role.OUT)
    if group.inputs():
        return scale * channel_norms(pruner, group, Role.IN)
    return scale


def column_scores(pruner, name: str) -> torch.Tensor:
    return unit_matrix(pruner.weight(name).detach(), "column").double().pow(2).sum(1).sqrt().cpu()


def _masked_columns(pruner, name: str, like: torch.Tensor) -> torch.Tensor:
    mask = pruner.masks.get(f"{name}.weight")
    return (pruned_units(mask, "column").cpu() if mask is not None
            else torch.zeros_like(like, dtype=torch.bool))


def relative(scores: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """Scores over their mean across the live entries."""
    mean = scores[live].mean() if bool(live.any()) else scores.new_tensor(0.0)
    return scores / mean if float(mean) > 0 else torch.zeros_like(scores)


def weakest(pruner) -> Tuple[Optional[float], Optional[float]]:
    """The lowest relative score of a live group channel and of a live column (None where there
    is none): a threshold below it removes nothing."""
    pruner.masks.apply()
    channels, columns = [], []
    for g in pruner.groups:
        live = ~pruner.groups.masked_channels(g, pruner.masks)
        if int(live.sum()) > 1:  # a group's last channel always stays
            channels.append(float(relative(channel_scores(pruner, g), live)[live].min()))
    for name in pruner.layer_names:
        norms = column_scores(pruner, name)
        unmasked = ~_masked_columns(pruner, name, norms)
        if int(unmasked.sum()) > 1:  # (the mean is over the non-zero ones, as mask_near_zero's)
            columns.append(float(relative(norms, (norms > 0) & unmasked)[unmasked].min()))
    return min(channels, default=None), min(columns, default=None)


def _keep_one(candidates: torch.Tensor, gone: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """Drop from `candidates` the strongest survivor if they would leave nothing."""
    if bool((candidates | gone).all()):
        candidates = candidates.clone()
        alive = ~gone
        best = torch.where(alive, norms, torch.full_like(norms, -1.0)).argmax()
        candidates[best] = False
    return candidates


def aligned_weak(g: ChannelGroup, weak: torch.Tensor, gone: torch.Tensor, scores: torch.Tensor,
                 multiple: int) -> torch.Tensor:
    """The weakest of `weak` whose removal leaves the group a count it may keep (a multiple of
    `multiple`, `kept_counts`): as many as that allows, never a channel that is not weak."""
    if multiple <= 1 or not bool(weak.any()):
        return weak
    n_gone, n = int(gone.sum()), int(gone.sum()) + int(weak.sum())
    allowed = [g.size - k for k in kept_counts(g.size, g.dense_size, multiple)
               if n_gone <= g.size - k <= n]
    take = (max(allowed) if allowed else n_gone) - n_gone
    out = torch.zeros_like(weak)
    if take > 0:
        order = torch.argsort(torch.where(weak, scores.double(), torch.inf), stable=True)
        out[order[:take]] = True
    return out


def mask_unread(pruner) -> int:
    """Mask every channel no layer reads, to a fixpoint; returns how many went."""
    groups = pruner.groups
    removed = 0
    while True:
        pruner.masks.apply()
        now = 0
        for g in groups.groups:
            if not g.inputs():
                continue
            gone = groups.masked_channels(g, pruner.masks)
            reads = channel_norms(pruner, g, Role.IN)
            unread = _keep_one((reads == 0) & ~gone, gone, channel_norms(pruner, g, Role.OUT))
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
        scores = channel_scores(pruner, g)
        weak = _keep_one((relative(scores, ~gone) <= tau) & ~gone, gone, scores)
        plans.append((g, aligned_weak(g, weak, gone, scores, pruner.spec.channel_multiple)))
    for g, weak in plans:
        if bool(weak.any()):
            groups.mask_channels(g, torch.nonzero(weak).flatten(), masks)
            channels += int(weak.sum())
    masks.apply()
    for name in pruner.layer_names:
        w = pruner.weight(name).detach()
        norms = column_scores(pruner, name)
        gone = _masked_columns(pruner, name, norms)
        weak = _keep_one((relative(norms, (norms > 0) & ~gone) <= tau) & ~gone, gone, norms)
        if bool(weak.any()):
            masks.restrict(f"{name}.weight", expand_units(~weak.to(w.device), w.shape, "column"))
            columns += int(weak.sum())
    channels += mask_unread(pruner)
    return Purified(channels, columns)
