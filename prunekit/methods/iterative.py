"""iterative: the standard pipeline, prune a little and fine-tune, again and again.

`schedule=geometric|linear`: `steps` steps of rising cumulative sparsity (see
`sparsity.schedules.iterative_targets`), `finetune_epochs` after each.

`schedule=blockwise` (granularity=filter): the baseline of the ICE-Pruning paper. One step per
residual block, in network order; each step removes ceil(sparsity * C) filters of the block's inner
convolution(s) (the groups that do not touch the residual stream) by the criterion, then fine-tunes
`finetune_epochs` (1 in the paper) at a constant learning rate. In a network without residual
blocks every prunable conv is its own step. Here `sparsity` is that per-block channel ratio, as in
the paper; the summary reports the weight sparsity it achieves.
"""
from __future__ import annotations

from prunekit.methods.base import (Context, Method, blockwise_steps, fixed_plan,
                                   prune_and_finetune, register)
from prunekit.sparsity.schedules import iterative_targets


@register
class Iterative(Method):
    name = "iterative"

    def run(self, ctx: Context) -> None:
        c = self.cfg
        plan = fixed_plan(c.finetune_epochs, c.lr)
        if c.schedule == "blockwise":
            for k, block, groups in blockwise_steps(ctx):
                prune_and_finetune(ctx, k, lambda: ctx.prune_groups(groups, ctx.target), plan,
                                   block=block, target=ctx.target)
            return
        for k, target in enumerate(iterative_targets(ctx.target, c.steps, c.schedule), 1):
            prune_and_finetune(ctx, k, lambda: ctx.prune_to(target), plan, target=target)
