"""What a method is (a small class with `run(ctx)`) and what it gets (the Context).

A method owns its loop and spends everything through the context, which times it by phase:
`ctx.prune_to` / `ctx.prune_groups` / `ctx.compact` (prune), `ctx.finetune` (finetune),
`ctx.validate` (eval, on the held-out validation split, never the test set). Side work on a copy
of the model (tuning trials, probes) runs in `ctx.fork()`, with its own counters and clock.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn
from omegaconf import DictConfig

from prunekit.data import Data
from prunekit.hardware import Hardware
from prunekit.metrics import prunable_sparsity
from prunekit.models import prunable_layers, residual_blocks
from prunekit.record import PhaseClock, Recorder
from prunekit.resume import Checkpointer, Journal, capture, restore
from prunekit.sparsity.groups import ChannelGroup
from prunekit.sparsity.masks import MaskSet
from prunekit.sparsity.pruner import Pruner, PruneSpec
from prunekit.train import FitResult, Trainer


def build_pruner(cfg: DictConfig, model: nn.Module, example_input: torch.Tensor) -> Pruner:
    """The run's pruner over `model`: its prunable layers and residual blocks, the method's spec."""
    layers = prunable_layers(model, cfg.method.prune_first_conv, cfg.method.prune_classifier)
    spec = PruneSpec.from_cfg(cfg.method)
    # AutoCompress's purification needs channel groups whatever its schemes
    return Pruner(model, spec, layers, example_input, seed=cfg.seed,
                  blocks=list(residual_blocks(model)),
                  channel_groups=True if cfg.method.name == "autocompress" else None)


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
    frozen: List[str] = field(default_factory=list)  # modules whose parameters are not trained
    results: Dict[str, Any] = field(default_factory=dict)  # extra summary.json keys of the method
    layer_info: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # extra layers.csv columns
    # resumable runs (prunekit.resume): the journal of operations, where checkpoints go, the
    # method's own objects with state (state_dict / load_state_dict), how to rebuild the pruner
    journal: Optional[Journal] = None
    checkpointer: Optional[Checkpointer] = None
    stateful: Dict[str, Any] = field(default_factory=dict)
    rebuild_pruner: Optional[Callable[[nn.Module], Pruner]] = None
    started: float = field(default_factory=time.perf_counter)
    elapsed_before: float = 0.0  # pruning seconds of the segments before a resume
    _fit_resume: Optional[dict] = None

    @property
    def masks(self) -> MaskSet:
        return self.pruner.masks

    # ------------------------------------------------------------------ variants
    def use_data(self, data: Data, log_level: int = logging.INFO) -> None:
        """Train and decide on `data` from now on (e.g. a subset of val for cheap decisions)."""
        self.data = data
        self.trainer = self.trainer.with_data(data, log_level)

    def fork(self, data: Optional[Data] = None, quiet: bool = False,
             clock: Optional[PhaseClock] = None) -> "Context":
        """A context for side work on a copy of the current model: its own pruner, masks,
        counters, an in-memory recorder and its own clock (unless `clock` is shared), so the run
        itself is untouched. Fork before pruning or right after a compaction (masks are not
        copied). `quiet`: fit() logs at DEBUG."""
        model = copy.deepcopy(self.model)
        fork = dataclasses.replace(
            self, model=model, pruner=build_pruner(self.cfg, model, self.check_input[:1]),
            check_input=self.check_input[:4],  # side work: a cheaper compaction check
            recorder=Recorder(None), clock=clock or PhaseClock(sync=self.hw.sync), steps=0,
            finetune_count=0, finetune_epochs=0, compaction_max_abs_diff=None, compacted=False,
            frozen=[], results={}, layer_info={}, journal=None, checkpointer=None, stateful={})
        fork.use_data(data or self.data, logging.DEBUG if quiet else self.trainer.log_level)
        return fork

    def freeze(self, modules: Sequence[str]) -> None:
        """Stop training the parameters of `modules` (kept across compactions, which replace
        parameter objects); their BatchNorm running statistics still update."""
        self.frozen = list(modules)
        self._train_frozen(False)

    def unfreeze(self) -> None:
        self._train_frozen(True)
        self.frozen = []

    def _train_frozen(self, trainable: bool) -> None:
        for name in self.frozen:
            for p in self.model.get_submodule(name).parameters(recurse=False):
                p.requires_grad_(trainable)

    # ------------------------------------------------------------------ journal, checkpoints
    def op(self, fn: Callable[[], Any], checkpoint: bool = False) -> Any:
        """Run one journaled operation (its result must be plain data). While a resumed run
        replays, it returns the recorded result instead; where replay ends, the checkpoint's
        state is restored first. Operations inside another run directly, unjournaled."""
        j = self.journal
        if j is None:
            return fn()
        top = j.depth == 0  # a nested operation is part of the enclosing one
        if top:
            i = j.position
            j.position += 1
            if j.pending is not None and i < j.resume_at:  # replay: the recorded result
                return j.results[i]
            self.finish_replay()
        j.depth += 1
        try:
            result = fn()
        finally:
            j.depth -= 1
        if top:
            j.results.append(result)
            if checkpoint:
                self.checkpoint()
        return result

    def once(self, fn: Callable[[], Any]) -> Any:
        """A side computation done once per run (ICE's tuning, its probe), checkpointed."""
        return self.op(fn, checkpoint=True)

    def finish_replay(self) -> None:
        """Restore the checkpoint's state if a resumed run's replay has not yet done so."""
        j = self.journal
        if j is not None and j.pending is not None:
            state, j.pending = j.pending, None
            restore(self, state, self.rebuild_pruner)
            self._fit_resume = state["fit"]

    def checkpoint(self, fit: Optional[dict] = None) -> None:
        if self.checkpointer is not None and self.journal is not None and self.checkpointer.due():
            self.checkpointer.save(capture(self, fit))

    def exclude_time(self, seconds: float) -> None:
        """Leave the last `seconds` (work done only for a report) out of the pruning time and of
        the phase running now."""
        self.started += seconds
        self.clock.exclude(seconds)

    def elapsed(self) -> float:
        """Pruning seconds so far, over every segment of a resumed run."""
        return self.elapsed_before + time.perf_counter() - self.started

    # ------------------------------------------------------------------ spending
    def prune_to(self, target: float) -> None:
        def prune() -> None:
            with self.clock.phase("prune"):
                self.pruner.prune_to(target)
        self.op(prune)

    def prune_groups(self, groups: Sequence[ChannelGroup], ratio: float,
                     scores: Optional[Callable[[ChannelGroup], torch.Tensor]] = None) -> int:
        def prune() -> int:
            with self.clock.phase("prune"):
                return self.pruner.prune_groups(groups, ratio, scores)
        return self.op(prune)

    def compact(self) -> None:
        self.op(self._compact)

    def _compact(self) -> None:
        """Physically remove masked filters, and channels no layer reads any more (filter,
        channel and column results; a no-op otherwise), and check the compacted model against
        the masked one on a validation batch."""
        if self.pruner.groups is None:
            return
        with self.clock.phase("prune"):
            diff = self.pruner.compact(check_input=self.check_input)
        self.compacted = self.pruner.channels_removed > 0
        self._train_frozen(False)  # compaction replaced the parameter objects
        if diff is not None:
            prev = self.compaction_max_abs_diff or 0.0
            self.compaction_max_abs_diff = max(prev, diff)

    def finetune(self, epochs: int, lr: float, desc: str = "finetune", **kw) -> FitResult:
        """Train `epochs` epochs (checkpointed after each one when it is a top-level operation;
        a resumed run continues a fit in progress from its next epoch)."""
        def fit() -> dict:
            resume, self._fit_resume = self._fit_resume, None
            top_level = self.journal is not None and self.journal.depth == 1
            with self.clock.phase("finetune"):
                result = self.trainer.fit(self.model, epochs, lr, masks=self.masks, desc=desc,
                                          resume=resume,
                                          checkpoint=self.checkpoint if top_level else None, **kw)
            if epochs > 0:
                self.finetune_count += 1
                self.finetune_epochs += epochs
            return dataclasses.asdict(result)

        return FitResult(**self.op(fit))

    def validate(self, model: Optional[nn.Module] = None) -> float:
        """Val top-1 of the model being pruned (or of `model`, e.g. the dense one)."""
        def evaluate() -> float:
            with self.clock.phase("eval"):
                return self.trainer.evaluate(model or self.model, "val",
                                             self.cfg.train.val_max_batches).top1
        return self.op(evaluate)

    def test_top1(self) -> float:
        """Test top-1 of the model now, for reporting only (e.g. ADMM's `top1_hard`); no method
        decides anything on it."""
        def evaluate() -> float:
            with self.clock.phase("eval"):
                return self.trainer.evaluate(self.model, "test").top1
        return self.op(evaluate)

    # ------------------------------------------------------------------ reading
    def sparsity(self) -> float:
        return prunable_sparsity(self.model, self.pruner.dense_numel)

    def record_step(self, **row) -> None:
        """A steps.csv row; at top level it ends a pruning step, so a checkpoint follows."""
        self.op(lambda: self.recorder.step(**row), checkpoint=True)


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
    ctx.steps += 1
    ctx.record_step(step=step, **row, sparsity=ctx.sparsity(), val_top1_pruned=val_pruned,
                    val_top1=val, finetuned=p.epochs > 0, epochs=p.epochs,
                    lr=p.lr if p.epochs > 0 else None, **p.row,
                    time_s=time.perf_counter() - started)
    return val
