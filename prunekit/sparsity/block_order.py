"""Blockwise pruning's order for a Pruner (`pruner.order`): each residual block with its inner
channel groups, in network order (the step of the blockwise baseline and of ICE-Pruning), and how
many channels a block step removes at a ratio."""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

from prunekit.sparsity.groups import ChannelGroup, aligned_removal


class BlockOrder:
    """The blockwise steps of one Pruner."""

    def __init__(self, pruner) -> None:
        self.p = pruner

    def steps_in_order(self) -> List[Tuple[str, List[ChannelGroup]]]:
        """The units of blockwise pruning, in network order: each residual block with its inner
        groups; in a network without residual blocks (VGG, LeNet) every group is its own step."""
        groups = self.p.groups.groups
        order = {n: i for i, (n, _) in enumerate(self.p.model.named_modules())}
        if any(g.block for g in groups):
            blocks: Dict[str, List[ChannelGroup]] = {}
            for g in groups:
                if g.block:
                    blocks.setdefault(g.block, []).append(g)
            return sorted(blocks.items(), key=lambda kv: order[kv[0]])
        return sorted(((g.root, [g]) for g in groups), key=lambda kv: order[kv[0]])

    def block_count(self, g: ChannelGroup, ratio: float, n_masked: int) -> int:
        """How many of `g`'s current channels `prune_groups` masks at `ratio`: ceil(ratio * dense
        channels) in all (at least one kept), less those compaction removed already; with a
        channel multiple, the nearest count that leaves a multiple of it."""
        gone = g.dense_size - g.size
        want = min(math.ceil(ratio * g.dense_size - 1e-9), g.dense_size - 1) - gone
        n = min(max(want, n_masked), g.size - 1)
        return aligned_removal(n, g.size, g.dense_size, n_masked, self.p.spec.channel_multiple)

    def blockwise_groups(self) -> List[ChannelGroup]:
        """Every channel group block-wise pruning removes channels from, in network order."""
        return [g for _, groups in self.steps_in_order() for g in groups]
