"""dense: no pruning. The reference row of every comparison, optionally trained further so that it
gets the same training budget as the methods it is compared with."""
from __future__ import annotations

from prunekit.methods.base import Context, Method, register


@register
class Dense(Method):
    name = "dense"

    def run(self, ctx: Context) -> None:
        ctx.finetune(self.cfg.epochs, self.cfg.lr, desc="dense training")
        ctx.record_step(step=0, target=0.0, sparsity=ctx.sparsity(), val_top1=ctx.validate(),
                        epochs=self.cfg.epochs)
