"""ICE-Pruning's auto-tuning stage: an Optuna grid search with whole-pipeline trials on small
subsets of train and val; each trial yields its val top-1 drop D and seconds T, and the trial with
the lowest w·D/D_max + (1 − w)·T/T_max wins. All of it is pruning time (`time_search_s`); an
optional reference trial with the configured knobs is not. Details: docs/methods/ice.md.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Dict, List, Sequence, Tuple

from omegaconf import DictConfig

from prunekit import distributed
from prunekit.methods.context import Context
from prunekit.methods.ice_pipeline import IceKnobs, ice_prune, least_changed, probe_weight_changes
from prunekit.train import DivergenceError

log = logging.getLogger(__name__)


# The reference code's names for the grid's knobs. Optuna's GridSampler sorts the names before
# its seeded shuffle, so the grid is searched under these: with the same seed, the same points
# in the same order as the reference (our names sort differently, and would try other points).
REFERENCE_NAMES = {"threshold": "thre", "freeze_ratio": "fr", "lr": "base", "lr_p": "p",
                   "lr_beta": "beta", "lr_delta": "delta"}
OBJECTIVES = ("normalised", "reference")


def reference_score(drop: float, seconds: float) -> float:
    """The reference code's objective, minimised: T/max(D, T) + D/max(D, T), D in points and T
    in seconds, i.e. 1 + D/T where D < T (so of two equally accurate trials the slower wins)."""
    hi = max(drop, seconds)
    return (drop + seconds) / hi if hi > 0 else 0.0


def choose_trial(drops: Sequence[float], times: Sequence[float], accuracy_weight: float,
                 objective: str = "normalised") -> int:
    """Index of the trial with the lowest weighted sum of drop and time, each as a fraction of
    the largest over the trials (a drop below zero, a gain, counts as none); with
    `objective="reference"`, the lowest `reference_score` (the first of equal ones, as Optuna's
    best trial)."""
    if objective == "reference":
        scores = [reference_score(d, t) for d, t in zip(drops, times)]
        return min(range(len(scores)), key=lambda i: scores[i])

    def normalised(values: Sequence[float]) -> List[float]:
        values = [max(v, 0.0) for v in values]
        hi = max(values)
        return [v / hi if hi > 0 else 0.0 for v in values]

    d, t = normalised(drops), normalised(times)
    score = [accuracy_weight * a + (1.0 - accuracy_weight) * b for a, b in zip(d, t)]
    return min(range(len(score)), key=lambda i: (score[i], drops[i], times[i]))


def grid_of(options: DictConfig) -> Dict[str, List[float]]:
    return {k: [float(v) for v in options.autotune.grid[k]] for k in IceKnobs.names()}


class TrialBench:
    """What every trial shares: the subsets, the dense model's val top-1 on them, the probe."""

    def __init__(self, ctx: Context, options: DictConfig):
        a = options.autotune
        self.ctx, self.options = ctx, options
        self.data = ctx.data.subset(train=a.train_fraction, val=a.val_fraction, seed=ctx.plan.seed)
        template = ctx.fork(self.data, quiet=True)
        self.dense_top1 = template.validate(ctx.dense_model)
        self.changes = probe_weight_changes(template, options) if options.use_freeze else {}

    def trial(self, knobs: IceKnobs) -> dict:
        """The whole ICE pipeline with `knobs` on the subsets: its drop, seconds and counts.
        Raises DivergenceError when its training diverged."""
        trial_ctx = self.ctx.fork(self.data, quiet=True)
        trial_ctx.compare_with(self.dense_top1)
        frozen = least_changed(self.changes, knobs.freeze_ratio) if self.options.use_freeze else []
        started = time.perf_counter()
        top1 = ice_prune(trial_ctx, self.options, knobs, frozen, log_level=logging.DEBUG)
        trial_ctx.hw.sync()
        return dict(status="ok", val_top1=top1, drop=self.dense_top1 - top1,
                    # rank 0's seconds: the choice weighs them, and must be one on every rank
                    time_s=distributed.from_main(time.perf_counter() - started),
                    finetunes=trial_ctx.tally.finetune_count, steps=trial_ctx.tally.steps)


def autotune(ctx: Context, options: DictConfig,
             given: IceKnobs) -> Tuple[IceKnobs, Dict[str, float]]:
    """Run the trials; return the chosen knobs (the given ones if every trial diverged) and the
    trials' freezing probe (its weight change per candidate conv; empty without freezing)."""
    import optuna  # imported when tuning runs, not with the package

    a = options.autotune
    grid = grid_of(options)
    size = math.prod(len(values) for values in grid.values())
    n_trials = min(a.trials, size)
    bench = TrialBench(ctx, options)
    log.info("ICE autotune: %d of %d grid points, trials on %d train / %d val images", n_trials,
             size, bench.data.train.num_samples, bench.data.val.num_samples)

    rows: List[dict] = []
    progress = ctx.trainer.progress
    task = progress.add_task("ICE autotune", total=n_trials, info="")

    def objective(trial: "optuna.Trial"):
        knobs = given.with_values(**{k: trial.suggest_categorical(REFERENCE_NAMES[k], v)
                                     for k, v in grid.items()})
        row = {"trial": trial.number + 1, **knobs.as_dict()}
        try:
            row.update(bench.trial(knobs))
            log.info("ICE autotune trial %d/%d: %s -> drop %.2f points, %.1f s, %d/%d fine-tunes",
                     trial.number + 1, n_trials, knobs, row["drop"], row["time_s"],
                     row["finetunes"], row["steps"])
            return row["drop"], row["time_s"]
        except DivergenceError as e:
            row.update(status="diverged", error=str(e))
            raise optuna.TrialPruned(str(e)) from e
        finally:
            rows.append(row)
            ctx.recorder.table("trials", rows)
            progress.advance(task)

    try:
        grid_search(objective, grid, n_trials, ctx.plan.seed)
    finally:
        progress.remove_task(task)

    chosen = chosen_knobs(ctx, given, rows, a.accuracy_weight, a.objective)
    if a.reference_trial:
        reference_trial(ctx, bench, given, rows)
    ctx.tally.report(autotune_trials=n_trials, autotune_dense_val_top1=bench.dense_top1,
                       autotune_train_images=bench.data.train.num_samples,
                       autotune_val_images=bench.data.val.num_samples)
    return chosen, bench.changes


def grid_search(objective: Callable, grid: Dict[str, list], n_trials: int, seed: int) -> None:
    """`n_trials` points of `grid` in Optuna's GridSampler, both objectives (drop, time)
    minimised, as the reference's auto_tune_ice runs them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=optuna.samplers.GridSampler(
                                    {REFERENCE_NAMES[k]: v for k, v in grid.items()}, seed=seed))
    study.optimize(objective, n_trials=n_trials)


def chosen_knobs(ctx: Context, given: IceKnobs, rows: List[dict], accuracy_weight: float,
                 objective: str = "normalised") -> IceKnobs:
    """The knobs of the trial `choose_trial` picks (marked `chosen` in trials.csv), or the given
    ones if every trial diverged."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        log.warning("ICE autotune: every trial diverged; running with the given values")
        return given
    best = choose_trial([r["drop"] for r in ok], [r["time_s"] for r in ok], accuracy_weight,
                        objective)
    chosen = given.with_values(**{k: ok[best][k] for k in IceKnobs.names()})
    for i, r in enumerate(ok):
        r["chosen"] = i == best
    ctx.recorder.table("trials", rows)
    log.info("ICE autotune chose trial %d: %s", ok[best]["trial"], chosen)
    return chosen


def reference_trial(ctx: Context, bench: TrialBench, knobs: IceKnobs, rows: List[dict]) -> None:
    """One more trial with the configured knobs, for comparison only: recorded in trials.csv as
    `chosen=reference`, its seconds excluded from the pruning time (the run's start moves)."""
    started = time.perf_counter()
    row = {"trial": len(rows) + 1, **knobs.as_dict(), "chosen": "reference"}
    try:
        row.update(bench.trial(knobs))
        log.info("ICE autotune reference trial (the configured knobs %s): drop %.2f points, "
                 "%.1f s", knobs, row["drop"], row["time_s"])
    except DivergenceError as e:
        row.update(status="diverged", error=str(e))
    rows.append(row)
    ctx.recorder.table("trials", rows)
    seconds = time.perf_counter() - started
    ctx.clock.exclude(seconds)  # a reference figure, not part of the method
    ctx.tally.report(time_reference_trial_s=seconds, reference_trial_drop=row.get("drop"))
