"""slimming: network slimming (Liu et al., ICCV 2017, "Learning Efficient Convolutional Networks
through Network Slimming").

1. Sparsity training: `epochs` epochs on CE + λ·Σ|γ| over the BatchNorm scales of the prunable
   channel groups (autograd's subgradient of |γ| is the paper's λ·sign(γ));
2. one global threshold on the channel scores |γ| (criterion `bn_scale`, registered here) removes
   the channels below it, every group keeping at least one; the model is compacted;
3. fine-tuning for `finetune_epochs` without the penalty.
Deviations (docs/methods/slimming.md): the sparsity training starts from the run's dense model,
not from scratch, so every method shares one dense model; the threshold is sized by `sparsity`,
the fraction of prunable weights, like every other method (the paper gives a channel fraction).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch
import torch.nn as nn

from prunekit.config import MethodConfig, model_label
from prunekit.errors import ConfigError, at_least
from prunekit.methods.base import Method, register
from prunekit.methods.context import Context
from prunekit.methods.steps import fixed_plan, prune_and_finetune
from prunekit.sparsity.criteria import CRITERIA, Criterion
from prunekit.sparsity.groups import ChannelGroup
from prunekit.train import FitHooks


@CRITERIA.register
class BnScale(Criterion):
    """|γ| of the BatchNorm channels a group's channels feed, summed over the group's norms (a
    residual add couples several). A group without BatchNorm scores +inf: it is pruned last."""

    name = "bn_scale"
    description = "|γ| of the channel's BatchNorm scale (network slimming)"
    scores_units = False

    def channel_scores(self, group, weights, per_element=False, generator=None):
        norms = [m for m in group.norms() if weights.get(m.module) is not None]
        if not norms:
            return torch.full((group.size,), float("inf"))
        total = torch.zeros(group.size, dtype=torch.float64)
        for m in norms:
            total += m.reduce(weights[m.module].detach().double().abs().cpu(), "sum")
        return total.float()


def bn_scales(model: nn.Module, groups: List[ChannelGroup]) -> List[str]:
    """The norms of the prunable channel groups (the ones the penalty shrinks): BatchNorm, or a
    LayerNorm whose channels a group holds (ConvNeXt), its γ a per-channel scale alike."""
    names = {m.module for g in groups for m in g.norms()}
    return [n for n in sorted(names)
            if getattr(model.get_submodule(n), "weight", None) is not None]


@dataclass
class SlimmingConfig(MethodConfig):
    granularity: str = "filter"
    criterion: str = "bn_scale"
    scope: str = "global"  # one threshold over every layer, as in the paper
    penalty: float = 1e-4  # λ (the paper: 1e-4 for VGG, 1e-5 for ResNet and DenseNet)
    epochs: int = 10  # sparsity-training epochs
    finetune_epochs: int = 5


@register
class Slimming(Method):
    name = "slimming"
    schema = SlimmingConfig
    summary = "network slimming (Liu et al. 2017): L1 on BN scales, global |γ| threshold"
    quick = ("method.epochs=1", "method.finetune_epochs=1")
    granularities = ("filter",)
    criteria = ("bn_scale",)

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        at_least(cfg, "method.penalty", 0)

    def run(self, ctx: Context) -> None:
        c = self.options
        norms = bn_scales(ctx.model, list(ctx.pruner.groups))
        if not norms:
            raise ConfigError(f"method=slimming needs BatchNorm layers (or channel LayerNorms) "
                              f"in the prunable channel groups; model {model_label(ctx.plan.model)}"
                              " has none (no channel scale to sparsify): use another method")

        def penalty() -> torch.Tensor:
            return c.penalty * sum(ctx.model.get_submodule(n).weight.abs().sum() for n in norms)

        fit = ctx.finetune(c.epochs, c.lr, desc="sparsity training",
                           hooks=FitHooks(loss=ctx.trainer.penalised_loss(penalty)))
        gammas = torch.cat([ctx.model.get_submodule(n).weight.detach().abs().flatten()
                            for n in norms])
        ctx.record_step(event="sparsity_training", step=0, epochs=c.epochs, loss=fit.loss,
                        gamma_l1=float(gammas.sum()),
                        gamma_small=float((gammas < 1e-2).float().mean()),  # |γ| < 0.01
                        val_top1=ctx.validate())
        prune_and_finetune(ctx, 1, lambda: ctx.prune_to(ctx.target),
                           fixed_plan(c.finetune_epochs, c.lr), target=ctx.target)
