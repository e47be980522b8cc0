"""iterative: the standard pipeline, prune a little and fine-tune, again and again.

`schedule=geometric|linear`: `steps` steps of rising cumulative sparsity (see
`sparsity.schedules.iterative_targets`), `finetune_epochs` after each. `schedule=blockwise`
(filters): the ICE-Pruning paper's baseline, one step per residual block; see
docs/methods/iterative.md.
"""
from __future__ import annotations

from dataclasses import dataclass

from prunekit.config import MethodConfig, at_least, choice
from prunekit.errors import ConfigError
from prunekit.methods.base import Method, register
from prunekit.methods.context import Context
from prunekit.methods.steps import blockwise_steps, fixed_plan, prune_and_finetune
from prunekit.sparsity.schedules import iterative_targets

SCHEDULES = ("geometric", "linear", "blockwise")


@dataclass
class IterativeConfig(MethodConfig):
    steps: int = 5
    schedule: str = "geometric"
    finetune_epochs: int = 1  # after every step


@register
class Iterative(Method):
    name = "iterative"
    schema = IterativeConfig
    summary = "the standard pipeline: prune a little, fine-tune, repeat"
    quick = ("method.steps=2", "method.finetune_epochs=1")
    time_reference = True  # the report's time_vs_iterative: the pipeline others try to beat

    @classmethod
    def sparsity_unit(cls, cfg) -> str:
        if cfg.method.schedule == "blockwise":
            return "channels per block"
        return super().sparsity_unit(cfg)

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        at_least(cfg, "method.steps", 1)
        choice(cfg, "method.schedule", SCHEDULES)
        if cfg.method.schedule == "blockwise" and cfg.method.granularity != "filter":
            raise ConfigError("method.schedule=blockwise prunes filters block by block: "
                              "set method.granularity=filter")

    def reach(self, ctx: Context) -> None:
        if self.cfg.schedule == "blockwise":
            ctx.prune_groups(ctx.pruner.blockwise_groups(), ctx.block_ratio())
        else:
            super().reach(ctx)

    def max_removed(self, pruner) -> float:
        if self.cfg.schedule == "blockwise":
            return pruner.max_removed(pruner.blockwise_groups())
        return super().max_removed(pruner)

    def run(self, ctx: Context) -> None:
        c = self.cfg
        plan = fixed_plan(c.finetune_epochs, c.lr)
        if c.schedule == "blockwise":
            for k, block, groups in blockwise_steps(ctx):
                prune_and_finetune(ctx, k, lambda: ctx.prune_groups(groups, ctx.block_ratio()),
                                   plan, block=block, target=ctx.block_ratio())
            return
        for k, target in enumerate(iterative_targets(ctx.target, c.steps, c.schedule), 1):
            prune_and_finetune(ctx, k, lambda: ctx.prune_to(target), plan, target=target)
