"""ice: ICE-Pruning (Hu, Henderson, Cano 2025, arXiv 2505.07411), after the paper and its code.

Block-wise filter pruning that fine-tunes only when val top-1 has dropped `threshold` points below
the dense model's, freezes the conv layers a probe finds least changing, fine-tunes at a
pruning-aware LR, and tunes those knobs first with an Optuna grid search of whole-pipeline trials.
The pipeline is `ice_pipeline.py`, the tuning `ice_autotune.py`; the rules and the deviations from
the reference code: docs/methods/ice.md.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import OmegaConf

from prunekit.errors import ConfigError, at_least, choice, positive
from prunekit.methods.base import Method, register
from prunekit.methods.context import Context
from prunekit.methods.ice_autotune import OBJECTIVES, autotune
from prunekit.methods.ice_pipeline import IceKnobs, ice_prune, least_changed, probe_weight_changes
from prunekit.methods.steps import DistillingConfig
from prunekit.sparsity.criteria import CRITERIA

log = logging.getLogger(__name__)


@dataclass
class IceGrid:
    """The auto-tuning grid of the ICE-Pruning paper (ResNet settings); each key is a method key."""

    threshold: List[float] = field(default_factory=lambda: [0.5, 1.5])
    freeze_ratio: List[float] = field(default_factory=lambda: [0.3, 0.9])
    lr: List[float] = field(default_factory=lambda: [1e-3, 5e-3])
    lr_p: List[float] = field(default_factory=lambda: [0.1, 0.15, 0.2])
    lr_beta: List[float] = field(default_factory=lambda: [40.0, 50.0, 60.0])
    lr_delta: List[float] = field(default_factory=lambda: [6e-4, 7e-4, 8e-4])


@dataclass
class IceAutotuneConfig:
    enabled: bool = True
    trials: int = 6  # grid points tried (the paper: 6 for ResNet, 3 DenseNet, 7 WRN)
    train_fraction: float = 0.02  # of the train split, per trial (the paper: 2% of CIFAR-10)
    val_fraction: float = 0.04  # of the val split, per trial (the paper: 200 images)
    accuracy_weight: float = 0.5  # objective: w * drop + (1 - w) * time, each over its max
    objective: str = "normalised"  # reference: the reference code's T/max(D,T) + D/max(D,T)
    grid: IceGrid = field(default_factory=IceGrid)
    reference_trial: bool = False  # also try the configured knobs, for reporting (not timed)


@dataclass
class IceConfig(DistillingConfig):
    granularity: str = "filter"
    lr: float = 1e-3  # the pruning-aware LR's base (and the constant lr without it)
    threshold: float = 1.5  # fine-tune when dense val top-1 - val top-1 >= this (points)
    freeze_ratio: float = 0.3  # fraction of the candidate conv+BN pairs frozen
    lr_p: float = 0.12  # the LR's knee sits at remaining fraction 1 - p
    lr_beta: float = 50.0  # steepness of the knee
    lr_delta: float = 7.5e-4  # the LR falls from base to base - delta
    probe_lr: float = 1e-3  # the freezing probe's fixed fine-tuning lr
    probe_data: str = "trials"  # trials: reuse the tuning stage's probe; train: probe again
    finetune_epochs: int = 1  # per fine-tune (the paper: one)
    use_threshold: bool = True  # ablation: false fine-tunes after every step
    use_freeze: bool = True  # ablation: false freezes nothing (and skips the probe)
    use_adaptive_lr: bool = True  # ablation: false fine-tunes at the constant `lr`
    val_fraction: float = 1.0  # of the val split used for the fine-tune decisions
    autotune: IceAutotuneConfig = field(default_factory=IceAutotuneConfig)


@register
class Ice(Method):
    name = "ice"
    schema = IceConfig
    summary = "ICE-Pruning (Hu et al. 2025): block-wise, fine-tunes only when needed, tuned"
    quick = ("method.autotune.enabled=false",)
    granularities = ("filter",)

    @classmethod
    def accepted_criteria(cls):
        return tuple(CRITERIA)  # the activation criteria too: ICE scores channel groups

    @classmethod
    def sparsity_unit(cls, options) -> str:
        return "channels per block"

    @classmethod
    def check(cls, cfg) -> None:
        m = cfg.method
        if m.granularity not in cls.accepted_granularities():
            raise ConfigError(f"method.granularity={m.granularity}: ICE-Pruning removes filters "
                              "block by block; use method.granularity=filter")
        super().check(cfg)
        for key in ("probe_lr", "lr_beta"):
            positive(cfg, f"method.{key}")
        cls.schema.check_distillation(cfg)
        choice(cfg, "method.probe_data", ("trials", "train"))
        for key in ("threshold", "lr_delta"):
            at_least(cfg, f"method.{key}", 0)
        at_least(cfg, "method.finetune_epochs", 1, " (set method.use_threshold to fine-tune less)")
        at_least(cfg, "method.autotune.trials", 1)
        for key in ("val_fraction", "autotune.train_fraction", "autotune.val_fraction"):
            value = OmegaConf.select(m, key)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"method.{key}={value} must be in (0, 1]: the fraction used")
        choice(cfg, "method.autotune.objective", OBJECTIVES)
        if not 0.0 <= m.autotune.accuracy_weight <= 1.0:
            raise ConfigError(f"method.autotune.accuracy_weight={m.autotune.accuracy_weight} "
                              "must be in [0, 1]")
        grid = m.autotune.grid
        for key in grid:
            if len(grid[key]) == 0:
                raise ConfigError(f"method.autotune.grid.{key} is empty: give at least one value")
        # every value the run can use: the given ones, and the grid's when tuning
        values = {k: [m[k]] + (list(grid[k]) if m.autotune.enabled else []) for k in grid}
        if min(values["threshold"]) < 0:
            raise ConfigError("method.threshold values must be >= 0 (points of val top-1)")
        if not all(0.0 <= v <= 1.0 for v in values["freeze_ratio"]):
            raise ConfigError("method.freeze_ratio values must be in [0, 1]")
        if not all(0.0 <= v < 0.5 for v in values["lr_p"]):
            raise ConfigError("method.lr_p values must be in [0, 0.5): the LR's knee is at "
                              "remaining fraction 1 - p, and x / (2(1 - p) - x) needs "
                              "2(1 - p) > 1")
        if min(values["lr_beta"]) <= 0 or min(values["lr"]) <= 0 or min(values["lr_delta"]) < 0:
            raise ConfigError("method.lr and method.lr_beta values must be > 0, method.lr_delta "
                              ">= 0")
        if max(values["lr_delta"]) >= min(values["lr"]):
            raise ConfigError(f"method.lr_delta={max(values['lr_delta'])} must be below "
                              f"method.lr={min(values['lr'])}: the pruning-aware LR falls to "
                              "lr - delta")

    def reach(self, ctx: Context) -> None:
        ctx.prune_groups(ctx.pruner.order.blockwise_groups(), ctx.block_ratio())

    def max_removed(self, pruner) -> float:
        return pruner.planner.max_removed(pruner.order.blockwise_groups())

    def run(self, ctx: Context) -> None:
        c = self.options
        knobs = IceKnobs.from_options(c)
        changes: Optional[Dict[str, float]] = None  # the freezing probe's weight changes
        if c.autotune.enabled:
            def tune() -> dict:
                chosen, probe = autotune(ctx, c, knobs)
                return {"knobs": chosen, "probe": probe}

            with ctx.clock.phase("search"):
                tuned = ctx.once(tune)
            knobs = tuned["knobs"]
            if c.probe_data == "trials":  # the ranking the trials froze by, on their subset
                changes = tuned["probe"]
                ctx.tally.report(probe_images=ctx.tally.results.get("autotune_train_images"))
        if c.val_fraction < 1.0:  # decide on a subset of val, against the dense model on it
            ctx.use_data(ctx.data.subset(val=c.val_fraction, seed=ctx.plan.seed))
            ctx.compare_with(ctx.validate(ctx.dense_model))
        frozen: List[str] = []
        if c.use_freeze:
            if changes is None:
                def probe_run() -> Dict[str, float]:
                    with ctx.clock.phase("probe"):  # pruning time, in a phase of its own
                        probe = ctx.fork()
                        scores = probe_weight_changes(probe, c)
                    ctx.tally.add_epochs(probe.tally.finetune_epochs)
                    return scores

                changes = ctx.once(probe_run)
                ctx.tally.report(probe_images=ctx.data.train.num_samples)
            frozen = least_changed(changes, knobs.freeze_ratio)
            log.info("ICE freezing %d of %d convs (least changed in the probe)", len(frozen),
                     len(changes))
        ice_prune(ctx, c, knobs, frozen)
        hparams = OmegaConf.to_container(c, resolve=True)
        hparams.update(knobs.as_dict())
        ctx.tally.report(hparams=hparams, ice_knobs=knobs.as_dict(), frozen_layers=frozen)
