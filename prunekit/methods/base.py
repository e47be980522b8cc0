"""What a method is (a small class with `run(ctx)`) and what it gets (the Context).

A method owns its loop and spends everything through the context, which times it by phase:
`ctx.prune_to` / `ctx.prune_groups` / `ctx.compact` (prune), `ctx.finetune` (finetune),
`ctx.validate` (eval, on the held-out validation split, never the test set).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Type

import torch
import torch.nn as nn
from omegaconf import DictConfig

from prunekit.data import Data
from prunekit.hardware import Hardware
from prunekit.metrics import prunable_sparsity
from prunekit.record import PhaseClock, Recorder
from prunekit.sparsity.groups import ChannelGroup
from prunekit.sparsity.masks import MaskSet
from prunekit.sparsity.pruner import Pruner
from prunekit.train import FitResult, Trainer


@dataclass
class Context:
    cfg: DictConfig  # the whole run's config
    model: nn.Module  # the model being pruned, on the device
    dense_model: nn.Module  # the dense model, frozen (a teacher, a reference); never modified
    data: Data
    trainer: Trainer
    pruner: Pruner
    recorder: Recorder
    clock: PhaseClock
    hw: Hardware
    target: float  # cfg.sparsity (see Pruner for its unit per granularity)
    dense_val_top1: float
    check_input: torch.Tensor  # a validation batch for the masked-vs-compacted check
    steps: int = 0
    finetune_count: int = 0
    finetune_epochs: int = 0
    compaction_max_abs_diff: Optional[float] = None
    compacted: bool = False

    @property
    def masks(self) -> MaskSet:
        return self.pruner.masks

    # ------------------------------------------------------------------ spending
    def prune_to(self, target: float) -> None:
        with self.clock.phase("prune"):
            self.pruner.prune_to(target)

    def prune_groups(self, groups: Sequence[ChannelGroup], ratio: float,
                     scores: Optional[Callable[[ChannelGroup], torch.Tensor]] = None) -> int:
        with self.clock.phase("prune"):
            return self.pruner.prune_groups(groups, ratio, scores)

    def compact(self) -> None:
        """Physically remove masked filters (filter granularity; a no-op otherwise) and check the
        compacted model against the masked one on a validation batch."""
        if self.pruner.groups is None:
            return
        with self.clock.phase("prune"):
            diff = self.pruner.compact(check_input=self.check_input)
        self.compacted = True
        if diff is not None:
            prev = self.compaction_max_abs_diff or 0.0
            self.compaction_max_abs_diff = max(prev, diff)

    def finetune(self, epochs: int, lr: float, desc: str = "finetune", **kw) -> FitResult:
        with self.clock.phase("finetune"):
            result = self.trainer.fit(self.model, epochs, lr, masks=self.masks, desc=desc, **kw)
        if epochs > 0:
            self.finetune_count += 1
            self.finetune_epochs += epochs
        return result

    def validate(self) -> float:
        with self.clock.phase("eval"):
            return self.trainer.evaluate(self.model, "val", self.cfg.train.val_max_batches).top1

    # ------------------------------------------------------------------ reading
    def sparsity(self) -> float:
        return prunable_sparsity(self.model, self.pruner.dense_numel)

    def record_step(self, **row) -> None:
        self.recorder.step(**row)


class Method:
    """A pruning method. Subclasses set `name` and implement `run(ctx)`."""

    name: str = ""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def run(self, ctx: Context) -> None:
        raise NotImplementedError


METHODS: Dict[str, Type[Method]] = {}


def register(cls: Type[Method]) -> Type[Method]:
    METHODS[cls.name] = cls
    return cls


def prune_and_finetune(ctx: Context, step: int, prune: Callable[[], object], epochs: int,
                       lr: float, **row) -> None:
    """One step of the standard pipeline: prune, compact (filters), validate, fine-tune, validate,
    and record the step."""
    started = time.perf_counter()
    prune()
    ctx.compact()
    val_pruned = ctx.validate()
    ctx.finetune(epochs, lr, desc=f"step {step} fine-tune")
    val = ctx.validate() if epochs > 0 else val_pruned
    ctx.steps += 1
    ctx.record_step(step=step, **row, sparsity=ctx.sparsity(), val_top1_pruned=val_pruned,
                    val_top1=val, finetuned=epochs > 0, epochs=epochs, lr=lr,
                    time_s=time.perf_counter() - started)
