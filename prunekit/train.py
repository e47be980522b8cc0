"""One Trainer for every method: dense training, fine-tuning, pruning-during-training, evaluation.

Every call to `fit` builds a fresh SGD optimiser and LR schedule (fine-tuning after a structural
change, or a new phase of a method, must not inherit momentum from weights that no longer exist).
The hot loop has no host syncs: the loss is accumulated on the device and read once per epoch, when
it is also checked for NaN/inf. Masks are re-applied after every optimiser step.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit import distributed
from prunekit.console import CONSOLE, make_progress
from prunekit.data import Data
from prunekit.hardware import Hardware
from prunekit.journaled import journaled
from prunekit.plan import SgdRecipe
from prunekit.sparsity.masks import MaskSet

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def clock_time(seconds: float) -> str:
    """12s, 4m05s, 2h03m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class Evaluation:
    top1: float  # percent
    top5: float  # percent
    loss: float
    samples: int


@dataclass
class FitHooks:
    """The one way to plug into a fit (every hook optional): `loss(logits, labels, inputs)`
    instead of cross-entropy (distillation, ADMM's penalty); `before_step(t)` before optimiser
    step t (0-based over the fit; gradual pruning updates its masks there); `after_epoch(epoch,
    mean loss)` after each epoch (0-based; ADMM's Z/U updates, SLR's multipliers);
    `report_epoch(epoch, mean loss, model)`, the run's per-epoch curve, which returns the val
    top-1 it measured or None (tracking.EpochLog); and `checkpoint(fit state)` last, with what a
    resumed fit needs (the epochs done, optimiser, scheduler, scaler; pass it back as
    `fit(resume=...)`); `compiled(seconds)` after `hardware.compile` compiled a step (the
    method's clock counts them as its compile phase); `stop(step)` after each optimiser step:
    whether a stop was asked (a signal), when the fit checkpoints at once, mid-epoch, with its
    place in the epoch's data (`resume` continues there). A Trainer's own hooks (given when it
    is made) serve every fit and evaluation; a fit's hooks replace them one by one."""

    loss: Optional[LossFn] = None
    before_step: Optional[Callable[[int], None]] = None
    after_epoch: Optional[Callable[[int, float], None]] = None
    report_epoch: Optional[Callable[[int, float, nn.Module], Optional[float]]] = None
    checkpoint: Optional[Callable[[dict], None]] = None
    compiled: Optional[Callable[[float], None]] = None  # the seconds a (re)compile took
    stop: Optional[Callable[[int], bool]] = None  # a stop asked before step t's end?

    def over(self, standing: "FitHooks") -> "FitHooks":
        """These hooks, with `standing`'s where these have none."""
        return FitHooks(**{f.name: getattr(self, f.name) or getattr(standing, f.name)
                           for f in dataclasses.fields(self)})


class Freezer:
    """The layers whose parameters are not trained (ICE's rule ii). Kept across compactions, which
    replace parameter objects (`reapply`); their BatchNorm running statistics still update."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.names: List[str] = []

    def freeze(self, modules: Sequence[str]) -> None:
        self.names = list(modules)
        self._set(False)

    def unfreeze(self) -> None:
        self._set(True)
        self.names = []

    def reapply(self) -> None:
        self._set(False)

    def state_dict(self) -> dict:
        return {"names": list(self.names)}

    def load_state_dict(self, state: dict) -> None:
        self.freeze(state["names"])

    def _set(self, trainable: bool) -> None:
        for name in self.names:
            for p in self.model.get_submodule(name).parameters(recurse=False):
                p.requires_grad_(trainable)


class Compiler:
    """`hardware.compile` for the train and eval steps: one torch.compile wrapper per model,
    compiled ahead on a batch of the real size (so the compile's seconds are known, not charged
    to a training step: `compiled` hooks get them), and compiled anew when the model's shapes
    change (a compaction; dynamo's caches are reset then, or its recompile limit would fall back
    to eager after a few). The warm-up leaves the model as it found it: gradients dropped,
    BatchNorm statistics restored, no random number drawn."""

    def __init__(self, enabled: bool, mode: str = "default"):
        self.enabled, self.mode = enabled, mode
        self.wrappers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @staticmethod
    def shapes(model: nn.Module) -> tuple:
        return tuple(tuple(p.shape) for p in model.parameters())

    def __call__(self, model: nn.Module, example: Callable[[], torch.Tensor], train: bool,
                 hw: Hardware, compiled: Optional[Callable[[float], None]]) -> nn.Module:
        """`model` compiled for training (`train`) or evaluation; `example()` gives the batch it
        is compiled ahead on (asked only when it compiles)."""
        if not self.enabled:
            return model
        entry = self.wrappers.get(model)
        if entry is None or entry[1] != self.shapes(model):
            if entry is not None:
                torch._dynamo.reset()  # a compacted model: its old graphs are useless
                self.wrappers.clear()
            net = torch.compile(model, mode=self.mode)
            entry = self.wrappers[model] = [net, self.shapes(model), set()]
        if train not in entry[2]:  # a training and an eval graph, each compiled once
            started = time.perf_counter()
            self.warm(entry[0], model, example(), train, hw)
            entry[2].add(train)
            if compiled is not None:
                compiled(time.perf_counter() - started)
        return entry[0]

    @staticmethod
    def warm(net: nn.Module, model: nn.Module, x: torch.Tensor, train: bool,
             hw: Hardware) -> None:
        buffers = {k: b.clone() for k, b in model.named_buffers()}
        was = model.training
        model.train(train)
        with torch.enable_grad() if train else torch.no_grad(), hw.autocast():
            out = net(x)
        if train:
            out.float().sum().backward()
            model.zero_grad(set_to_none=True)
        model.train(was)
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
        hw.sync()


@dataclass
class FitState:
    """A fit in progress: what its epochs, its progress line and its checkpoints read."""

    desc: str
    epochs: int
    task: Any  # its progress bar
    optimisation: tuple  # (optimiser, LR scheduler, loss scaler)
    first: int = 0  # the epoch it starts at (a resumed fit's next)
    epoch: int = 0  # the epoch under way
    loss: float = float("nan")  # the last finished epoch's mean training loss
    started: float = field(default_factory=time.perf_counter)

    def checkpoint(self, epochs_done: int) -> dict:
        """The fit's state for a checkpoint hook, `epochs_done` epochs done."""
        opt, sched, scaler = self.optimisation
        return {"epochs_done": epochs_done, "loss": self.loss, "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "scaler": scaler.state_dict()}


@journaled
@dataclass
class FitResult:
    epochs: int
    steps: int
    loss: float  # mean training loss of the last epoch


class Trainer:
    def __init__(self, data: Data, train_cfg, hw: Hardware, progress: bool = True,
                 hooks: Optional[FitHooks] = None):
        self.data = data
        self.cfg = train_cfg
        self.hw = hw
        self.progress = make_progress(progress and train_cfg.progress)
        # off a terminal (nohup, SLURM) the bars are off: a line per epoch stands in for them
        self.epoch_lines = bool(progress and train_cfg.progress and not CONSOLE.is_terminal)
        self.log_level = logging.INFO  # of the lines each fit() logs
        self.hooks = hooks or FitHooks()  # of every fit (the run's per-epoch report)
        self.compiler = Compiler(hw.compile, hw.compile_mode)

    def with_data(self, data: Data, log_level: int = logging.INFO,
                  hooks: Optional[FitHooks] = None) -> "Trainer":
        """The same trainer (settings, progress display) on other data, e.g. a tuning subset;
        with `hooks`, those instead of its own."""
        other = copy.copy(self)
        other.data, other.log_level = data, log_level
        other.hooks = hooks if hooks is not None else self.hooks
        return other

    def with_hooks(self, hooks: FitHooks) -> "Trainer":
        """The same trainer with other hooks of its own (e.g. the method's per-epoch report)."""
        return self.with_data(self.data, self.log_level, hooks)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data.train)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    # ------------------------------------------------------------------ training
    def make_optimizer(self, model: nn.Module, lr: float,
                       sgd: Optional[SgdRecipe] = None) -> torch.optim.Optimizer:
        """SGD over the parameters that require grad; weight decay, momentum and Nesterov are
        train.*'s unless `sgd` gives them (the dense recipe gives pretrain.*'s)."""
        sgd = sgd or SgdRecipe()
        params = [p for p in model.parameters() if p.requires_grad]
        wd = self.cfg.weight_decay if sgd.weight_decay is None else sgd.weight_decay
        momentum = self.cfg.momentum if sgd.momentum is None else sgd.momentum
        nesterov = self.cfg.nesterov if sgd.nesterov is None else sgd.nesterov
        return torch.optim.SGD(params, lr=lr, momentum=momentum,
                               nesterov=nesterov and momentum > 0, weight_decay=wd)

    def fit(self, model: nn.Module, epochs: int, lr: float, *, masks: Optional[MaskSet] = None,
            desc: str = "train", hooks: Optional[FitHooks] = None,
            sgd: Optional[SgdRecipe] = None, resume: Optional[dict] = None) -> FitResult:
        """Train `model` for `epochs` epochs with a fresh SGD at `lr`; its schedule, weight
        decay, momentum and Nesterov are `sgd`'s where it sets them, else train.*'s. Only
        parameters that require grad
        are trained (frozen layers stay as they are). `hooks` plug into the loop (FitHooks, over
        the trainer's own); `resume` is a checkpoint hook's fit state, to continue from its next
        epoch (or, taken mid-epoch, from its next batch)."""
        if epochs <= 0:
            return FitResult(0, 0, float("nan"))
        hooks = (hooks or FitHooks()).over(self.hooks)
        loader = self.data.train
        fit = FitState(desc, epochs, self.progress.add_task(desc, total=epochs * len(loader),
                                                            info=""),
                       self.optimisation(model, lr, sgd or SgdRecipe(), epochs * len(loader)))
        into = None
        if resume is not None:  # a resumed run: this fit had done `epochs_done` epochs
            for part, name in zip(fit.optimisation, ("optimizer", "scheduler", "scaler")):
                part.load_state_dict(resume[name])
            fit.first, fit.loss = resume["epochs_done"], resume["loss"]
            if resume.get("loader") is not None:  # stopped mid-epoch: its batches and loss so far
                loader.resume_at(resume["loader"])
                into = resume
        step = fit.first * len(loader) + (into["loader"]["batch"] if into else 0)
        self.progress.advance(fit.task, step)
        model.train()
        net = self.compiler(self.parallel(model),
                            lambda: self.data.example_input(self.cfg.batch_size), True, self.hw,
                            hooks.compiled)
        try:
            for fit.epoch in range(fit.first, epochs):
                epoch_started = time.perf_counter()
                loss_sum, step = self.train_epoch(net, fit, hooks, masks, step, into)
                into = None
                # the one host sync of the epoch; every rank's mean (the same on all ranks)
                fit.loss = float(distributed.sum_(loss_sum)) / len(loader) / \
                    distributed.current().size
                self.end_epoch(model, fit, hooks, time.perf_counter() - epoch_started)
        finally:
            self.progress.remove_task(fit.task)
        log.log(self.log_level, "%s: %d epoch(s), %d steps, lr %.4g, final loss %.4f", desc, epochs,
                step, lr, fit.loss)
        return FitResult(epochs, step, fit.loss)

    def optimisation(self, model: nn.Module, lr: float, sgd: SgdRecipe, total: int):
        """A fresh optimiser, its LR schedule over `total` steps, and the fp16 loss scaler."""
        opt = self.make_optimizer(model, lr, sgd)
        if (sgd.schedule or self.cfg.lr_schedule) == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        else:
            sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
        scaler = torch.amp.GradScaler(self.hw.device.type,
                                      enabled=self.hw.amp_dtype == torch.float16)
        return opt, sched, scaler

    def train_epoch(self, net: nn.Module, fit: FitState, hooks: FitHooks,
                    masks: Optional[MaskSet], step: int,
                    into: Optional[dict] = None) -> Tuple[torch.Tensor, int]:
        """One pass over the train loader (`into`: the rest of one stopped mid-way): the loss
        summed on the device (no host sync), and the step count after it. A stop asked
        (`hooks.stop`) checkpoints after the step under way, with the fit's state."""
        opt, sched, scaler = fit.optimisation
        loss_sum = torch.full((), into["loss_sum"] if into else 0.0, device=self.hw.device)
        smoothing = self.cfg.label_smoothing
        for x, y in self.data.train:
            if hooks.before_step is not None:
                hooks.before_step(step)
            if self.hw.compiled_graphs:  # a new step: the last one's graph outputs are done with
                torch.compiler.cudagraph_mark_step_begin()
            with self.hw.autocast():
                out = net(x)
                loss = (F.cross_entropy(out, y, label_smoothing=smoothing) if hooks.loss is None
                        else hooks.loss(out, y, x))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if masks is not None:
                masks.apply()
            loss_sum += loss.detach().float()
            step += 1
            self.progress.advance(fit.task)
            if hooks.stop is not None and hooks.checkpoint is not None and hooks.stop(step):
                hooks.checkpoint({**fit.checkpoint(fit.epoch), "loss_sum": float(loss_sum),
                                  "loader": self.data.train.position()})  # then it stops
        return loss_sum, step

    def end_epoch(self, model: nn.Module, fit: FitState, hooks: FitHooks,
                  seconds: float) -> None:
        """After an epoch: the divergence check, the progress line, then the hooks in order
        (after_epoch, report_epoch, checkpoint) and the line off a terminal."""
        desc, epoch, epochs, loss = fit.desc, fit.epoch, fit.epochs, fit.loss
        if not math.isfinite(loss):
            raise DivergenceError(f"training loss is {loss} in epoch {epoch + 1} of '{desc}': "
                                  "lower the learning rate")
        self.progress.update(fit.task, info=f"epoch {epoch + 1}/{epochs} loss {loss:.4f}")
        if hooks.after_epoch is not None:
            hooks.after_epoch(epoch, loss)
        val = hooks.report_epoch(epoch, loss, model) if hooks.report_epoch else None
        if self.epoch_lines:
            self.log_epoch(desc, epoch, epochs, fit.first, loss, val, seconds,
                           time.perf_counter() - fit.started)
        if hooks.checkpoint is not None:
            hooks.checkpoint(fit.checkpoint(epoch + 1))

    def log_epoch(self, desc: str, epoch: int, epochs: int, first: int, loss: float,
                  val: Optional[float], seconds: float, fit_seconds: float) -> None:
        """The line that stands in for a progress bar off a terminal: phase, epoch, loss, val
        top-1 (when the per-epoch log measured it), images/s, and the fit's time left."""
        done = epoch + 1 - first
        left = fit_seconds / done * (epochs - epoch - 1)
        loader = self.data.train
        images = getattr(loader, "num_samples", len(loader) * self.cfg.batch_size) * \
            distributed.current().size
        log.log(self.log_level, "%s: epoch %d/%d  loss %.4f%s  %.0f img/s  ETA %s", desc,
                epoch + 1, epochs, loss, "" if val is None else f"  val top-1 {val:.2f}%",
                images / max(seconds, 1e-9), clock_time(left))

    def parallel(self, model: nn.Module) -> nn.Module:
        """What a fit runs forward and backward through: the model itself, or in a distributed
        run a DistributedDataParallel wrapper built for this fit (after a compaction the shapes
        are new; frozen layers are left out, as they do not require grad). Hooks and masks keep
        working on `model`, whose parameters the wrapper shares."""
        if not distributed.current().distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.hw.device.index] if self.hw.is_cuda else None
        return DistributedDataParallel(model, device_ids=ids)  # BN statistics: rank 0's

    def distillation_loss(self, teacher: nn.Module, temperature: float) -> LossFn:
        """Cross-entropy plus KL(student || teacher) at `temperature`, averaged over the batch
        (the ICE-Pruning reference's form: no T^2 factor). The teacher runs in eval mode."""
        smoothing = self.cfg.label_smoothing

        def loss(out: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                target = F.softmax(teacher(x).float() / temperature, dim=1)
            kd = F.kl_div(F.log_softmax(out.float() / temperature, dim=1), target,
                          reduction="batchmean")
            return F.cross_entropy(out, y, label_smoothing=smoothing) + kd

        return loss

    def penalised_loss(self, penalty: Callable[[], torch.Tensor],
                       on_ce: Optional[Callable[[torch.Tensor], None]] = None) -> LossFn:
        """Cross-entropy plus `penalty()` (ADMM's ρ/2 Σ‖W − Z + U‖², a function of the weights);
        `on_ce` sees each batch's cross-entropy alone, detached (SLR's surrogate of f(W))."""
        smoothing = self.cfg.label_smoothing

        def loss(out: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            ce = F.cross_entropy(out, y, label_smoothing=smoothing)
            if on_ce is not None:
                on_ce(ce.detach())
            return ce + penalty()

        return loss

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def recalibrate_bn(self, model: nn.Module, loader) -> int:
        """Adaptive BN (EagleEye, Li et al., ECCV 2020): every BatchNorm's running statistics
        re-estimated as the plain average over `loader`'s batches (e.g. Data.calibration),
        every other module in eval mode. A pruned model's statistics are the dense model's
        until then, which is what makes its raw accuracy rank candidates poorly. Returns how
        many BatchNorm layers it recalibrated."""
        norms = [m for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not norms:
            return 0
        was_training = model.training
        model.eval()
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches, not a moving one
            m.train()
        for x, _ in loader:
            with self.hw.autocast():
                model(x)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
        return len(norms)

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, split: str = "val",
                 max_batches: Optional[int] = None) -> Evaluation:
        loader = getattr(self.data, split)
        was_training = model.training
        model.eval()
        net = self.compiler(model, lambda: self.data.example_input(self.cfg.eval_batch_size),
                            False, self.hw, self.hooks.compiled)
        correct1 = torch.zeros((), device=self.hw.device, dtype=torch.long)
        correct5 = torch.zeros((), device=self.hw.device, dtype=torch.long)
        loss_sum = torch.zeros((), device=self.hw.device)
        n = 0
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            if self.hw.compiled_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with self.hw.autocast():
                out = net(x)
            out = out.float()
            loss_sum += F.cross_entropy(out, y, reduction="sum")
            top = out.topk(min(5, out.shape[1]), dim=1).indices
            hits = top.eq(y[:, None])
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(1).sum()
            n += len(y)
        model.train(was_training)
        # a distributed run: each rank saw its share of the split; the counts of all of them
        totals = distributed.sum_(torch.stack([correct1.double(), correct5.double(),
                                               loss_sum.double(),
                                               torch.tensor(float(n), device=loss_sum.device)]))
        c1, c5, loss, n = totals.tolist()
        n = int(n)
        if n == 0:
            return Evaluation(float("nan"), float("nan"), float("nan"), 0)
        return Evaluation(100.0 * c1 / n, 100.0 * c5 / n, loss / n, n)
