"""Data-driven channel importance: the activation criteria of ICE-Pruning's criteria comparison.

Each group channel is scored from what it emits on a few training batches: the output of the
group's first BatchNorm (or of its root layer when it has none) after ReLU, averaged over space,
gives one value per image and channel.

- `mean_activation`: the mean of those values over the images (a channel that is mostly silent is
  pruned first; Hu et al.'s APoZ family).
- `entropy`: the entropy of their 20-bin histogram over the images (Luo & Wu 2017; a channel whose
  output barely varies carries little information and is pruned first).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.sparsity.groups import ChannelGroup, Member

ENTROPY_BINS = 20


def _probe_member(group: ChannelGroup) -> Member:
    norm = next(iter(group.norms()), None)
    return norm or group.members[0]


def entropy(values: torch.Tensor, bins: int = ENTROPY_BINS) -> torch.Tensor:
    """Entropy (nats) of each column's histogram: values (N, C) -> (C,). Each column is binned on
    its own [min, max]; a constant column has entropy 0."""
    lo, hi = values.min(0).values, values.max(0).values
    width = (hi - lo).clamp_min(torch.finfo(values.dtype).tiny)
    idx = ((values - lo) / width * bins).long().clamp_(0, bins - 1)
    counts = torch.zeros(bins, values.shape[1], dtype=values.dtype, device=values.device)
    counts.scatter_add_(0, idx, torch.ones_like(values))
    p = counts / values.shape[0]
    return -(p * torch.log(p.clamp_min(1e-12))).sum(0)


@torch.no_grad()
def activation_scores(model: nn.Module, groups: Sequence[ChannelGroup], batches: Iterable,
                      criterion: str, max_batches: int) -> Dict[str, torch.Tensor]:
    """Scores (per group channel, lower = pruned first) for every group, keyed by group root,
    from one pass of up to `max_batches` batches through `model` in eval mode."""
    if criterion not in ("mean_activation", "entropy"):
        raise ValueError(f"unknown activation criterion {criterion!r}")
    probes = {g.root: _probe_member(g) for g in groups}
    seen: Dict[str, List[torch.Tensor]] = {root: [] for root in probes}
    hooks = []
    for root, member in probes.items():
        def hook(_module, _inputs, out, root=root):
            a = F.relu(out.float())
            seen[root].append(a.mean(dim=tuple(range(2, a.ndim))) if a.ndim > 2 else a)
        hooks.append(model.get_submodule(member.module).register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for i, (x, _) in enumerate(batches):
            if i >= max_batches:
                break
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    scores = {}
    for g in groups:
        member = probes[g.root]
        per_position = torch.cat(seen[g.root])  # (images, channels of the hooked module)
        # a group channel may span several positions (concatenations): average them
        cols = member.reduce(per_position, "mean", dim=1)
        s = cols.mean(0) if criterion == "mean_activation" else entropy(cols)
        scores[g.root] = s.cpu()
    return scores
