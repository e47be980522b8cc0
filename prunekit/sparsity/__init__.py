"""Pruning primitives: masks, units and criteria, channel groups and compaction, schedules."""
from prunekit.sparsity.masks import MaskSet
from prunekit.sparsity.pruner import Pruner, PruneSpec
from prunekit.sparsity.schedules import AGPSchedule, iterative_targets

__all__ = ["AGPSchedule", "MaskSet", "PruneSpec", "Pruner", "iterative_targets"]
