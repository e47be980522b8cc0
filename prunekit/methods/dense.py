"""dense: no pruning. The reference row of every comparison, optionally trained further so that it
gets the same training budget as the methods it is compared with."""
from __future__ import annotations

from dataclasses import dataclass

from prunekit.config import MethodConfig
from prunekit.methods.base import Method, register
from prunekit.methods.context import Context


@dataclass
class DenseConfig(MethodConfig):
    epochs: int = 0  # extra dense training, to give the baseline the same budget as a method


@register
class Dense(Method):
    name = "dense"
    schema = DenseConfig
    summary = "no pruning: the reference row, optionally trained `epochs` more"
    prunes = False

    def run(self, ctx: Context) -> None:
        ctx.finetune(self.options.epochs, self.options.lr, desc="dense training")
        ctx.record_step(step=0, target=0.0, sparsity=ctx.sparsity(), val_top1=ctx.validate(),
                        epochs=self.options.epochs)
