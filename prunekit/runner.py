"""One run, start to finish (docs/architecture.md, "One run"), free of Hydra globals:
`run(cfg, out_dir)` is what `prune-run` calls and what tests call directly.

validate -> the run plan (plan.py) -> hardware + seeds -> data -> dense model (cache /
checkpoint / train) -> method.run -> final measurement of dense and pruned model -> steps.csv,
layers.csv, model.pt, summary.json.
A failure at any point still leaves a summary.json, with `status: failed` and the reason.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import platform
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from prunekit import distributed
from prunekit.artifacts import (
    cache_lock,
    dense_cache_path,
    dense_key,
    load_dense,
    save_dense,
    save_model,
)
from prunekit.clock import PhaseClock
from prunekit.config import validate
from prunekit.console import CONSOLE, print_summary
from prunekit.data import build_data
from prunekit.errors import ConfigError
from prunekit.files import atomic_write_text
from prunekit.hardware import (
    seed_everything,
    setup_hardware,
)
from prunekit.measurement import measure
from prunekit.methods import Context
from prunekit.methods.budget import achieved, aim, check_reach
from prunekit.methods.context import Tally, build_pruner
from prunekit.models import build_model, load_weights, read_state_dict
from prunekit.plan import RunPlan, plan_of
from prunekit.record import Recorder, summary_identity
from prunekit.resume import (
    Checkpointer,
    Journal,
    Replay,
    StopRequest,
    Terminated,
    loaders_of,
    rng_state,
    set_rng_state,
    stop_now,
)
from prunekit.run_dir import check_run_dir, read_summary
from prunekit.state import cpu_state, load_state
from prunekit.tracking import TRACKERS, EpochLog, RunNames, Tracking, run_names
from prunekit.train import FitHooks, Trainer

log = logging.getLogger(__name__)


def versions() -> Dict[str, Optional[str]]:
    """What produced the run: installed package versions (from their metadata, which a module's
    own __version__ can contradict), git commit, Python, CUDA."""
    from importlib import metadata

    def installed(dist: str) -> Optional[str]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    sha = None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"prunekit": installed("prunekit") or "not installed", "git_sha": sha,
            "python": platform.python_version(), "torch": torch.__version__,  # with its build tag
            "torchvision": installed("torchvision"), "cuda": torch.version.cuda,
            "hydra": installed("hydra-core"), "omegaconf": installed("omegaconf"),
            "torch_pruning": installed("torch-pruning")}


def obtain_dense(plan: RunPlan, model: nn.Module, trainer: Trainer,
                 user_state: Optional[Dict[str, torch.Tensor]],
                 epoch_log: Optional[EpochLog] = None,
                 checkpointer: Optional[Checkpointer] = None) -> dict:
    """Fill `model` with the dense weights: the user's (`user_state`, read from
    model.checkpoint), a cache hit, or training now. Dense training is timed as time_pretrain_s
    (less what `epoch_log` spent reporting); it is never pruning time; `dense_training_s` is what
    the training took, now or when cached. Jobs running in parallel (joblib, SLURM) that need the
    same dense model wait for the one training it. Training checkpoints like every other phase
    (`checkpointer`, see train_dense)."""
    if user_state is not None:
        load_weights(model, user_state, plan.model.checkpoint, plan.model.name)
        return {"dense_source": f"checkpoint {plan.model.checkpoint}", "time_pretrain_s": 0.0,
                "dense_training_s": None}
    content, cache = trainer.data.content, plan.dense.cache
    key, path = dense_key(plan, content), dense_cache_path(plan, content)
    # In a distributed run rank 0 alone looks up, locks and writes the cache; the other ranks
    # load what it loaded, or train with it (one DDP fit) and wait for its write.
    main = distributed.current().main
    locked = cache_lock(path) if cache and main else contextlib.nullcontext()
    with locked:
        meta = load_dense(path, model, key) if cache and main else None
        meta = distributed.from_main(meta)
        if meta is not None:
            if not main:
                load_dense(path, model, key)
            log.info("dense model: cached %s (trained in %.1f s)", path, meta["time_pretrain_s"])
            return {"dense_source": f"cache {path}", "time_pretrain_s": 0.0,
                    "dense_training_s": meta["time_pretrain_s"]}
        seconds, source = train_dense(plan, model, trainer, epoch_log, checkpointer)
        if cache and main and save_dense(path, model, key,
                                                      {"time_pretrain_s": seconds}):
            log.info("dense model: trained in %.1f s, cached at %s", seconds, path)
    distributed.barrier()
    return {"dense_source": source, "time_pretrain_s": seconds, "dense_training_s": seconds}


def train_dense(plan: RunPlan, model: nn.Module, trainer: Trainer,
                epoch_log: Optional[EpochLog], checkpointer: Optional[Checkpointer]):
    """Train the dense model; return (seconds, source). With checkpoints on, every epoch end
    where one is due (and the one after a stop signal) writes checkpoints/dense.pt: model, fit
    state, RNG and the seconds so far. A resumed run continues from it (a finished one is the
    dense model: no training), and ends with the weights an uninterrupted run ends with. Without
    the cache the finished training is checkpointed too, so a resume never trains it again."""
    loaders = loaders_of(trainer.data)
    recipe = plan.dense
    state = checkpointer.dense() if checkpointer is not None and plan.resume else None
    before = 0.0
    if state is not None:
        load_state(model, state["model"])
        set_rng_state(state["rng"], loaders)
        before = state["seconds"]
        log.info("dense model: resumed from %s (%d of %d epochs done)", state["path"],
                 state["fit"]["epochs_done"], recipe.epochs)
    started = time.perf_counter()

    def seconds() -> float:
        reporting = epoch_log.excluded if epoch_log is not None else 0.0
        return before + distributed.from_main(time.perf_counter() - started - reporting)

    def checkpoint(fit: dict, force: bool = False) -> None:
        if checkpointer is not None and (force or checkpointer.due()):
            trainer.hw.sync()
            checkpointer.save_dense({"fit": fit, "rng": rng_state(loaders), "seconds": seconds(),
                                     "model": cpu_state(model)})

    last: dict = {}  # the fit state at the last epoch end

    def epoch_end(fit: dict) -> None:
        last.update(fit)
        checkpoint(fit)

    fit_state = state["fit"] if state is not None else None
    if fit_state is None or fit_state["epochs_done"] < recipe.epochs:
        trainer.fit(model, recipe.epochs, recipe.lr, desc="dense training", sgd=recipe.sgd,
                    hooks=FitHooks(checkpoint=epoch_end, report_epoch=epoch_log),
                    resume=fit_state)
        trainer.hw.sync()
        if not recipe.cache and last:
            checkpoint(last, force=True)
    source = "trained" if state is None else f"trained, resumed from {state['path']}"
    return seconds(), source


CHANCE_MARGIN = 5.0  # points above chance under which a dense model counts as untrained


def warn_if_untrained(val_top1: float, num_classes: int, epochs: int) -> None:
    """A dense model within a few points of chance (too few epochs, a diverged lr) makes every
    pruning figure meaningless: say so before the pruning starts."""
    chance = 100.0 / num_classes
    if val_top1 < chance + CHANCE_MARGIN:
        log.warning("the dense model is at %.2f%% val top-1, within %g points of chance (%.2f%%): "
                    "pruning it measures nothing; train it longer (pretrain.epochs, now %d) or "
                    "check pretrain.lr", val_top1, CHANCE_MARGIN, chance, epochs)


def epoch_logs(plan: RunPlan, tracking: Tracking, trainer: Trainer):
    """A maker of the run's per-epoch logs (series, first index, where their time goes) when
    loggers are configured or the run is off a terminal (its epoch lines), else of none. Every
    rank logs (the evaluation is collective; rank 0 alone holds the trackers), whether or not
    the trackers started."""
    if all(plan.logger[name] is None for name in TRACKERS) and not trainer.epoch_lines:
        return lambda *args, **kw: None
    evaluate = ((lambda m: trainer.evaluate(m, "val", plan.val_max_batches).top1)
                if plan.logger.epoch_val else None)
    return lambda *args, **kw: EpochLog(tracking, evaluate, *args, **kw)


def setup(plan: RunPlan):
    """The hardware, seeded, and the data on it (a distributed run's share of it)."""
    hw = setup_hardware(plan.hardware, plan.deterministic)
    seed_everything(plan.seed, plan.deterministic)
    log.info("hardware  %s", hw.describe())
    data = build_data(plan.dataset, plan.train, channels=plan.model.in_channels,
                      device=hw.device, seed=plan.seed, channels_last=hw.channels_last)
    log.info("data      %s", data.describe())
    world = distributed.current()
    if world.distributed:
        if plan.train.batch_size < world.size:
            raise ConfigError(f"train.batch_size={plan.train.batch_size} is smaller than the "
                              f"{world.size} processes it is split over")
        data = data.shard(world.rank, world.size)
        log.info("world     rank %d of %d (%s): each takes its share of every batch", world.rank,
                 world.size, "NCCL" if hw.is_cuda else "gloo")
    return hw, data


def dense_reference(plan: RunPlan, model: nn.Module, trainer: Trainer):
    """The frozen dense model and its val top-1, with the RNGs reseeded: a cached run prunes
    exactly as an uncached one does."""
    seed_everything(plan.seed + 1, plan.deterministic)
    trainer.data.train.reseed(plan.seed + 1)
    dense_val = trainer.evaluate(model, "val", plan.val_max_batches).top1
    log.info("dense     val top-1 %.2f%%", dense_val)
    warn_if_untrained(dense_val, trainer.data.num_classes, plan.dense.epochs)
    return copy.deepcopy(model).eval().requires_grad_(False), dense_val


def method_context(plan: RunPlan, model: nn.Module, dense: nn.Module, dense_val: float,
                   trainer: Trainer, recorder: Recorder, replay: Replay, epoch_log) -> Context:
    """What the method gets: its pruner (built on the pruning clock) and its trainer, whose
    per-epoch log counts epochs over the run and leaves its own time out of the pruning time."""
    clock, tally = PhaseClock(sync=trainer.hw.sync), Tally()
    example = trainer.data.example_input(1)
    with clock.phase("prune"):
        pruner = build_pruner(plan, model, example)
    report = epoch_log("epoch", lambda: tally.finetune_epochs, clock.exclude)
    hooks = FitHooks(report_epoch=report, compiled=lambda s: clock.reassign(s, "compile"),
                     stop=trainer.hooks.stop)
    return Context(plan=plan, model=model, dense_model=dense, data=trainer.data,
                   trainer=trainer.with_hooks(hooks), pruner=pruner,
                   recorder=recorder, clock=clock, hw=trainer.hw, target=plan.target.fraction,
                   dense_val_top1=dense_val, check_input=trainer.data.example_input(32),
                   tally=tally, replay=replay,
                   # (a resumed model may be compacted: the cost keeps the dense reference)
                   rebuild_pruner=lambda m: build_pruner(plan, m, example, pruner.cost))


def run_method(ctx: Context, method, journal: Journal, stop: StopRequest) -> dict:
    """The method, from its target's aim to its last operation; its timing keys."""
    aim(ctx, method)
    method.run(ctx)
    stop.disarm()  # no checkpoint comes after the method: a signal stops now
    ctx.finish_replay()  # a run stopped after its method's last operation
    ctx.hw.sync()
    out = {"time_total_s": ctx.clock.elapsed(), **ctx.clock.as_summary()}
    if journal.resumed:  # how many operations the checkpoint had done
        out["resumed_from"] = journal.resume_at
    return out


def results(plan: RunPlan, ctx: Context, numbers: dict, dense_val: float,
            final_val: float) -> dict:
    """The summary's measured and counted keys."""
    t = ctx.tally
    return {**numbers, **achieved(plan.target, numbers, plan.method.prunes),
            "val_top1_dense": dense_val,
            "val_top1": final_val, "steps": t.steps, "finetune_count": t.finetune_count,
            "finetune_epochs": t.finetune_epochs, "compacted": t.compacted,
            "compaction_max_abs_diff": t.compaction_max_abs_diff,
            "target_unit": plan.target_unit(), "scope": plan.options.scope,
            "criterion": plan.options.criterion, "prunable_layers": len(ctx.pruner.layer_names),
            "channel_multiple": ctx.pruner.spec.channel_multiple,
            **t.results}


def write_outputs(plan: RunPlan, out_dir: Path, ctx: Context, rows: list,
                  checkpointer: Optional[Checkpointer]) -> None:
    """layers.csv and model.pt; then the checkpoints go (nothing is left to resume)."""
    ctx.recorder.layers([{**row, **ctx.tally.layer_info.get(row["layer"], {})} for row in rows])
    main = distributed.current().main
    if main:
        save_model(out_dir / "model.pt", ctx.model, plan.model, ctx.data.num_classes,
                   ctx.data.image_size, compacted=ctx.tally.compacted)
    distributed.barrier()  # (ranks leave together: no rank clears what another still reads)
    if checkpointer is not None and main:
        checkpointer.clear()


def pipeline(plan: RunPlan, out_dir: Path, recorder: Recorder, summary: dict,
             tracking: Tracking, stop: StopRequest) -> None:
    """One run, top to bottom: hardware and data, the model, its dense weights, the method, the
    final measurement of both models, the files."""
    # the user's weights are read first: a file that is no state dict fails before any data
    user_state = (read_state_dict(str(plan.user_weights))
                  if plan.user_weights is not None else None)
    hw, data = setup(plan)
    model = hw.prepare(build_model(plan.model, data.num_classes, data.image_size))
    summary.update(device=str(hw.device))
    check_reach(plan, model, data.example_input(1))
    checkpointer, journal = resumable(plan, out_dir, stop)
    stop.arm(checkpointer)  # a stop signal waits for the next checkpoint
    with Trainer(data, plan.train, hw, progress=distributed.current().main,
                 hooks=FitHooks(stop=stop.asked)) as trainer:
        epoch_log = epoch_logs(plan, tracking, trainer)
        dense_log = epoch_log("dense")
        summary.update(obtain_dense(plan, model, trainer, user_state, dense_log, checkpointer))
        dense, dense_val = dense_reference(plan, model, trainer)
        ctx = method_context(plan, model, dense, dense_val, trainer, recorder,
                             Replay(journal, checkpointer), epoch_log)
        summary.update(run_method(ctx, plan.method, journal, stop))
        final_val = trainer.evaluate(ctx.model, "val", plan.val_max_batches).top1
        numbers, rows = measure(plan, ctx.model, dense, trainer, hw, data, ctx.pruner.dense_numel,
                                ctx.pruner.layer_names, ctx.tally.compacted)
    summary.update(results(plan, ctx, numbers, dense_val, final_val))
    write_outputs(plan, out_dir, ctx, rows, checkpointer)


def resumable(plan: RunPlan, out_dir: Path, stop: StopRequest):
    """(checkpointer, journal): with `resume=true`, the journal of the newest usable checkpoint,
    whose state is restored where the method's replay reaches it."""
    c = plan.checkpoint
    checkpointer = (Checkpointer(out_dir, plan.checkpoint_hash, keep=c.keep,
                                 min_interval_s=c.min_interval_s,
                                 writes=distributed.current().main, stop=stop)
                    if c.enabled else None)
    if not plan.resume:  # (check_run_dir refused to start here unless checkpoint.restart)
        if checkpointer is not None:
            checkpointer.set_aside_all("checkpoint.restart=true")
        return checkpointer, Journal()
    state = checkpointer.latest() if checkpointer is not None else None
    if state is None:
        log.info("resume=true: no usable checkpoint in %s, starting from the beginning", out_dir)
        return checkpointer, Journal()
    journal = state["replay"]["journal"]
    log.info("resume=true: continuing from %s (%d operations done)", state["path"], len(journal))
    return checkpointer, Journal(journal, restore=state)


@contextlib.contextmanager
def stop_signals():
    """While the run lasts, SIGTERM and Ctrl-C stop it. With checkpoints on, SIGTERM stops it at
    the next checkpoint (after the training step under way, mid-epoch, or the pruning step:
    the work since the last one is kept), and so does Ctrl-C when a checkpoint is due (else at
    once: the last one is recent); a second signal stops it at once, as does one where no
    checkpoint lies ahead. Either way the summary says `interrupted`."""
    stop = StopRequest()

    def handler(signum, frame):
        name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
        if stop.waits(name):
            key = "SIGTERM" if name == "SIGTERM" else "Ctrl-C"
            log.warning("%s: stopping at the next checkpoint, after the training step or "
                        "pruning step under way (%s again stops at once)", key, key)
            return
        raise stop_now(name)

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals to whoever owns them
        pass
    try:
        yield stop
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
        stop.disarm()


def run(cfg: DictConfig, out_dir, show: bool = True, names: Optional[RunNames] = None) -> dict:
    """Run one configuration into `out_dir`; return the summary (also written to summary.json).
    `names`: where and as what the loggers track it (default: a single run's, tracking.run_names).

    Raises what stopped the run (ConfigError for bad input) after writing `status: failed`."""
    out_dir = Path(out_dir)
    mode = OmegaConf.select(cfg, "hardware.distributed", default="auto")
    # rank 0 alone writes files (an unknown mode is refused by validate, below)
    main = distributed.join(mode if mode in distributed.MODES else "off").main
    recorder = Recorder(out_dir if main else None)
    summary = summary_identity(cfg)
    summary["versions"] = versions()
    summary["run_dir"] = str(out_dir)
    tracking = Tracking()
    if check_run_dir(cfg, out_dir):  # before anything is written: another run's folder stays
        log.info("%s has finished this configuration: skipped (resume=true)", out_dir)
        return read_summary(out_dir)
    try:
        with stop_signals() as stop:
            validate(cfg)
            plan = plan_of(cfg)  # the configuration resolved, once: below here, typed objects
            summary["config_hash"] = plan.result_hash
            if main:
                atomic_write_text(out_dir / "config_resolved.yaml",
                                  OmegaConf.to_yaml(cfg, resolve=True))
                tracking = Tracking.start(cfg, names or run_names(cfg, out_dir))
                recorder.listeners.append(tracking.step)
            pipeline(plan, out_dir, recorder, summary, tracking, stop)
        summary["status"] = "ok"
    except Terminated:
        summary.update(status="interrupted", error="terminated (SIGTERM)")
        raise
    except KeyboardInterrupt:
        summary.update(status="interrupted", error="interrupted by the user (SIGINT)")
        raise
    except BaseException as e:
        summary.update(status="failed", error=f"{type(e).__name__}: {e}" if not isinstance(
            e, ConfigError) else str(e))
        raise
    finally:
        recorder.summary(summary)  # first: the result is on disk whatever a tracker does
        tracking.finish(summary, out_dir, bool(OmegaConf.select(cfg, "logger.log_model")))
        if show and main and summary["status"] == "ok":
            print_summary(summary, plan.method.headline_rows(summary))
            CONSOLE.print(f"results in {out_dir}", markup=False, soft_wrap=True)
    return summary
