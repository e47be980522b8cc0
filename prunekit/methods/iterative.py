"""iterative: the standard pipeline, prune a little and fine-tune, again and again.

`schedule=geometric|linear`: `steps` steps of rising cumulative sparsity (see
`sparsity.schedules.iterative_targets`), `finetune_epochs` after each. `schedule=blockwise`
(filters): the ICE-Pruning paper's baseline, one step per residual block; see
docs/methods/iterative.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from prunekit.errors import ConfigError, at_least, choice
from prunekit.methods.base import Method, register
from prunekit.methods.context import Context
from prunekit.methods.steps import (
    DistillingConfig,
    blockwise_steps,
    distillation_hooks,
    fixed_plan,
    prune_and_finetune,
)
from prunekit.registry import Registry
from prunekit.sparsity.schedules import iterative_targets
from prunekit.sparsity.units import granularity

SCHEDULES: Registry = Registry("schedule")  # method.schedule -> how the steps are laid out


@SCHEDULES.register
class Geometric:
    """`steps` steps of rising cumulative target (`sparsity.schedules.iterative_targets`)."""

    name = "geometric"
    sparsity_unit: Optional[str] = None  # what `sparsity` counts (None: the granularity's)

    @classmethod
    def check(cls, cfg) -> None:
        pass

    @classmethod
    def reach(cls, ctx: Context) -> None:
        ctx.prune_to(ctx.target)

    @classmethod
    def max_removed(cls, pruner) -> float:
        return pruner.planner.max_removed()

    @classmethod
    def run(cls, ctx: Context, c, plan, fit: dict) -> None:
        for k, target in enumerate(iterative_targets(ctx.target, c.steps, cls.name), 1):
            prune_and_finetune(ctx, k, lambda: ctx.prune_to(target), plan, fit=fit,
                               validate_pruned=c.validate_pruned, target=target)


@SCHEDULES.register
class Linear(Geometric):
    name = "linear"


@SCHEDULES.register
class Blockwise(Geometric):
    """The ICE-Pruning paper's baseline: one step per residual block, filters only."""

    name = "blockwise"
    sparsity_unit = "channels per block"

    @classmethod
    def check(cls, cfg) -> None:
        if not granularity(cfg.method.granularity).prunes_filters:
            raise ConfigError("method.schedule=blockwise prunes filters block by block: "
                              "set method.granularity=filter")

    @classmethod
    def reach(cls, ctx: Context) -> None:
        ctx.prune_groups(ctx.pruner.order.blockwise_groups(), ctx.block_ratio())

    @classmethod
    def max_removed(cls, pruner) -> float:
        return pruner.planner.max_removed(pruner.order.blockwise_groups())

    @classmethod
    def run(cls, ctx: Context, c, plan, fit: dict) -> None:
        for k, block, groups in blockwise_steps(ctx):
            prune_and_finetune(ctx, k, lambda: ctx.prune_groups(groups, ctx.block_ratio()),
                               plan, fit=fit, validate_pruned=c.validate_pruned, block=block,
                               target=ctx.block_ratio())


@dataclass
class IterativeConfig(DistillingConfig):
    steps: int = 5
    schedule: str = "geometric"  # geometric, linear, blockwise
    finetune_epochs: int = 1  # after every step
    # also validate after pruning, before the fine-tune (steps.csv's val_top1_pruned); the
    # ICE-Pruning reference's baseline does not (experiment=ice_baseline: false)
    validate_pruned: bool = True


@register
class Iterative(Method):
    name = "iterative"
    schema = IterativeConfig
    summary = "the standard pipeline: prune a little, fine-tune, repeat"
    quick = ("method.steps=2", "method.finetune_epochs=1")
    time_reference = True  # the report's time_vs_iterative: the pipeline others try to beat

    @classmethod
    def sparsity_unit(cls, options) -> str:
        return SCHEDULES[options.schedule].sparsity_unit or super().sparsity_unit(options)

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        at_least(cfg, "method.steps", 1)
        choice(cfg, "method.schedule", tuple(SCHEDULES))
        SCHEDULES[cfg.method.schedule].check(cfg)
        cls.schema.check_distillation(cfg)

    def reach(self, ctx: Context) -> None:
        SCHEDULES[self.options.schedule].reach(ctx)

    def max_removed(self, pruner) -> float:
        return SCHEDULES[self.options.schedule].max_removed(pruner)

    def run(self, ctx: Context) -> None:
        SCHEDULES[self.options.schedule].run(ctx, self.options,
                                         fixed_plan(self.options.finetune_epochs, self.options.lr),
                                         dict(hooks=distillation_hooks(ctx, self.options)))
