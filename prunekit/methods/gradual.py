"""gradual: Zhu & Gupta 2017, "To prune, or not to prune" (automated gradual pruning, AGP): masks
recomputed on the cubic schedule s_t = s_f + (s_i - s_f)(1 - (t - t0)/(nΔt))^3 during training,
then training goes on with the masks fixed. See docs/methods/gradual.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from prunekit.config import MethodConfig
from prunekit.errors import ConfigError, at_least, fraction
from prunekit.methods.base import Method, register
from prunekit.methods.context import Context
from prunekit.sparsity.schedules import AGPSchedule
from prunekit.targets import target_fraction
from prunekit.train import FitHooks


@dataclass
class GradualConfig(MethodConfig):
    epochs: int = 10
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: Optional[int] = None  # None: end_fraction of the optimiser steps of the run
    end_fraction: float = 0.75  # where the schedule ends when end_step is null; then training on
    frequency: int = 100  # Δt: optimiser steps between mask updates
    power: int = 3


@register
class Gradual(Method):
    name = "gradual"
    schema = GradualConfig
    summary = "AGP (Zhu & Gupta 2017): masks on a cubic schedule during training"
    quick = ("method.epochs=2", "method.frequency=2")

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        m = cfg.method
        at_least(cfg, "method.frequency", 1)
        at_least(cfg, "method.begin_step", 0)
        at_least(cfg, "method.power", 1)
        at_least(cfg, "method.epochs", 1, " (gradual pruning happens during training)")
        fraction(cfg, "method.end_fraction")
        final = target_fraction(cfg)
        if not 0.0 <= m.initial_sparsity <= final:
            raise ConfigError(f"method.initial_sparsity={m.initial_sparsity} must be in "
                              f"[0, {final:g}] (the target's removed fraction)")
        if m.end_step is not None and m.end_step <= m.begin_step:
            raise ConfigError(f"method.end_step={m.end_step} must be greater than "
                              f"method.begin_step={m.begin_step}")

    def schedule(self, ctx: Context) -> AGPSchedule:
        c = self.options
        total = c.epochs * ctx.trainer.steps_per_epoch
        end = c.end_step if c.end_step is not None else int(c.end_fraction * total)
        sched = AGPSchedule(c.initial_sparsity, ctx.target, c.begin_step, end, c.frequency, c.power)
        problem = sched.problem(total)
        if problem:
            raise ConfigError(problem)
        return sched

    def run(self, ctx: Context) -> None:
        sched = self.schedule(ctx)

        def update(t: int) -> None:
            if sched.is_update(t):
                target = sched.sparsity_at(t)
                ctx.prune_to(target)
                ctx.record_step(event="update", step=ctx.tally.count_step(), optimizer_step=t,
                                target=target, sparsity=ctx.sparsity())

        ctx.finetune(self.options.epochs, self.options.lr, desc="gradual pruning",
                     hooks=FitHooks(before_step=update))
        ctx.compact()
        ctx.record_step(event="end", step=ctx.tally.steps, optimizer_step=self.options.epochs *
                        ctx.trainer.steps_per_epoch, target=ctx.target, sparsity=ctx.sparsity(),
                        val_top1=ctx.validate())
