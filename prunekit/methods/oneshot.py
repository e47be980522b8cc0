"""oneshot: prune to the target once, then fine-tune (the simplest baseline)."""
from __future__ import annotations

from dataclasses import dataclass

from prunekit.config import MethodConfig
from prunekit.methods.base import Method, register
from prunekit.methods.context import Context
from prunekit.methods.steps import fixed_plan, prune_and_finetune


@dataclass
class OneshotConfig(MethodConfig):
    finetune_epochs: int = 3


@register
class Oneshot(Method):
    name = "oneshot"
    schema = OneshotConfig
    summary = "prune to the target once, then fine-tune"
    quick = ("method.finetune_epochs=1",)
    one_step = True  # N:M included: one prune step

    def run(self, ctx: Context) -> None:
        prune_and_finetune(ctx, 1, lambda: ctx.prune_to(ctx.target),
                           fixed_plan(self.options.finetune_epochs, self.options.lr),
                           target=ctx.target)
