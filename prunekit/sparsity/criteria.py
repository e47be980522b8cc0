"""Pruning criteria: one class each, registered by name in `CRITERIA` (higher score = kept).

A criterion scores three kinds of unit, as the granularity asks:
- `unit_scores`: the units of one weight tensor (elements, filters, channels, columns);
- `channel_scores`: the channels of a channel group (filters coupled across layers);
- `element_scores`: single weights, for N:M selection.

Most criteria are an elementwise *saliency* summed over a unit and then `combine`d (l1: Σ|w|;
l2: √Σw²; taylor: Σ(w·∂L/∂w)²). Data-driven criteria (`needs_data`) read the model on a few
training batches first: `prepare` is called before every pruning decision, on the model as it is.
A new criterion is one class here with `@CRITERIA.register`; methods accept it by default when
it can score weight units (`scores_units`).
"""
from __future__ import annotations

from typing import ClassVar, Dict, Iterable, Optional, Sequence, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.registry import Registry
from prunekit.sparsity.activations import activation_scores
from prunekit.sparsity.groups import ChannelGroup
from prunekit.sparsity.units import unit_matrix

CRITERIA: Registry[Type["Criterion"]] = Registry("criterion")  # `@CRITERIA.register` a class


def criterion_named(criterion) -> "Criterion":
    """A Criterion instance from a name (or the instance itself)."""
    if isinstance(criterion, Criterion):
        return criterion
    return CRITERIA.choose(criterion, "method.criterion")()


def _rand(shape, generator: Optional[torch.Generator], device) -> torch.Tensor:
    return torch.rand(shape, generator=generator,
                      device=generator.device if generator else device).to(device)


class Criterion:
    """Importance of prunable units. Subclasses set `name` and a saliency (or override the
    scoring methods outright)."""

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False  # call prepare(model, layers, groups, batches, n) first
    scores_units: ClassVar[bool] = True  # False: channel groups only (activation criteria)
    description: ClassVar[str] = ""

    def prepare(self, model: nn.Module, layers: Sequence[str], groups: Sequence[ChannelGroup],
                batches: Iterable, max_batches: int) -> None:
        """Read what a data-driven criterion needs from `model` on up to `max_batches` batches."""

    def saliency(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """Importance of every weight of layer `name` (w's shape, in w's floating dtype: the unit
        path scores in float32, channel groups in float64)."""
        raise NotImplementedError(f"criterion {self.name} scores channel groups only")

    def combine(self, total: torch.Tensor, elems, per_element: bool) -> torch.Tensor:
        """Per-unit sums of saliency -> scores; `per_element` divides out the unit size (`elems`,
        a number or one per unit) so units of different layers compare fairly (global scope)."""
        return total / elems if per_element else total

    def unit_scores(self, name: str, w: torch.Tensor, granularity: str, per_element: bool = False,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        rows = unit_matrix(self.saliency(name, w.detach().float()), granularity)
        return self.combine(rows.sum(1), rows.shape[1], per_element).float()

    def channel_scores(self, group: ChannelGroup, weights: Dict[str, torch.Tensor],
                       per_element: bool = False,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Per group channel, from the saliency of its output members' filters (the root's filter
        for a block-inner group, the coupled filters' joint score across a residual add).
        `weights`: the weight of every member of the group, by module name."""
        sal = {m.module: self.saliency(m.module, weights[m.module].detach().double())
               for m in group.outputs()}
        total = group.per_channel(sal, lambda rows: rows.sum(1))
        elems = group.per_channel(sal, lambda rows: torch.full((rows.shape[0],), rows.shape[1]))
        elems = elems.clamp_min(1)
        return self.combine(total, elems, per_element).float()

    def element_scores(self, name: str, w: torch.Tensor,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.saliency(name, w.detach().float())


@CRITERIA.register
class L1(Criterion):
    name = "l1"
    description = "Σ|w| over the unit (magnitude)"

    def saliency(self, name: str, w: torch.Tensor) -> torch.Tensor:
        return w.abs()


@CRITERIA.register
class L2(Criterion):
    name = "l2"
    description = "√Σw² over the unit (the exact Euclidean projection keeps the largest)"

    def saliency(self, name: str, w: torch.Tensor) -> torch.Tensor:
        return w.pow(2)

    def combine(self, total: torch.Tensor, elems, per_element: bool) -> torch.Tensor:
        score = total.sqrt()
        if not per_element:
            return score
        return score / (elems.sqrt() if isinstance(elems, torch.Tensor) else elems ** 0.5)

    def element_scores(self, name, w, generator=None):
        return w.detach().float().abs()  # the order of w², without squaring's float ties


@CRITERIA.register
class Random(Criterion):
    name = "random"
    description = "uniform random scores from the run's seeded generator (the control)"

    def unit_scores(self, name, w, granularity, per_element=False, generator=None):
        return _rand(unit_matrix(w, granularity).shape[0], generator, w.device)

    def channel_scores(self, group, weights, per_element=False, generator=None):
        return _rand(group.size, generator, "cpu")

    def element_scores(self, name, w, generator=None):
        # drawn in N:M's channels-last row order, so a seed picks the same weights as it always did
        w4 = w if w.dim() == 4 else w.reshape(w.shape[0], w.shape[1], 1, 1)
        o, i, kh, kw = w4.shape
        r = _rand((o * kh * kw, i), generator, w.device)
        return r.reshape(o, kh, kw, i).permute(0, 3, 1, 2).reshape(w.shape)


class _Activation(Criterion):
    """Channel groups scored from what they emit on training batches (sparsity.activations)."""

    needs_data = True
    scores_units = False

    def __init__(self):
        self.table: Dict[str, torch.Tensor] = {}

    def prepare(self, model, layers, groups, batches, max_batches) -> None:
        self.table = activation_scores(model, groups, batches, self.name, max_batches)

    def channel_scores(self, group, weights, per_element=False, generator=None):
        return self.table[group.root]


@CRITERIA.register
class MeanActivation(_Activation):
    name = "mean_activation"
    description = "mean post-ReLU activation of the channel (a mostly silent one goes first)"


@CRITERIA.register
class Entropy(_Activation):
    name = "entropy"
    description = "entropy of the channel's activation histogram (Luo & Wu 2017)"


@CRITERIA.register
class Taylor(Criterion):
    """Molchanov et al., CVPR 2019: the first-order Taylor estimate of the loss change when a
    weight is removed, (w·∂L/∂w)², accumulated over `max_batches` training batches (mean over
    batches) and summed over the unit or the group's filters. The model is read in eval mode
    (BatchNorm statistics untouched); gradients go to a separate buffer, never to `.grad`."""

    name = "taylor"
    description = "first-order Taylor importance (w·∂L/∂w)², summed over the unit (Molchanov 2019)"
    needs_data = True

    def __init__(self):
        self.table: Dict[str, torch.Tensor] = {}

    def prepare(self, model, layers, groups, batches, max_batches) -> None:
        names = sorted(set(layers) | {m.module for g in groups for m in g.members
                                      if isinstance(model.get_submodule(m.module),
                                                    (nn.Conv2d, nn.Linear))})
        params = [model.get_submodule(n).weight for n in names]
        acc = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        was_training = model.training
        frozen = [p for p in params if not p.requires_grad]  # ICE freezes layers it still prunes
        for p in frozen:
            p.requires_grad_(True)
        model.eval()
        seen = 0
        try:
            for i, (x, y) in enumerate(batches):
                if i >= max_batches:
                    break
                loss = F.cross_entropy(model(x).float(), y)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for a, p, g in zip(acc, params, grads):
                    if g is not None:
                        a += (p.detach().double() * g.double()).pow(2)
                seen += 1
        finally:
            model.train(was_training)
            for p in frozen:
                p.requires_grad_(False)
        self.table = {n: a / max(seen, 1) for n, a in zip(names, acc)}

    def saliency(self, name: str, w: torch.Tensor) -> torch.Tensor:
        if name not in self.table:
            raise RuntimeError(f"criterion taylor was not prepared for layer {name}")
        return self.table[name].to(w.dtype)


@CRITERIA.register
class Lamp(Criterion):
    """Lee et al., ICLR 2021 (LAMP): within each layer, sort the units by squared magnitude m
    ascending; a unit's score is m_u / Σ_{v ≥ u} m_v, the share of what is left of its layer when
    the smaller ones are gone. Scores compare across layers as they are, so under global scope
    (what LAMP is for) each layer gets its own sparsity; `per_element` changes nothing. Ties in m
    keep index order. For N:M the order inside a layer is that of |w|."""

    name = "lamp"
    description = "layer-adaptive magnitude: w² over the layer's larger-or-equal weights (Lee 2021)"

    def saliency(self, name: str, w: torch.Tensor) -> torch.Tensor:
        return w.pow(2)

    @staticmethod
    def lamp(m: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(m, stable=True)
        sorted_m = m[order]
        suffix = torch.flip(torch.cumsum(torch.flip(sorted_m, [0]), 0), [0])
        scores = torch.empty_like(m)
        scores[order] = sorted_m / suffix.clamp_min(torch.finfo(m.dtype).tiny)
        return scores

    def combine(self, total, elems, per_element):
        return self.lamp(total)

    def element_scores(self, name, w, generator=None):
        return w.detach().float().abs()


def unit_scores(w: torch.Tensor, granularity: str, criterion="l1",
                generator: Optional[torch.Generator] = None,
                per_element: bool = False) -> torch.Tensor:
    """Scores of the units of one weight tensor by a weight criterion (a name or a Criterion)."""
    return criterion_named(criterion).unit_scores("", w, granularity, per_element, generator)

