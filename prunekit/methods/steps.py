"""The prune-finetune step every pipeline is made of, and the block-by-block order of steps."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

from prunekit.config import MethodConfig
from prunekit.errors import positive
from prunekit.journaled import journaled
from prunekit.sparsity.groups import ChannelGroup
from prunekit.train import FitHooks

if TYPE_CHECKING:
    from prunekit.methods.context import Context


@journaled
@dataclass
class FinetunePlan:
    """What to do after a pruning step, decided from the pruned model's val top-1."""

    epochs: int
    lr: float
    row: Dict[str, Any] = field(default_factory=dict)  # extra steps.csv columns


@dataclass
class DistillingConfig(MethodConfig):
    """A pipeline whose fine-tunes may distil from the dense model (ICE's ResNet runs, and the
    standard pipeline its reference code compares with)."""

    distill: bool = False  # fine-tune with CE + KL(student || dense model) at the temperature
    distill_temperature: float = 2.0

    @staticmethod
    def check_distillation(cfg) -> None:
        positive(cfg, "method.distill_temperature")


def distillation_hooks(ctx: Context, options) -> FitHooks:
    """A fine-tune's hooks: the distillation loss from the dense model where `options.distill`
    (the ICE-Pruning reference's form, `Trainer.distillation_loss`), else plain cross-entropy."""
    return FitHooks(loss=ctx.trainer.distillation_loss(ctx.dense_model, options.distill_temperature)
                    if options.distill else None)


def fixed_plan(epochs: int, lr: float) -> Callable[[float], FinetunePlan]:
    return lambda _val: FinetunePlan(epochs, lr)


def blockwise_steps(ctx: Context) -> Iterator[Tuple[int, str, List[ChannelGroup]]]:
    """(k, block, its channel groups) for each step of block-by-block pruning, in network order.
    The groups are read when the step comes: compaction in earlier steps rebuilt them."""
    blocks = [name for name, _ in ctx.pruner.order.steps_in_order()]
    for k, block in enumerate(blocks, 1):
        yield k, block, dict(ctx.pruner.order.steps_in_order())[block]


def prune_and_finetune(ctx: Context, step: int, prune: Callable[[], object],
                       plan: Callable[[Optional[float]], FinetunePlan], *,
                       fit: Optional[dict] = None, validate_pruned: bool = True, **row) -> float:
    """One step of a prune-finetune pipeline: prune, compact (filters), validate, fine-tune as
    `plan(val top-1 after pruning)` says (`fit`: extra Trainer.fit arguments), validate, and
    record the step. Returns the val top-1. Without `validate_pruned` (a plan that does not read
    it) the pruned model is not validated before its fine-tune (its val top-1 is None)."""
    started = time.perf_counter()
    prune()
    ctx.compact()
    val_pruned = ctx.validate() if validate_pruned else None
    # The plan is journaled: it may read the model (ICE's lr and remaining fraction), which a
    # resumed run restores only where replay ends, after this decision was made.
    p = ctx.op(lambda: plan(val_pruned))
    ctx.finetune(p.epochs, p.lr, desc=f"step {step} fine-tune", **(fit or {}))
    val = ctx.validate() if p.epochs > 0 or val_pruned is None else val_pruned
    ctx.tally.count_step()
    ctx.record_step(step=step, **row, sparsity=ctx.sparsity(), val_top1_pruned=val_pruned,
                    val_top1=val, finetuned=p.epochs > 0, epochs=p.epochs,
                    lr=p.lr if p.epochs > 0 else None, **p.row,
                    time_s=time.perf_counter() - started)
    return val
