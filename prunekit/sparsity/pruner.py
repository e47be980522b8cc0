"""Pruner: prunes one model toward cumulative sparsity targets. Every method prunes through it.

What a target means (say it in every table):

- `unstructured`, `channel`, `column`: the fraction of the prunable weights zeroed. Layerwise scope
  removes round(s * units) units of every layer (exact per layer); global scope ranks the units of
  all layers by their per-element score and removes the prefix whose weight count is closest to s
  (channel and column never empty a layer: compaction would leave it no width).
- `nm`: N of every M consecutive input-channel weights are kept; the sparsity is 1 - N/M.
- With a `Cost` of another kind (`target.kind=flops|params`), a target is the removed fraction of
  that cost (`sparsity.cost`): the same allocation rule (a uniform ratio per layer or per group,
  or one global ranking) is solved for by bisection on the exact count of that cost instead.
- `filter`: still a fraction of the prunable weights, but filters are removed with everything
  coupled to them (BN channel, the next layers' input channels, every branch of a residual add),
  so the unit is a channel *group* and the target is met as closely as whole channels allow: a
  uniform channel ratio per group (layerwise) or a global channel ranking (global) is solved for
  by bisection on the exact remaining-weight count. `prune_block` prunes one block's inner groups
  at a channel ratio instead: the step of the blockwise baseline and of ICE-Pruning.

Targets are cumulative against the dense model and masks only ever grow: units an earlier step
removed are forced to stay removed, whatever the criterion says now.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from prunekit.sparsity.block_order import BlockOrder
from prunekit.sparsity.cost import Cost
from prunekit.sparsity.cost_plan import CostPlanner, bisect_closest
from prunekit.sparsity.criteria import Criterion, criterion_named
from prunekit.sparsity.groups import (
    ChannelGroup,
    ChannelGroups,
)
from prunekit.sparsity.masks import MaskSet
from prunekit.sparsity.purify import mask_unread
from prunekit.sparsity.units import (
    expand_units,
    granularity,
    keep_vector,
    lowest,
    nm_mask,
    num_units,
    pruned_units,
    ranking,
)


@dataclass(frozen=True)
class PruneSpec:
    granularity: str = "unstructured"
    criterion: str = "l1"
    scope: str = "layerwise"
    nm: Tuple[int, int] = (2, 4)
    channel_multiple: int = 1  # a pruned group keeps a multiple of this (or its dense count)

    @classmethod
    def from_options(cls, options, channel_multiple: int = 1) -> "PruneSpec":
        """The spec a method's options (granularity, criterion, scope, nm) ask for."""
        return cls(options.granularity, options.criterion, options.scope, tuple(options.nm),
                   int(channel_multiple))


class Pruner:
    def __init__(self, model: nn.Module, spec: PruneSpec, layers: Dict[str, nn.Module],
                 example_input: torch.Tensor, seed: int = 0, blocks: Sequence[str] = (),
                 channel_groups: Optional[bool] = None, cost: Optional[Cost] = None):
        self.model = model
        self.spec = spec
        self.layer_names: List[str] = list(layers)
        self.dense_numel = {n: m.weight.numel() for n, m in layers.items()}
        self.cost = cost or Cost.weights(layers)  # what a target counts
        self.masks = MaskSet(model)
        self.criterion: Criterion = criterion_named(spec.criterion)
        self.generator = torch.Generator().manual_seed(seed)
        self.groups: Optional[ChannelGroups] = None
        self.channels_removed = 0  # by compaction, physically
        self.granularity = granularity(spec.granularity)
        if channel_groups is None:  # to remove filters, or channels no layer reads any more
            channel_groups = self.granularity.removes_channels
        if channel_groups:
            self.groups = ChannelGroups(model, layers, example_input, list(blocks))
        self.planner = CostPlanner(self)  # what a removal costs, and the one a target needs
        self.order = BlockOrder(self)  # blockwise pruning's steps, in network order

    def state_dict(self) -> dict:
        """The pruner's own state (the model's weights are the model's): masks, dense sizes, the
        channel groups' dense sizes, the compaction count and the random generator."""
        return {"masks": {n: m.detach().cpu().bool() for n, m in self.masks.items()},
                "dense_numel": dict(self.dense_numel),
                "dense_sizes": self.groups.state_dict() if self.groups is not None else None,
                "channels_removed": self.channels_removed,
                "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` onto a pruner built over the model at its compacted shapes."""
        self.dense_numel = dict(state["dense_numel"])
        if self.groups is not None and state["dense_sizes"] is not None:
            self.groups.load_state_dict(state["dense_sizes"])
        self.channels_removed = state["channels_removed"]
        self.generator.set_state(state["rng"])
        for name, mask in state["masks"].items():
            self.masks.set(name, mask)
        if self.groups is not None:
            self.groups.sync_norms(self.masks)

    def weight(self, name: str) -> torch.Tensor:
        return self.model.get_submodule(name).weight

    def prepare(self, batches: Iterable, max_batches: int) -> None:
        """Let a data-driven criterion read the model as it is now (a no-op for weight ones)."""
        if self.criterion.needs_data:
            self.criterion.prepare(self.model, self.layer_names,
                                   self.groups.groups if self.groups is not None else [],
                                   batches, max_batches)

    def channel_scores(self, group: ChannelGroup, per_element: bool = False) -> torch.Tensor:
        weights = {m.module: self.weight(m.module) for m in group.members}
        return self.criterion.channel_scores(group, weights, per_element, self.generator)

    # ------------------------------------------------------------------ entry points
    def prune_to(self, target: float) -> None:
        """Prune to cumulative `target` (see the module docstring for its unit)."""
        self.granularity.prune(self, target)
        self.masks.apply()

    def compact(self, check_input: Optional[torch.Tensor] = None) -> Optional[float]:
        """Remove masked filters physically. For channel and column results, first mask every
        channel whose readers have all dropped it (the producer's filter and BN channel go with
        it; nothing reads them, so the output cannot change). With `check_input`, returns
        max |before - after| of the model's outputs on it (eval mode), the proof that compaction
        changed nothing."""
        if self.groups is None:
            return None
        before = None
        if check_input is not None:
            before = self._eval_output(check_input)
        if self.granularity.masks_unread:
            mask_unread(self)
        self.channels_removed += self.groups.compact(self.masks)
        if before is None:
            return None
        return float((self._eval_output(check_input) - before).abs().max())

    @torch.no_grad()
    def _eval_output(self, x: torch.Tensor) -> torch.Tensor:
        was = self.model.training
        self.model.eval()
        out = self.model(x).float()
        self.model.train(was)
        return out

    # ------------------------------------------------------------ unstructured / channel / column
    def unit_layers(self, name: str) -> List[str]:
        """The layers a per-layer granularity (`name`) applies to."""
        g = granularity(name)
        return [n for n in self.layer_names if g.applies_to(self.weight(n))]

    def prune_units(self, target: float) -> None:
        """Per-layer units (unstructured, channel, column) toward `target`: the same ratio of
        every layer's units (layerwise), or one ranking of all units (global)."""
        names = self.unit_layers(self.spec.granularity)
        forced = self._forced_units(names)
        if self.spec.scope == "layerwise":
            self._prune_units_layerwise(names, forced, target)
        else:
            self._prune_units_global(names, forced, target)

    def _prune_units_layerwise(self, names: Sequence[str],
                               forced: Dict[str, Optional[torch.Tensor]], target: float) -> None:
        g = self.spec.granularity
        ratio = target if self.cost.uniform else self._layerwise_ratio(names, forced, target)
        for n in names:
            w = self.weight(n)
            already = int(forced[n].sum()) if forced[n] is not None else 0
            n_prune = max(already, int(round(ratio * num_units(w.shape, g))))
            keep = keep_vector(self.criterion.unit_scores(n, w, g, False, self.generator),
                               n_prune, forced[n])
            self.masks.set(f"{n}.weight", expand_units(keep, w.shape, g))

    def _prune_units_global(self, names: Sequence[str],
                            forced: Dict[str, Optional[torch.Tensor]], target: float) -> None:
        """One ranking of all units by per-element score, the prefix sized by its cost."""
        g, crit, cost = self.spec.granularity, self.criterion, self.cost
        scores, sizes, owners, forced_all = [], [], [], []
        for li, n in enumerate(names):
            w = self.weight(n)
            s = crit.unit_scores(n, w, g, True, self.generator).cpu()
            scores.append(s)
            unit_cost = w.numel() / len(s) * cost.per_weight.get(n, 0.0)
            sizes.append(torch.full_like(s, unit_cost, dtype=torch.float64))
            owners.append(torch.full((len(s),), li, dtype=torch.long))
            f = forced[n]
            forced_all.append(f.cpu() if f is not None else torch.zeros(len(s), dtype=torch.bool))
        scores_t, forced_t, sizes_t = torch.cat(scores), torch.cat(forced_all), torch.cat(sizes)
        owner_t = torch.cat(owners)
        n_forced = int(forced_t.sum())
        if self.granularity.elementwise and cost.uniform:  # one weight per unit: exact count
            total = float(sum(self.dense_numel[n] for n in names))
            chosen = lowest(scores_t, max(n_forced, int(round(target * total))), forced_t)
        else:
            order = ranking(scores_t, forced_t)
            if not self.granularity.elementwise:  # never empty a layer: compaction needs width
                last = torch.cat([torch.nonzero(owner_t[order] == li).flatten()[-1:]
                                  for li in range(len(names))])
                keep_last = torch.ones(len(order), dtype=torch.bool)
                keep_last[last] = False
                order = order[keep_last]
            cum = torch.cumsum(sizes_t[order], 0)
            # the forced units come first and are already zero: the cost now holds none of them
            start = cost.total(self.model) + float(sizes_t[forced_t].sum())

            def removed(k: float) -> float:
                gone = 0.0 if k == 0 else float(cum[int(k) - 1])
                return 1.0 - (start - gone) / cost.dense_total

            k = int(bisect_closest(removed, target, n_forced, len(order), integer=True))
            chosen = order[:k]
        pruned = torch.zeros(len(scores_t), dtype=torch.bool)
        pruned[chosen] = True
        for li, n in enumerate(names):
            w = self.weight(n)
            keep = ~pruned[owner_t == li]
            self.masks.set(f"{n}.weight", expand_units(keep.to(w.device), w.shape, g))

    def unit_ratio(self, target: float) -> float:
        """The fraction of every layer's units the layerwise rule removes for `target`: the
        target itself when it counts weights, else the ratio that meets its cost (ADMM's and
        SLR's per-layer constraint rate)."""
        if self.cost.uniform:
            return target
        names = self.unit_layers(self.spec.granularity)
        return self._layerwise_ratio(names, self._forced_units(names), target)

    def _forced_units(self, names: Sequence[str]) -> Dict[str, Optional[torch.Tensor]]:
        """Per layer, its units an earlier step removed (None: no mask yet)."""
        forced = {}
        for n in names:
            mask = self.masks.get(f"{n}.weight")
            forced[n] = pruned_units(mask, self.spec.granularity) if mask is not None else None
        return forced

    def _layerwise_ratio(self, names: Sequence[str], forced: Dict[str, Optional[torch.Tensor]],
                         target: float) -> float:
        """The fraction of every layer's units whose removal leaves the cost's removed fraction
        closest to `target` (the layerwise rule, solved on the exact count)."""
        g, cost = self.spec.granularity, self.cost
        now = cost.total(self.model)
        layers = []
        for n in names:
            shape = self.weight(n).shape
            n_units = num_units(shape, g)
            already = int(forced[n].sum()) if forced[n] is not None else 0
            unit_cost = self.weight(n).numel() / n_units * cost.per_weight.get(n, 0.0)
            layers.append((n_units, already, unit_cost))

        def removed(r: float) -> float:
            gone = sum((max(already, int(round(r * n_units))) - already) * unit_cost
                       for n_units, already, unit_cost in layers)
            return 1.0 - (now - gone) / cost.dense_total

        return bisect_closest(removed, target, 0.0, 1.0, integer=False)

    def prune_nm(self) -> None:
        n, m = self.spec.nm
        for name in self.layer_names:
            w = self.weight(name)
            scores = self.criterion.element_scores(name, w, self.generator)
            self.masks.set(f"{name}.weight", nm_mask(w, n, m, scores))

    # ------------------------------------------------------------------ filters (channel groups)
    def prune_filters(self, target: float) -> None:
        for gi, chans in self.planner.filter_plan(target).items():
            if len(chans):
                self.groups.mask_channels(self.groups.groups[gi], chans, self.masks)

    # ------------------------------------------------------------------ blockwise (ICE, baseline)
    def prune_groups(self, groups: Sequence[ChannelGroup], ratio: float) -> int:
        """Remove ceil(ratio * dense channels) of each group (cumulative, at least one kept), the
        lowest-scoring first. Returns the number of channels masked now."""
        n_new = 0
        for g in groups:
            masked = self.groups.masked_channels(g, self.masks)
            s = self.channel_scores(g)
            n = self.order.block_count(g, ratio, int(masked.sum()))
            chans = lowest(s, n, masked)
            n_new += n - int(masked.sum())
            self.groups.mask_channels(g, chans, self.masks)
        self.masks.apply()
        return n_new

    # ------------------------------------------------------------------ reaching a cost
