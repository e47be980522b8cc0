"""The prune-finetune step every pipeline is made of, and the block-by-block order of steps."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

from prunekit.sparsity.groups import ChannelGroup

if TYPE_CHECKING:
    from prunekit.methods.context import Context


@dataclass
class FinetunePlan:
    """What to do after a pruning step, decided from the pruned model's val top-1."""

    epochs: int
    lr: float
    row: Dict[str, Any] = field(default_factory=dict)  # extra steps.csv columns


def fixed_plan(epochs: int, lr: float) -> Callable[[float], FinetunePlan]:
    return lambda _val: FinetunePlan(epochs, lr)


def blockwise_steps(ctx: Context) -> Iterator[Tuple[int, str, List[ChannelGroup]]]:
    """(k, block, its channel groups) for each step of block-by-block pruning, in network order.
    The groups are read when the step comes: compaction in earlier steps rebuilt them."""
    blocks = [name for name, _ in ctx.pruner.steps_in_order()]
    for k, block in enumerate(blocks, 1):
        yield k, block, dict(ctx.pruner.steps_in_order())[block]


def prune_and_finetune(ctx: Context, step: int, prune: Callable[[], object],
                       plan: Callable[[float], FinetunePlan], *, fit: Optional[dict] = None,
                       **row) -> float:
    """One step of a prune-finetune pipeline: prune, compact (filters), validate, fine-tune as
    `plan(val top-1 after pruning)` says (`fit`: extra Trainer.fit arguments), validate, and
    record the step. Returns the val top-1."""
    started = time.perf_counter()
    prune()
    ctx.compact()
    val_pruned = ctx.validate()
    # The plan is journaled: it may read the model (ICE's lr and remaining fraction), which a
    # resumed run restores only where replay ends, after this decision was made.
    p = FinetunePlan(**ctx.op(lambda: dataclasses.asdict(plan(val_pruned))))
    ctx.finetune(p.epochs, p.lr, desc=f"step {step} fine-tune", **(fit or {}))
    val = ctx.validate() if p.epochs > 0 else val_pruned
    ctx.tally.count_step()
    ctx.record_step(step=step, **row, sparsity=ctx.sparsity(), val_top1_pruned=val_pruned,
                    val_top1=val, finetuned=p.epochs > 0, epochs=p.epochs,
                    lr=p.lr if p.epochs > 0 else None, **p.row,
                    time_s=time.perf_counter() - started)
    return val
