"""Pruner: prunes one model toward cumulative sparsity targets. Every method prunes through it.

What a target means (say it in every table):

- `unstructured`, `channel`, `column`: the fraction of the prunable weights zeroed. Layerwise scope
  removes round(s * units) units of every layer (exact per layer); global scope ranks the units of
  all layers by their per-element score and removes the prefix whose weight count is closest to s.
- `nm`: N of every M consecutive input-channel weights are kept; the sparsity is 1 - N/M.
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

from prunekit.sparsity.criteria import Criterion, criterion_named
from prunekit.sparsity.groups import ChannelGroup, ChannelGroups
from prunekit.sparsity.masks import MaskSet
from prunekit.sparsity.purify import mask_unread
from prunekit.sparsity.units import (
    expand_units,
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

    @classmethod
    def from_cfg(cls, method_cfg) -> "PruneSpec":
        return cls(method_cfg.granularity, method_cfg.criterion, method_cfg.scope,
                   tuple(method_cfg.nm))


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


class Pruner:
    def __init__(self, model: nn.Module, spec: PruneSpec, layers: Dict[str, nn.Module],
                 example_input: torch.Tensor, seed: int = 0, blocks: Sequence[str] = (),
                 channel_groups: Optional[bool] = None):
        self.model = model
        self.spec = spec
        self.layer_names: List[str] = list(layers)
        self.dense_numel = {n: m.weight.numel() for n, m in layers.items()}
        self.masks = MaskSet(model)
        self.criterion: Criterion = criterion_named(spec.criterion)
        self.generator = torch.Generator().manual_seed(seed)
        self.groups: Optional[ChannelGroups] = None
        self.channels_removed = 0  # by compaction, physically
        if channel_groups is None:  # to remove filters, or channels no layer reads any more
            structured = {"filter", "channel", "column"}
            channel_groups = bool(structured & set(spec.granularity.split("+")))
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
        g = self.spec.granularity
        if g == "nm":
            self._prune_nm()
        elif g == "filter":
            self._prune_filters(target)
        else:
            self._prune_units(target)
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
        if self.spec.granularity in ("channel", "column"):
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
    def unit_layers(self, granularity: str) -> List[str]:
        """The layers a per-layer granularity applies to."""
        names = self.layer_names
        if granularity == "channel":  # a depthwise conv's only input channel is its own output
            names = [n for n in names if self.weight(n).shape[1] > 1]
        return names

    def _prune_units(self, target: float) -> None:
        g, crit = self.spec.granularity, self.criterion
        names = self.unit_layers(g)
        forced = {}
        for n in names:
            mask = self.masks.get(f"{n}.weight")
            forced[n] = pruned_units(mask, g) if mask is not None else None
        if self.spec.scope == "layerwise":
            for n in names:
                w = self.weight(n)
                n_units = num_units(w.shape, g)
                already = int(forced[n].sum()) if forced[n] is not None else 0
                n_prune = max(already, int(round(target * n_units)))
                keep = keep_vector(crit.unit_scores(n, w, g, False, self.generator), n_prune,
                                   forced[n])
                self.masks.set(f"{n}.weight", expand_units(keep, w.shape, g))
            return
        # global: one ranking of all units by per-element score, prefix sized by weight count
        scores, sizes, owners, forced_all = [], [], [], []
        for li, n in enumerate(names):
            w = self.weight(n)
            s = crit.unit_scores(n, w, g, True, self.generator).cpu()
            scores.append(s)
            sizes.append(torch.full_like(s, w.numel() / len(s), dtype=torch.float64))
            owners.append(torch.full((len(s),), li, dtype=torch.long))
            f = forced[n]
            forced_all.append(f.cpu() if f is not None else torch.zeros(len(s), dtype=torch.bool))
        scores_t, forced_t = torch.cat(scores), torch.cat(forced_all)
        total = float(sum(self.dense_numel[n] for n in names))
        n_forced = int(forced_t.sum())
        if g == "unstructured":  # every unit is one weight: the count is exact, no ranking needed
            chosen = lowest(scores_t, max(n_forced, int(round(target * total))), forced_t)
        else:
            order = ranking(scores_t, forced_t)
            cum = torch.cumsum(torch.cat(sizes)[order], 0)
            removed = lambda k: 0.0 if k == 0 else float(cum[int(k) - 1]) / total  # noqa: E731
            k = int(_bisect_closest(removed, target, n_forced, len(order), integer=True))
            chosen = order[:k]
        pruned = torch.zeros(len(scores_t), dtype=torch.bool)
        pruned[chosen] = True
        owner = torch.cat(owners)
        for li, n in enumerate(names):
            w = self.weight(n)
            keep = ~pruned[owner == li]
            self.masks.set(f"{n}.weight", expand_units(keep.to(w.device), w.shape, g))

    def _prune_nm(self) -> None:
        n, m = self.spec.nm
        for name in self.layer_names:
            w = self.weight(name)
            scores = self.criterion.element_scores(name, w, self.generator)
            self.masks.set(f"{name}.weight", nm_mask(w, n, m, scores))

    # ------------------------------------------------------------------ filters (channel groups)
    def _keep_state(self) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
        """Per prunable layer: which output rows and input columns are still alive."""
        state = {}
        for n in self.layer_names:
            w = self.weight(n)
            o, i = w.shape[0], w.shape[1]
            mask = self.masks.get(f"{n}.weight")
            if mask is None:
                state[n] = (torch.ones(o, dtype=torch.bool), torch.ones(i, dtype=torch.bool))
            else:
                m2 = mask.reshape(o, i, -1).ne(0).cpu()
                state[n] = (m2.any(2).any(1), m2.any(2).any(0))
        return state

    def _removal_sparsity(self, base: Dict[str, Tuple[torch.Tensor, torch.Tensor]],
                          removal: Dict[int, torch.Tensor]) -> float:
        """Exact prunable-weight sparsity if, from the alive rows/columns in `base`, the given
        channels (group index -> channel ids) went too."""
        state = {n: (o.clone(), i.clone()) for n, (o, i) in base.items()}
        groups = self.groups.groups
        for gi, chans in removal.items():
            if len(chans) == 0:
                continue
            for m in groups[gi].members:
                if m.module not in state or m.kind == "norm":
                    continue
                pos = m.take(chans.tolist())
                state[m.module][0 if m.kind == "out" else 1][pos] = False
        remaining = 0
        for n, (o, i) in state.items():
            w = self.weight(n)
            k = w[0, 0].numel()
            remaining += int(o.sum()) * int(i.sum()) * k
        dense = sum(self.dense_numel.values())
        return 1.0 - remaining / dense

    def _group_orders(self,
                      per_element: bool) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per group: (channel order, lowest first, masked ones forced first; scores; masked)."""
        out = []
        for group in self.groups.groups:
            masked = self.groups.masked_channels(group, self.masks)
            scores = self.channel_scores(group, per_element)
            out.append((ranking(scores, masked), scores, masked))
        return out

    def _prune_filters(self, target: float) -> None:
        for gi, chans in self.filter_plan(target).items():
            if len(chans):
                self.groups.mask_channels(self.groups.groups[gi], chans, self.masks)

    def filter_plan(self, target: float) -> Dict[int, torch.Tensor]:
        """Which channels of each group (by index) to remove to reach `target`, as `prune_to`
        would remove them (ADMM takes the per-group counts of this plan as its constraints)."""
        groups = self.groups.groups
        base = self._keep_state()
        orders = self._group_orders(per_element=self.spec.scope == "global")
        if self.spec.scope == "layerwise":
            def removal_at(r: float) -> Dict[int, torch.Tensor]:
                plan = {}
                for gi, g in enumerate(groups):
                    order, _, masked = orders[gi]
                    gone = g.dense_size - g.size  # already removed physically
                    want = min(int(round(r * g.dense_size)), g.dense_size - 1) - gone
                    n = min(max(want, int(masked.sum())), g.size - 1)
                    plan[gi] = order[:n]
                return plan

            r = _bisect_closest(lambda r: self._removal_sparsity(base, removal_at(r)), target,
                                0.0, 1.0, integer=False)
            plan = removal_at(r)
        else:
            # global: pool every group's channels, masked first, then by per-element score; never
            # empty a group.
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
            n_masked = sum(int(o[2].sum()) for o in orders)

            def removal_k(k: int) -> Dict[int, torch.Tensor]:
                plan: Dict[int, List[int]] = {gi: [] for gi in range(len(groups))}
                for gi, c in eligible[:int(k)]:
                    plan[gi].append(c)
                return {gi: torch.tensor(v, dtype=torch.long) for gi, v in plan.items()}

            k = _bisect_closest(lambda k: self._removal_sparsity(base, removal_k(k)), target,
                                n_masked, len(eligible), integer=True)
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

    def prune_groups(self, groups: Sequence[ChannelGroup], ratio: float) -> int:
        """Remove ceil(ratio * dense channels) of each group (cumulative, at least one kept), the
        lowest-scoring first. Returns the number of channels masked now."""
        n_new = 0
        for g in groups:
            masked = self.groups.masked_channels(g, self.masks)
            s = self.channel_scores(g)
            gone = g.dense_size - g.size
            want = min(math.ceil(ratio * g.dense_size - 1e-9), g.dense_size - 1) - gone
            n = min(max(want, int(masked.sum())), g.size - 1)
            chans = lowest(s, n, masked)
            n_new += n - int(masked.sum())
            self.groups.mask_channels(g, chans, self.masks)
        self.masks.apply()
        return n_new
