"""What a method gets: the Context, split by job.

- Services: the model, the dense model, data, trainer, pruner, recorder, clock, hardware, and
  the spending operations that time themselves by phase: `prune_to` / `prune_groups` / `compact`
  (prune), `finetune` (finetune), `validate` (eval, on the held-out validation split, never the
  test set). Side work on a copy of the model (tuning trials, probes) runs in `fork()`.
- `tally` (Tally): the counts and results a run reports, changed only through its methods.
- `replay` (resume.Replay): the journal of operations and the checkpoints of a resumable run.
- `frozen` (train.Freezer): the layers whose parameters are not trained.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.nn as nn

from prunekit import distributed
from prunekit.clock import PhaseClock
from prunekit.data import Data
from prunekit.hardware import Hardware, channel_multiple
from prunekit.metrics import prunable_sparsity
from prunekit.models import prunable_layers, residual_blocks, resize_to_state
from prunekit.plan import RunPlan
from prunekit.record import Recorder
from prunekit.resume import Replay, loaders_of, rng_state, set_rng_state
from prunekit.sparsity.cost import Cost
from prunekit.sparsity.groups import ChannelGroup
from prunekit.sparsity.masks import MaskSet
from prunekit.sparsity.pruner import Pruner, PruneSpec
from prunekit.state import cpu_state, load_state
from prunekit.train import FitHooks, FitResult, Freezer, Trainer


def build_pruner(plan: RunPlan, model: nn.Module, example_input: torch.Tensor,
                 cost: Optional[Cost] = None) -> Pruner:
    """The run's pruner over `model`: its prunable layers and residual blocks, the method's spec
    (and channel groups where the method asks for them whatever its granularity), and the cost
    its targets count (default: the target's kind counted on `model`, taken as dense)."""
    m = plan.options
    layers = prunable_layers(model, m.prune_first_conv, m.prune_classifier)
    if cost is None:
        cost = Cost.of(plan.target.kind.measure, model, example_input, layers)
    multiple = channel_multiple(plan.hardware, example_input.device)
    return Pruner(model, PruneSpec.from_options(m, multiple), layers, example_input,
                  seed=plan.seed, blocks=list(residual_blocks(model)),
                  channel_groups=plan.method.needs_channel_groups(m), cost=cost)


@dataclass
class Tally:
    """What a run counts and reports beyond its model: steps, fine-tunes, compaction, the
    method's own summary keys (`results`) and layers.csv columns (`layer_info`)."""

    steps: int = 0
    finetune_count: int = 0
    finetune_epochs: int = 0
    compaction_max_abs_diff: Optional[float] = None
    compacted: bool = False
    results: Dict[str, Any] = field(default_factory=dict)
    layer_info: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def count_step(self) -> int:
        """One more pruning step; returns its number."""
        self.steps += 1
        return self.steps

    def add_finetune(self, epochs: int) -> None:
        if epochs > 0:
            self.finetune_count += 1
            self.finetune_epochs += epochs

    def add_epochs(self, epochs: int) -> None:
        """Training epochs spent outside a fine-tune of the model (e.g. ICE's freezing probe)."""
        self.finetune_epochs += epochs

    def add_compaction(self, max_abs_diff: Optional[float], channels_removed: int) -> None:
        self.compacted = channels_removed > 0
        if max_abs_diff is not None:
            self.compaction_max_abs_diff = max(self.compaction_max_abs_diff or 0.0, max_abs_diff)

    def report(self, **results) -> None:
        """Extra summary.json keys of the method."""
        self.results.update(results)

    def layer_columns(self, columns: Dict[str, Dict[str, Any]]) -> None:
        """Extra layers.csv columns, per layer."""
        self.layer_info = {layer: dict(cols) for layer, cols in columns.items()}

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


SHARE = "share"  # a fork gets the same object (or value)


def piece(*, fork: Any = SHARE, saved: Any = None, **field_kw) -> Any:
    """One piece of the Context's state, declared once. `fork`: what a fork gets, SHARE or
    fn(parent, fork, how) -> its own (pieces are made in declaration order, so a later piece can
    use an earlier one of the fork). `saved`: how a checkpoint keeps it: None (not kept),
    "value" (the attribute itself), "state_dict" (its state_dict / load_state_dict), or a pair
    (save(ctx) -> state, load(ctx, state)); a resumed run loads them in declaration order."""
    return field(metadata={"fork": fork, "saved": saved}, **field_kw)


@dataclass(frozen=True)
class ForkOptions:
    data: Optional[Data] = None  # None: the parent's
    quiet: bool = False  # fit() logs at DEBUG
    clock: Optional[PhaseClock] = None  # None: its own


def load_model(ctx: "Context", state: dict) -> None:
    resize_to_state(ctx.model, state)  # a resumed model may have been compacted
    load_state(ctx.model, state)
    ctx.model.to(ctx.hw.device)


def load_pruner(ctx: "Context", state: dict) -> None:
    ctx.pruner = ctx.rebuild_pruner(ctx.model)  # over the model at its compacted shapes
    ctx.pruner.load_state_dict(state)


def fork_trainer(parent: "Context", fork: "Context", how: ForkOptions) -> Trainer:
    # side work is not the run's training curve: no per-epoch report
    return parent.trainer.with_data(fork.data, logging.DEBUG if how.quiet
                                    else parent.trainer.log_level, FitHooks())


@dataclass
class Context:
    """The services a method uses and the state of its run. Each field is a `piece`: what a fork
    gets of it and how a checkpoint keeps it are declared here, and only here (`fork()` and
    resume's `capture` / `restore` read the declarations)."""

    plan: RunPlan = piece()  # the run, resolved (its method's own config: plan.options)
    # the model being pruned, on the device
    model: nn.Module = piece(fork=lambda p, f, how: copy.deepcopy(p.model),
                             saved=(lambda c: cpu_state(c.model), load_model))
    dense_model: nn.Module = piece()  # the dense model, frozen (a teacher); never modified
    data: Data = piece(fork=lambda p, f, how: how.data or p.data,  # its loaders' generators:
                       saved=(lambda c: rng_state(loaders_of(c.data)),  # with the process's RNGs
                              lambda c, s: set_rng_state(s, loaders_of(c.data))))
    trainer: Trainer = piece(fork=fork_trainer)
    pruner: Pruner = piece(fork=lambda p, f, how: build_pruner(p.plan, f.model, p.check_input[:1],
                                                               p.pruner.cost),
                           saved=(lambda c: c.pruner.state_dict(), load_pruner))
    recorder: Recorder = piece(fork=lambda p, f, how: Recorder(None),  # in memory
                               saved=(lambda c: list(c.recorder.steps),
                                      lambda c, rows: c.recorder.reset(rows)))
    # where the pruning time goes, and how much there is (elapsed)
    clock: PhaseClock = piece(fork=lambda p, f, how: how.clock or PhaseClock(sync=p.hw.sync),
                              saved="state_dict")
    hw: Hardware = piece()
    target: float = piece()  # the removed fraction of the target's cost (Pruner: its unit)
    dense_val_top1: float = piece(saved="value")  # the reference decisions compare with
    # a validation batch for the masked-vs-compacted check (side work: a cheaper one)
    check_input: torch.Tensor = piece(fork=lambda p, f, how: p.check_input[:4])
    rebuild_pruner: Callable[[nn.Module], Pruner] = piece()  # over a (resumed, resized) model
    tally: Tally = piece(fork=lambda p, f, how: Tally(), saved="state_dict",
                         default_factory=Tally)
    replay: Replay = piece(fork=lambda p, f, how: Replay(), saved="state_dict",  # no journal
                           default_factory=Replay)
    frozen: Optional[Freezer] = piece(fork=lambda p, f, how: Freezer(f.model),
                                      saved="state_dict", default=None)
    # objects with state_dict() a method keeps with the run (keep_state)
    stateful: Dict[str, Any] = piece(
        fork=lambda p, f, how: {}, default_factory=dict,
        saved=(lambda c: {k: v.state_dict() for k, v in c.stateful.items()},
               lambda c, states: [obj.load_state_dict(states[k])
                                  for k, obj in c.stateful.items() if k in states]))
    solved_block_ratio: Optional[float] = piece(default=None)  # block_ratio() once solved

    def __post_init__(self):
        if self.frozen is None:
            self.frozen = Freezer(self.model)

    @property
    def masks(self) -> MaskSet:
        return self.pruner.masks

    def keep_state(self, name: str, obj: Any) -> Any:
        """Checkpoint `obj` (state_dict / load_state_dict) with the run, so a resumed run goes on
        from its state; returns it."""
        self.stateful[name] = obj
        return obj

    def drop_state(self, name: str) -> None:
        """Stop checkpointing the object kept as `name` (its work is over)."""
        self.stateful.pop(name, None)

    # ------------------------------------------------------------------ variants
    def use_data(self, data: Data, log_level: int = logging.INFO) -> None:
        """Train and decide on `data` from now on (e.g. a subset of val for cheap decisions)."""
        self.data = data
        self.trainer = self.trainer.with_data(data, log_level)

    def compare_with(self, dense_val_top1: float) -> None:
        """The dense model's val top-1 that decisions compare with from now on (measured on
        the data decisions are taken on: a val subset has its own)."""
        self.dense_val_top1 = dense_val_top1

    def aim_at(self, target: float) -> None:
        """Prune toward the removed fraction `target` from now on (a latency target's FLOPs
        fraction, once solved; a fork measuring one candidate)."""
        self.target = target

    def fork(self, data: Optional[Data] = None, quiet: bool = False,
             clock: Optional[PhaseClock] = None) -> "Context":
        """A context for side work on a copy of the current model, made from the pieces'
        declarations: its own model, pruner, masks, tally, an in-memory recorder and its own
        clock (unless `clock` is shared), no journal, so the run itself is untouched. Fork
        before pruning or right after a compaction (masks are not copied)."""
        how, fork = ForkOptions(data, quiet, clock), copy.copy(self)
        for f in dataclasses.fields(self):
            make = f.metadata.get("fork", SHARE)
            if make is not SHARE:
                setattr(fork, f.name, make(self, fork, how))
        return fork

    def freeze(self, modules: Sequence[str]) -> None:
        self.frozen.freeze(modules)

    def unfreeze(self) -> None:
        self.frozen.unfreeze()

    def block_ratio(self) -> float:
        """The channel ratio block-wise pruning (ICE, the blockwise baseline) removes from every
        block: the target itself under target.kind=sparsity (the ICE paper's pruning ratio);
        under a cost target the ratio that meets it once every block is pruned, solved on the
        exact count the first time it is asked (journaled, so a resumed run reads it back)."""
        if not self.plan.target.kind.factor:
            return self.target
        if self.solved_block_ratio is None:
            self.solved_block_ratio = self.op(
                lambda: self.pruner.planner.block_ratio(self.pruner.order.blockwise_groups(),
                                                        self.target))
        return self.solved_block_ratio

    # ------------------------------------------------------------------ journal, checkpoints
    def op(self, fn: Callable[[], Any], checkpoint: bool = False) -> Any:
        """One journaled operation (see resume.Replay.op): its result is plain data, or
        dataclasses declared @journaled, which the journal keeps and gives back as they are."""
        return self.replay.op(fn, self, checkpoint)

    def once(self, fn: Callable[[], Any]) -> Any:
        """A side computation done once per run (ICE's tuning, its probe), checkpointed."""
        return self.op(fn, checkpoint=True)

    def finish_replay(self) -> None:
        self.replay.finish(self)

    def checkpoint(self, fit: Optional[dict] = None) -> None:
        self.replay.checkpoint(self, fit)

    # ------------------------------------------------------------------ spending
    def _prepare_criterion(self) -> None:
        # every rank reads the same (whole) batches: a data-driven score is then the same on all
        train = self.data.train
        self.pruner.prepare(getattr(train, "unsharded", train), self.plan.options.criterion_batches)

    def prune_to(self, target: float) -> None:
        def prune() -> None:
            with self.clock.phase("prune"):
                self._prepare_criterion()
                self.pruner.prune_to(target)
        self.op(prune)

    def prune_groups(self, groups: Sequence[ChannelGroup], ratio: float) -> int:
        def prune() -> int:
            with self.clock.phase("prune"):
                self._prepare_criterion()
                return self.pruner.prune_groups(groups, ratio)
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
        self.tally.add_compaction(diff, self.pruner.channels_removed)
        self.frozen.reapply()  # compaction replaced the parameter objects

    def finetune(self, epochs: int, lr: float, desc: str = "finetune",
                 hooks: Optional[FitHooks] = None, **kw) -> FitResult:
        """Train `epochs` epochs (checkpointed after each one when it is a top-level operation;
        a resumed run continues a fit in progress from its next epoch)."""
        def fit() -> FitResult:
            resume = self.replay.take_fit_state()
            checkpoint = self.checkpoint if self.replay.in_top_level_op() else None
            with self.clock.phase("finetune"):
                result = self.trainer.fit(
                    self.model, epochs, lr, masks=self.masks, desc=desc, resume=resume,
                    hooks=dataclasses.replace(hooks or FitHooks(), checkpoint=checkpoint), **kw)
            self.tally.add_finetune(epochs)
            return result

        return self.op(fit)

    def validate(self, model: Optional[nn.Module] = None) -> float:
        """Val top-1 of the model being pruned (or of `model`, e.g. the dense one)."""
        def evaluate() -> float:
            with self.clock.phase("eval"):
                return self.trainer.evaluate(model or self.model, "val",
                                             self.plan.val_max_batches).top1
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
        """A steps.csv row; at top level it ends a pruning step, so a checkpoint follows. In a
        distributed run every rank must have taken the same decisions: their masks and shapes
        are compared here, and differing ones stop the run."""
        if distributed.current().distributed:
            shapes = [torch.tensor(p.shape) for p in self.model.parameters()]
            masks = [m for _, m in sorted(self.pruner.masks.items())]
            distributed.check_agree(f"the masks at steps.csv row {len(self.recorder.steps) + 1}",
                                    distributed.digest([*shapes, *masks]))
        self.op(lambda: self.recorder.step(**row), checkpoint=True)
