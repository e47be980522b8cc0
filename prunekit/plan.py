"""The run, resolved once. `runner.run` validates the composed configuration, then builds one
RunPlan from it (`plan_of`): the method unit (instantiated here and nowhere else), the target
with its value, the dense model's training recipe, the sections each part reads, the hashes
that key its reuse. Below the runner, code takes the plan or the part of it it needs, never the
whole DictConfig (lightning-hydra-template's rule: instantiate from config once, then pass
typed objects); a method keeps its own config (`plan.method.options`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Type

from omegaconf import DictConfig

from prunekit.config import METHODS
from prunekit.hardware import training_precision
from prunekit.settings import config_hash
from prunekit.sparsity.units import Granularity, granularity
from prunekit.targets import Target, target_kind


@dataclass(frozen=True)
class SgdRecipe:
    """A fit's SGD beyond its learning rate; None takes the Trainer's train.* setting."""

    schedule: Optional[str] = None  # cosine, constant, ...
    weight_decay: Optional[float] = None
    momentum: Optional[float] = None
    nesterov: Optional[bool] = None


@dataclass(frozen=True)
class DenseRecipe:
    """How the dense model is trained (pretrain.*): its epochs, lr and SGD, and whether the
    result is cached for the next run that needs the same one."""

    epochs: int
    lr: float
    sgd: SgdRecipe
    cache: bool


@dataclass(frozen=True)
class RunPlan:
    method: Any  # the Method unit, built once with its own config (method.options)
    target: Target
    granularity: Type[Granularity]  # the class method.granularity names
    seed: int
    deterministic: bool
    resume: bool
    dense: DenseRecipe
    precision: str  # what hardware.precision (`auto` included) resolves to on this machine
    model: DictConfig  # the sections the layers below read, each its own node
    dataset: DictConfig
    train: DictConfig
    pretrain: DictConfig
    hardware: DictConfig
    checkpoint: DictConfig
    logger: DictConfig
    cache_dir: Path
    user_weights: Optional[Path]  # model.checkpoint: the user's dense weights
    result_hash: str  # what a finished run of this configuration is checked against
    checkpoint_hash: str  # what its checkpoints are (the precision as resolved here)

    @property
    def options(self) -> DictConfig:
        """The method's own config (the `method` section)."""
        return self.method.options

    @property
    def latency(self) -> DictConfig:
        return self.hardware.latency

    @property
    def val_max_batches(self) -> Optional[int]:
        return self.train.val_max_batches

    def target_unit(self) -> str:
        """What the target counts (summary key `target_unit`)."""
        return self.method.target_unit(self.target.kind, self.options)


def plan_of(cfg: DictConfig) -> RunPlan:
    """The plan of a validated configuration."""
    kind = target_kind(cfg)
    t = cfg.target
    target = Target(kind, kind.value(cfg), float(t.tolerance),
                    int(t.batch_size or cfg.hardware.latency.batch_sizes[0]),
                    int(t.max_measurements))
    p = cfg.pretrain
    dense = DenseRecipe(int(p.epochs), float(p.lr),
                        SgdRecipe(p.lr_schedule, p.weight_decay, p.momentum, p.nesterov),
                        bool(p.cache))
    precision = training_precision(cfg.hardware).name
    weights = cfg.model.checkpoint
    return RunPlan(
        method=METHODS.choose(cfg.method.name, "method.name")(cfg.method), target=target,
        granularity=granularity(cfg.method.granularity), seed=int(cfg.seed),
        deterministic=bool(cfg.deterministic), resume=bool(cfg.resume), dense=dense,
        precision=precision, model=cfg.model, dataset=cfg.dataset, train=cfg.train,
        pretrain=cfg.pretrain, hardware=cfg.hardware, checkpoint=cfg.checkpoint,
        logger=cfg.logger, cache_dir=Path(os.path.expanduser(str(cfg.cache_dir))),
        user_weights=Path(str(weights)).expanduser() if weights else None,
        result_hash=config_hash(cfg),
        checkpoint_hash=config_hash(cfg, {"hardware.precision": precision}))
