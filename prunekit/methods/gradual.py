"""gradual: Zhu & Gupta 2017, "To prune, or not to prune" (automated gradual pruning, AGP).

Training runs for `epochs` epochs from the dense model; before optimiser step t, when t is an
update step of the cubic schedule (`sparsity.schedules.AGPSchedule`: every `frequency` steps from
`begin_step` to the last update at or before `end_step`), the masks are recomputed for
s_t = s_f + (s_i - s_f)(1 - (t - t0)/(nΔt))^3 by the criterion over the current weights (pruned
weights stay pruned). The last update lands exactly on the target; training then goes on with the
masks fixed, which is the recovery phase of the paper. `end_step` defaults to 75% of the run's
optimiser steps. Filter masks are compacted into a smaller model at the end.
"""
from __future__ import annotations

from prunekit.methods.base import Context, Method, register
from prunekit.sparsity.schedules import AGPSchedule


@register
class Gradual(Method):
    name = "gradual"

    def schedule(self, ctx: Context) -> AGPSchedule:
        c = self.cfg
        total = c.epochs * ctx.trainer.steps_per_epoch
        end = c.end_step if c.end_step is not None else int(0.75 * total)
        sched = AGPSchedule(c.initial_sparsity, ctx.target, c.begin_step, end, c.frequency, c.power)
        sched.check(total)
        return sched

    def run(self, ctx: Context) -> None:
        sched = self.schedule(ctx)

        def on_step(t: int) -> None:
            if sched.is_update(t):
                target = sched.sparsity_at(t)
                ctx.prune_to(target)
                ctx.steps += 1
                ctx.record_step(event="update", step=ctx.steps, optimizer_step=t, target=target,
                                sparsity=ctx.sparsity())

        ctx.finetune(self.cfg.epochs, self.cfg.lr, desc="gradual pruning", on_step=on_step)
        ctx.compact()
        ctx.record_step(event="end", step=ctx.steps, optimizer_step=self.cfg.epochs *
                        ctx.trainer.steps_per_epoch, target=ctx.target, sparsity=ctx.sparsity(),
                        val_top1=ctx.validate())
