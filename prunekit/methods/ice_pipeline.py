"""ICE-Pruning's pipeline: the three rules (fine-tune decision, freezing, pruning-aware LR), the
freezing probe and the block-by-block loop, shared by the method (`ice.py`) and its tuning trials
(`ice_autotune.py`). The rules and the deviations from the paper: docs/methods/ice.md.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
from omegaconf import DictConfig

from prunekit.journaled import journaled
from prunekit.methods.context import Context
from prunekit.methods.steps import (
    FinetunePlan,
    blockwise_steps,
    distillation_hooks,
    prune_and_finetune,
)
from prunekit.metrics import prunable_sparsity
from prunekit.models import prunable_layers
from prunekit.plan import SgdRecipe
from prunekit.sparsity.groups import ChannelGroup

log = logging.getLogger(__name__)

SHORTCUT_NAMES = ("downsample", "shortcut")  # torchvision's and the common CIFAR ResNets' names


CONSTANT_LR = SgdRecipe(schedule="constant")  # the reference's fine-tunes: no schedule


@journaled
@dataclass(frozen=True)
class IceKnobs:
    """The hyperparameters the auto-tuning stage chooses (the paper's grid)."""

    threshold: float
    freeze_ratio: float
    lr: float
    lr_p: float
    lr_beta: float
    lr_delta: float

    @classmethod
    def from_options(cls, options: DictConfig) -> "IceKnobs":
        return cls(**{k: float(options[k]) for k in cls.names()})

    @classmethod
    def names(cls) -> List[str]:
        return list(cls.__dataclass_fields__)

    def with_values(self, **values) -> "IceKnobs":
        return replace(self, **{k: float(v) for k, v in values.items()})

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return " ".join(f"{k}={v:g}" for k, v in self.as_dict().items())


# --------------------------------------------------------------------------- the three rules
def should_finetune(dense_top1: float, top1: float, threshold: float) -> bool:
    """Rule i: fine-tune once the cumulative val top-1 drop reaches `threshold` points."""
    return dense_top1 - top1 >= threshold


def pruning_aware_lr(x: float, base: float, p: float, beta: float, delta: float) -> float:
    """Rule iii: the LR for remaining fraction x of the prunable conv weights (0 < x <= 1)."""
    ratio = x / (2.0 * (1.0 - p) - x)
    return base - delta / (1.0 + ratio ** beta)


def weight_change_scores(orig: Dict[str, torch.Tensor], pre: Dict[str, torch.Tensor],
                         post: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Rule ii's probe score per layer: |‖W_post‖₁ − ‖W_pre‖₁| / ‖W_orig‖₂ (orig: before pruning,
    pre: pruned, post: pruned and fine-tuned one epoch)."""
    return {n: abs(float(post[n].abs().sum()) - float(pre[n].abs().sum()))
            / max(float(orig[n].norm()), 1e-12) for n in post}


def least_changed(scores: Dict[str, float], ratio: float) -> List[str]:
    """Rule ii: the ceil(ratio · N) layers whose weights changed least (ties in network order)."""
    k = min(len(scores), math.ceil(ratio * len(scores) - 1e-9))
    names, values = list(scores), list(scores.values())
    ranked = sorted(range(len(names)), key=lambda i: (values[i], i))
    return [names[i] for i in ranked[:k]]


def rule_layers(layers: Dict[str, nn.Module]) -> List[str]:
    """The layers ICE's rules read, the paper's "convs": the prunable convs, or in a network
    without any (a transformer) its prunable Linears."""
    convs = [n for n, m in layers.items() if isinstance(m, nn.Conv2d)]
    return convs or list(layers)


def freeze_candidates(model: nn.Module) -> List[str]:
    """Convs (a transformer's Linears) that may be frozen: not the stem, not a shortcut, not the
    classifier."""
    layers = prunable_layers(model, prune_first_conv=False, prune_classifier=False)
    return [n for n in rule_layers(layers)
            if not any(part in SHORTCUT_NAMES for part in n.split("."))]


# --------------------------------------------------------------------------- the pipeline
def prune_block(ctx: Context, groups: Sequence[ChannelGroup]) -> int:
    """Remove ceil(ratio · C) filters of each of the block's groups by the criterion (a
    data-driven one reads the model on `criterion_batches` training batches first); the ratio is
    `sparsity`, or the one that meets a cost target (Context.block_ratio)."""
    return ctx.prune_groups(groups, ctx.block_ratio())


def probe_weight_changes(probe: Context, options: DictConfig) -> Dict[str, float]:
    """Rule ii's probe, on a fork: prune the first block, fine-tune one epoch at `probe_lr`, score
    every freeze candidate."""
    convs = freeze_candidates(probe.model)

    def weights() -> Dict[str, torch.Tensor]:
        return {n: probe.model.get_submodule(n).weight.detach().clone() for n in convs}

    orig = weights()
    _, groups = probe.pruner.order.steps_in_order()[0]
    prune_block(probe, groups)
    probe.compact()
    pre = weights()
    probe.finetune(1, options.probe_lr, desc="ICE freezing probe", sgd=CONSTANT_LR,
                   hooks=distillation_hooks(probe, options))
    return weight_change_scores(orig, pre, weights())


def frozen_modules(ctx: Context, convs: Sequence[str]) -> List[str]:
    """The frozen conv layers and the BatchNorm each one feeds."""
    out = []
    for conv in convs:
        out.append(conv)
        norm = ctx.pruner.groups.norm_after(conv)
        if norm is not None:
            out.append(norm)
    return out


def ice_prune(ctx: Context, options: DictConfig, knobs: IceKnobs, frozen_convs: Sequence[str],
              log_level: int = logging.INFO) -> float:
    """The pruning loop with the three rules; returns the final val top-1."""
    ctx.freeze(frozen_modules(ctx, frozen_convs))
    convs = {n: ctx.pruner.dense_numel[n] for n in rule_layers(
        {n: ctx.model.get_submodule(n) for n in ctx.pruner.dense_numel})}
    fit = dict(hooks=distillation_hooks(ctx, options), sgd=CONSTANT_LR)
    n_blocks = len(ctx.pruner.order.steps_in_order())
    val = ctx.dense_val_top1
    for k, block, groups in blockwise_steps(ctx):

        def plan(val_pruned: float) -> FinetunePlan:
            x = 1.0 - prunable_sparsity(ctx.model, convs)
            tune = not options.use_threshold or should_finetune(ctx.dense_val_top1, val_pruned,
                                                            knobs.threshold)
            lr = (pruning_aware_lr(x, knobs.lr, knobs.lr_p, knobs.lr_beta, knobs.lr_delta)
                  if options.use_adaptive_lr else knobs.lr)
            log.log(log_level, "ICE step %d/%d %s: val top-1 %.2f%% (dense %.2f%%) -> %s",
                    k, n_blocks, block, val_pruned, ctx.dense_val_top1,
                    f"fine-tune at lr {lr:.3g}" if tune else "no fine-tune")
            return FinetunePlan(options.finetune_epochs if tune else 0, lr,
                                {"remaining_conv": x, "frozen": len(frozen_convs)})

        val = prune_and_finetune(
            ctx, k, lambda: prune_block(ctx, groups),
            plan, fit=fit, block=block, target=ctx.block_ratio())
    ctx.unfreeze()
    return val
