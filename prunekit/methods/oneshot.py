"""oneshot: prune to the target once, then fine-tune (the simplest baseline)."""
from __future__ import annotations

from prunekit.methods.base import Context, Method, fixed_plan, prune_and_finetune, register


@register
class Oneshot(Method):
    name = "oneshot"

    def run(self, ctx: Context) -> None:
        prune_and_finetune(ctx, 1, lambda: ctx.prune_to(ctx.target),
                           fixed_plan(self.cfg.finetune_epochs, self.cfg.lr), target=ctx.target)
