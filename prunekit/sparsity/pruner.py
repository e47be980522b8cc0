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

import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from prunekit.sparsity.cost import Cost
from prunekit.sparsity.criteria import Criterion, criterion_named
from prunekit.sparsity.groups import (
    ChannelGroup,
    ChannelGroups,
    Role,
    aligned_removal,
    kept_counts,
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

Alive = Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]]  # module -> (rows, columns) alive


@dataclass(frozen=True)
class PruneSpec:
    granularity: str = "unstructured"
    criterion: str = "l1"
    scope: str = "layerwise"
    nm: Tuple[int, int] = (2, 4)
    channel_multiple: int = 1  # a pruned group keeps a multiple of this (or its dense count)

    @classmethod
    def from_cfg(cls, method_cfg, channel_multiple: int = 1) -> "PruneSpec":
        return cls(method_cfg.granularity, method_cfg.criterion, method_cfg.scope,
                   tuple(method_cfg.nm), int(channel_multiple))


def _bisect_closest(f: Callable[[float], float], target: float, lo: float, hi: float,
                    integer: bool) -> float:
    """For monotone non-decreasing f on [lo, hi], the knob whose f is closest to target."""
    if f(lo) >= target:
        return lo
    if f(hi) <= target:
        return hi
    a, b = lo, hi  # invariant: f(a) < target <= f(b)
    for _ in range(64):
        if (integer and b - a <= 1) or (not integer and b - a < 1e-9):
            break
        mid = (a + b) // 2 if integer else (a + b) / 2
        if f(mid) < target:
            a = mid
        else:
            b = mid
    return a if abs(f(a) - target) < abs(f(b) - target) else b


def global_removals(orders, groups: Sequence[ChannelGroup],
                    multiple: int) -> Tuple[List[Tuple[int, int]], Optional[List[int]]]:
    """The global filter plan's pool, in the order it removes from: (group, channel) entries,
    masked first, then by score, never emptying a group; and the prefix lengths the plan may
    cut it at (None: any). With a channel multiple, every step between two counts a group may
    keep is one piece (its channels in a row, ranked by their mean score, cut only at its end),
    so each group keeps a multiple of it."""
    if multiple <= 1:
        entries = []
        for gi, (order, scores, masked) in enumerate(orders):
            for c in order.tolist():
                entries.append((0 if masked[c] else 1, float(scores[c]), gi, c))
        entries.sort()
        taken = [0] * len(groups)
        eligible = []
        for _, _, gi, c in entries:
            if taken[gi] < groups[gi].size - 1:
                taken[gi] += 1
                eligible.append((gi, c))
        return eligible, None
    steps = []
    for gi, (order, scores, masked) in enumerate(orders):
        g, n_masked = groups[gi], int(masked.sum())
        counts = sorted({g.size - k for k in kept_counts(g.size, g.dense_size, multiple)})
        counts = [0] + [c for c in counts if c >= n_masked and c > 0]
        for a, b in zip(counts, counts[1:]):
            chans = order[a:b].tolist()  # a step with a masked channel is forced: first
            steps.append((0 if a < n_masked else 1, float(scores[chans].mean()), gi, a, chans))
    steps.sort(key=lambda t: t[:4])
    cuts = [0]
    for *_, chans in steps:
        cuts.append(cuts[-1] + len(chans))
    return [(gi, c) for *_, gi, _, chans in steps for c in chans], cuts


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

            k = int(_bisect_closest(removed, target, n_forced, len(order), integer=True))
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

        return _bisect_closest(removed, target, 0.0, 1.0, integer=False)

    def prune_nm(self) -> None:
        n, m = self.spec.nm
        for name in self.layer_names:
            w = self.weight(name)
            scores = self.criterion.element_scores(name, w, self.generator)
            self.masks.set(f"{name}.weight", nm_mask(w, n, m, scores))

    # ------------------------------------------------------------------ filters (channel groups)
    def _alive_state(self) -> Alive:
        """Per prunable layer and every module a channel group touches that the cost counts:
        which output rows and input columns are still alive (a norm layer: its channels, and
        None)."""
        norms = set()
        names = dict.fromkeys(self.layer_names)
        for group in self.groups.groups if self.groups is not None else []:
            for m in group.members:
                if m.role is Role.NORM:
                    if getattr(self.model.get_submodule(m.module), "weight", None) is not None \
                            and self.cost.counts(m.module, norm=True):
                        norms.add(m.module)
                        names.setdefault(m.module)
                elif self.cost.counts(m.module):
                    names.setdefault(m.module)
        state: Alive = {}
        for n in names:
            w = self.weight(n)
            mask = self.masks.get(f"{n}.weight")
            if n in norms:
                state[n] = (torch.ones(w.shape[0], dtype=torch.bool) if mask is None
                            else mask.ne(0).cpu(), None)
                continue
            o, i = w.shape[0], w.shape[1]
            if mask is None:
                state[n] = (torch.ones(o, dtype=torch.bool), torch.ones(i, dtype=torch.bool))
            else:
                m2 = mask.reshape(o, i, -1).ne(0).cpu()
                state[n] = (m2.any(2).any(1), m2.any(2).any(0))
        return state

    def plan_cost(self) -> Callable[..., float]:
        """`removed(removal, caps=None)`: the cost's removed fraction if, from the masks now, the
        given channels (group index -> channel ids) went too, and each layer in `caps` kept at
        most that many of its weights now (less the share of them the removal takes), which is
        AutoCompress's count of an action: exact for filter or column units alone, the expected
        count where a column unit reads channels a filter unit removes."""
        return self._plan_cost(self._alive_state())

    def _plan_cost(self, base: Alive) -> Callable[..., float]:
        """removal -> the cost's removed fraction if, from the alive rows and columns in `base`,
        the given channels (group index -> channel ids) went too. Exact for whole channels: what
        the modules in `base` do not hold (other layers, other FLOPs) is the model's cost now."""
        groups = self.groups.groups
        cost = self.cost

        def modules_total(state: Alive, caps: Dict[str, float]) -> float:
            total = 0.0
            for n, (o, i) in state.items():
                o_n, i_n = int(o.sum()), None if i is None else int(i.sum())
                cap = caps.get(n)
                if cap is not None and i_n is not None:  # a cap counts the weights of `base`:
                    # the rows and columns the removal takes shrink it alike (independence)
                    cap *= o_n * i_n / max(int(base[n][0].sum()) * int(base[n][1].sum()), 1)
                total += cost.module_cost(n, self.model.get_submodule(n), o_n, i_n, cap)
            return total

        rest = cost.total(self.model) - modules_total(base, {})

        def removed(removal: Dict[int, torch.Tensor],
                    caps: Optional[Dict[str, float]] = None) -> float:
            state = {n: (o.clone(), None if i is None else i.clone())
                     for n, (o, i) in base.items()}
            for gi, chans in removal.items():
                if len(chans) == 0:
                    continue
                for m in groups[gi].members:
                    if m.module not in state:
                        continue
                    pos = m.take(chans.tolist())
                    state[m.module][m.role.dim][pos] = False
            return 1.0 - (rest + modules_total(state, caps or {})) / cost.dense_total

        return removed

    def _group_orders(self,
                      per_element: bool) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per group: (channel order, lowest first, masked ones forced first; scores; masked)."""
        out = []
        for group in self.groups.groups:
            masked = self.groups.masked_channels(group, self.masks)
            scores = self.channel_scores(group, per_element)
            out.append((ranking(scores, masked), scores, masked))
        return out

    def prune_filters(self, target: float) -> None:
        for gi, chans in self.filter_plan(target).items():
            if len(chans):
                self.groups.mask_channels(self.groups.groups[gi], chans, self.masks)

    def filter_plan(self, target: float) -> Dict[int, torch.Tensor]:
        """Which channels of each group (by index) to remove to reach `target`, as `prune_to`
        would remove them (ADMM takes the per-group counts of this plan as its constraints)."""
        groups = self.groups.groups
        removed = self._plan_cost(self._alive_state())
        orders = self._group_orders(per_element=self.spec.scope == "global")
        multiple = self.spec.channel_multiple
        if self.spec.scope == "layerwise":
            def removal_at(r: float) -> Dict[int, torch.Tensor]:
                plan = {}
                for gi, g in enumerate(groups):
                    order, _, masked = orders[gi]
                    gone = g.dense_size - g.size  # already removed physically
                    want = min(int(round(r * g.dense_size)), g.dense_size - 1) - gone
                    n = min(max(want, int(masked.sum())), g.size - 1)
                    plan[gi] = order[:aligned_removal(n, g.size, g.dense_size,
                                                      int(masked.sum()), multiple)]
                return plan

            r = _bisect_closest(lambda r: removed(removal_at(r)), target, 0.0, 1.0,
                                integer=False)
            plan = removal_at(r)
        else:
            # global: pool every group's channels, masked first, then by per-element score; never
            # empty a group. With a channel multiple the pool's entries are the steps between
            # the counts a group may keep, each scored by its channels' mean.
            eligible, cuts = global_removals(orders, groups, multiple)
            n_masked = sum(int(o[2].sum()) for o in orders)

            def removal_k(k: int) -> Dict[int, torch.Tensor]:
                plan: Dict[int, List[int]] = {gi: [] for gi in range(len(groups))}
                for gi, c in eligible[:int(k)]:
                    plan[gi].append(c)
                return {gi: torch.tensor(v, dtype=torch.long) for gi, v in plan.items()}

            if cuts is None:
                k = _bisect_closest(lambda k: removed(removal_k(k)), target, n_masked,
                                    len(eligible), integer=True)
            else:  # whole steps only; the forced ones always
                first = next(i for i, c in enumerate(cuts) if c >= n_masked)
                i = _bisect_closest(lambda i: removed(removal_k(cuts[int(i)])), target, first,
                                    len(cuts) - 1, integer=True)
                k = cuts[int(i)]
            plan = removal_k(int(k))
        return plan

    # ------------------------------------------------------------------ blockwise (ICE, baseline)
    def steps_in_order(self) -> List[Tuple[str, List[ChannelGroup]]]:
        """The units of blockwise pruning, in network order: each residual block with its inner
        groups; in a network without residual blocks (VGG, LeNet) every group is its own step."""
        groups = self.groups.groups
        order = {n: i for i, (n, _) in enumerate(self.model.named_modules())}
        if any(g.block for g in groups):
            blocks: Dict[str, List[ChannelGroup]] = {}
            for g in groups:
                if g.block:
                    blocks.setdefault(g.block, []).append(g)
            return sorted(blocks.items(), key=lambda kv: order[kv[0]])
        return sorted(((g.root, [g]) for g in groups), key=lambda kv: order[kv[0]])

    def _block_count(self, g: ChannelGroup, ratio: float, n_masked: int) -> int:
        """How many of `g`'s current channels `prune_groups` masks at `ratio`: ceil(ratio * dense
        channels) in all (at least one kept), less those compaction removed already; with a
        channel multiple, the nearest count that leaves a multiple of it."""
        gone = g.dense_size - g.size
        want = min(math.ceil(ratio * g.dense_size - 1e-9), g.dense_size - 1) - gone
        n = min(max(want, n_masked), g.size - 1)
        return aligned_removal(n, g.size, g.dense_size, n_masked, self.spec.channel_multiple)

    def blockwise_groups(self) -> List[ChannelGroup]:
        """Every channel group block-wise pruning removes channels from, in network order."""
        return [g for _, groups in self.steps_in_order() for g in groups]

    def prune_groups(self, groups: Sequence[ChannelGroup], ratio: float) -> int:
        """Remove ceil(ratio * dense channels) of each group (cumulative, at least one kept), the
        lowest-scoring first. Returns the number of channels masked now."""
        n_new = 0
        for g in groups:
            masked = self.groups.masked_channels(g, self.masks)
            s = self.channel_scores(g)
            n = self._block_count(g, ratio, int(masked.sum()))
            chans = lowest(s, n, masked)
            n_new += n - int(masked.sum())
            self.groups.mask_channels(g, chans, self.masks)
        self.masks.apply()
        return n_new

    # ------------------------------------------------------------------ reaching a cost
    def block_ratio(self, groups: Sequence[ChannelGroup], target: float) -> float:
        """The channel ratio that `prune_groups` applied to every one of `groups` needs for the
        cost's removed fraction to be closest to `target` (ICE's and the blockwise baseline's
        per-block ratio under a FLOPs or params target). Which channels go does not change the
        count: the ratio is exact before any is chosen."""
        removed = self._plan_cost(self._alive_state())
        index = {id(g): gi for gi, g in enumerate(self.groups.groups)}
        masked = {index[id(g)]: self.groups.masked_channels(g, self.masks) for g in groups}

        def plan(ratio: float) -> Dict[int, torch.Tensor]:
            out = {}
            for g in groups:
                m = masked[index[id(g)]]
                order = ranking(torch.zeros(len(m)), m)  # the masked first, then any
                out[index[id(g)]] = order[:self._block_count(g, ratio, int(m.sum()))]
            return out

        return _bisect_closest(lambda r: removed(plan(r)), target, 0.0, 1.0, integer=False)

    def max_removed(self, groups: Optional[Sequence[ChannelGroup]] = None) -> float:
        """The largest removed fraction of the cost this pruner can reach: every group (or every
        one of `groups`) down to one channel, or to the channel multiple (filters); every
        prunable weight (other granularities; N:M's is fixed)."""
        if self.granularity.prunes_filters or groups is not None:
            groups = self.groups.groups if groups is None else groups
            index = {id(g): gi for gi, g in enumerate(self.groups.groups)}
            fewest = {id(g): min(kept_counts(g.size, g.dense_size, self.spec.channel_multiple))
                      for g in groups}
            return self._plan_cost(self._alive_state())(
                {index[id(g)]: torch.arange(g.size - fewest[id(g)]) for g in groups})
        names = self.unit_layers(self.spec.granularity)
        gone = sum(int(torch.count_nonzero(self.weight(n))) * self.cost.per_weight.get(n, 0.0)
                   for n in names)
        return 1.0 - (self.cost.total(self.model) - gone) / self.cost.dense_total
