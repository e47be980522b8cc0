"""Cost planning for a Pruner: what removing channels would cost, and the removal a target
needs. Counting only; the Pruner masks. `removal_cost` counts a removal on the alive rows and
columns of every module the cost counts, exactly for whole channels; `filter_plan` solves the
filter granularity's allocation rule (a uniform ratio per group, or one global ranking) for a
target by bisection on that count; `block_ratio` the blockwise ratio; `max_removed` the reach."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from prunekit.sparsity.groups import ChannelGroup, Role, aligned_removal, kept_counts
from prunekit.sparsity.units import ranking

Alive = Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]]  # module -> (rows, columns) alive


def bisect_closest(f: Callable[[float], float], target: float, lo: float, hi: float,
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


class CostPlanner:
    """The cost side of one Pruner (`pruner.planner`)."""

    def __init__(self, pruner) -> None:
        self.p = pruner

    def alive_state(self) -> Alive:
        """Per prunable layer and every module a channel group touches that the cost counts:
        which output rows and input columns are still alive (a norm layer: its channels, and
        None)."""
        norms = set()
        names = dict.fromkeys(self.p.layer_names)
        for group in self.p.groups.groups if self.p.groups is not None else []:
            for m in group.members:
                if m.role is Role.NORM:
                    if getattr(self.p.model.get_submodule(m.module), "weight", None) is not None \
                            and self.p.cost.counts(m.module, norm=True):
                        norms.add(m.module)
                        names.setdefault(m.module)
                elif self.p.cost.counts(m.module):
                    names.setdefault(m.module)
        state: Alive = {}
        for n in names:
            w = self.p.weight(n)
            mask = self.p.masks.get(f"{n}.weight")
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
        return self.removal_cost(self.alive_state())

    def removal_cost(self, base: Alive) -> Callable[..., float]:
        """removal -> the cost's removed fraction if, from the alive rows and columns in `base`,
        the given channels (group index -> channel ids) went too. Exact for whole channels: what
        the modules in `base` do not hold (other layers, other FLOPs) is the model's cost now."""
        groups = self.p.groups.groups
        cost = self.p.cost

        def modules_total(state: Alive, caps: Dict[str, float]) -> float:
            total = 0.0
            for n, (o, i) in state.items():
                o_n, i_n = int(o.sum()), None if i is None else int(i.sum())
                cap = caps.get(n)
                if cap is not None and i_n is not None:  # a cap counts the weights of `base`:
                    # the rows and columns the removal takes shrink it alike (independence)
                    cap *= o_n * i_n / max(int(base[n][0].sum()) * int(base[n][1].sum()), 1)
                total += cost.module_cost(n, self.p.model.get_submodule(n), o_n, i_n, cap)
            return total

        rest = cost.total(self.p.model) - modules_total(base, {})

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

    def group_orders(self,
                      per_element: bool) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per group: (channel order, lowest first, masked ones forced first; scores; masked)."""
        out = []
        for group in self.p.groups.groups:
            masked = self.p.groups.masked_channels(group, self.p.masks)
            scores = self.p.channel_scores(group, per_element)
            out.append((ranking(scores, masked), scores, masked))
        return out

    def filter_plan(self, target: float) -> Dict[int, torch.Tensor]:
        """Which channels of each group (by index) to remove to reach `target`, as `prune_to`
        would remove them (ADMM takes the per-group counts of this plan as its constraints)."""
        groups = self.p.groups.groups
        removed = self.removal_cost(self.alive_state())
        orders = self.group_orders(per_element=self.p.spec.scope == "global")
        multiple = self.p.spec.channel_multiple
        if self.p.spec.scope == "layerwise":
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

            r = bisect_closest(lambda r: removed(removal_at(r)), target, 0.0, 1.0,
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
                k = bisect_closest(lambda k: removed(removal_k(k)), target, n_masked,
                                    len(eligible), integer=True)
            else:  # whole steps only; the forced ones always
                first = next(i for i, c in enumerate(cuts) if c >= n_masked)
                i = bisect_closest(lambda i: removed(removal_k(cuts[int(i)])), target, first,
                                    len(cuts) - 1, integer=True)
                k = cuts[int(i)]
            plan = removal_k(int(k))
        return plan

    def block_ratio(self, groups: Sequence[ChannelGroup], target: float) -> float:
        """The channel ratio that `prune_groups` applied to every one of `groups` needs for the
        cost's removed fraction to be closest to `target` (ICE's and the blockwise baseline's
        per-block ratio under a FLOPs or params target). Which channels go does not change the
        count: the ratio is exact before any is chosen."""
        removed = self.removal_cost(self.alive_state())
        index = {id(g): gi for gi, g in enumerate(self.p.groups.groups)}
        masked = {index[id(g)]: self.p.groups.masked_channels(g, self.p.masks) for g in groups}

        def plan(ratio: float) -> Dict[int, torch.Tensor]:
            out = {}
            for g in groups:
                m = masked[index[id(g)]]
                order = ranking(torch.zeros(len(m)), m)  # the masked first, then any
                out[index[id(g)]] = order[:self.p.order.block_count(g, ratio, int(m.sum()))]
            return out

        return bisect_closest(lambda r: removed(plan(r)), target, 0.0, 1.0, integer=False)

    def max_removed(self, groups: Optional[Sequence[ChannelGroup]] = None) -> float:
        """The largest removed fraction of the cost this pruner can reach: every group (or every
        one of `groups`) down to one channel, or to the channel multiple (filters); every
        prunable weight (other granularities; N:M's is fixed)."""
        if self.p.granularity.prunes_filters or groups is not None:
            groups = self.p.groups.groups if groups is None else groups
            index = {id(g): gi for gi, g in enumerate(self.p.groups.groups)}
            fewest = {id(g): min(kept_counts(g.size, g.dense_size, self.p.spec.channel_multiple))
                      for g in groups}
            return self.removal_cost(self.alive_state())(
                {index[id(g)]: torch.arange(g.size - fewest[id(g)]) for g in groups})
        names = self.p.unit_layers(self.p.spec.granularity)
        gone = sum(int(torch.count_nonzero(self.p.weight(n))) * self.p.cost.per_weight.get(n, 0.0)
                   for n in names)
        return 1.0 - (self.p.cost.total(self.p.model) - gone) / self.p.cost.dense_total
