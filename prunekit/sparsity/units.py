"""Units of pruning within one weight tensor, their scores, exact keep-masks, and projections.

A *unit* is what a granularity removes as a whole:

| granularity  | unit of a conv weight (O, I, kh, kw)         | of a linear weight (O, I) |
|--------------|----------------------------------------------|---------------------------|
| unstructured | one element                                  | one element               |
| filter       | one output channel W[o]                      | one row W[o]              |
| channel      | one input channel W[:, i]                    | one column W[:, i]        |
| column       | one (i, y, x) position across all filters     | one column W[:, i]        |

N:M keeps the N largest of every M consecutive input-channel weights (channels-last order, the
layout sparse kernels use) and is handled by `nm_mask`. Each granularity is a class registered in
`GRANULARITIES` that answers what callers ask of it: its unit views, whether it removes channels,
how it prunes; a new one is one class here.

Keeping the k units of largest L2 norm is the exact Euclidean projection onto "at most k units
non-zero": `sparsity.projection` builds ADMM's and SLR's Π on these functions, and pruning with
criterion l2 uses the same code. Selection breaks ties by index, so counts are exact.
"""
from __future__ import annotations

from typing import ClassVar, Optional, Tuple

import torch

from prunekit.registry import Registry


class Granularity:
    """What a granularity removes as a unit, and what callers ask of it. Registered in
    `GRANULARITIES` by name (`method.granularity`); a new one is one class here. The unit views
    (`matrix`, `count`, `expand`) see a weight as (O, I, kh, kw) (a linear one as (O, I, 1, 1))."""

    name: ClassVar[str] = ""
    removes_channels: ClassVar[bool] = True  # whole rows or columns: the channel groups are traced
    masks_unread: ClassVar[bool] = False  # compaction first masks what no layer reads any more
    prunes_filters: ClassVar[bool] = False  # the units are filters (block-wise, latency targets)
    elementwise: ClassVar[bool] = False  # one weight per unit: counts are exact, a layer may empty
    one_step: ClassVar[bool] = False  # its sparsity is fixed by its pattern, reached in one step
    cost_problem: ClassVar[Optional[str]] = None  # why a FLOPs / params target cannot be solved

    @classmethod
    def matrix(cls, w4: torch.Tensor) -> torch.Tensor:
        """The (O, I, kh, kw) weight as a (units, unit_size) matrix: one row per unit."""
        raise NotImplementedError

    @classmethod
    def count(cls, o: int, i: int, k: int) -> int:
        raise NotImplementedError

    @classmethod
    def keep_shape(cls, o: int, i: int, k: Tuple[int, ...]) -> Tuple[int, ...]:
        """The shape a per-unit keep vector takes to broadcast over (O, I, *k)."""
        raise NotImplementedError

    @classmethod
    def applies_to(cls, w: torch.Tensor) -> bool:
        """Whether a layer with weight `w` has units of this granularity to prune."""
        return True

    @classmethod
    def sparsity_unit(cls, method_cfg) -> str:
        """What `sparsity` counts under it."""
        return "weights"

    @classmethod
    def prune(cls, pruner, target: float) -> None:
        """Mask the pruner's model toward the cumulative `target`."""
        pruner.prune_units(target)


GRANULARITIES: Registry = Registry("granularity")


@GRANULARITIES.register
class Unstructured(Granularity):
    name = "unstructured"
    removes_channels = False
    elementwise = True

    @classmethod
    def matrix(cls, w4):
        return w4.reshape(-1, 1)

    @classmethod
    def count(cls, o, i, k):
        return o * i * k

    @classmethod
    def keep_shape(cls, o, i, k):
        return (o, i, *k)


@GRANULARITIES.register
class Filter(Granularity):
    """Output channels W[o] (a linear layer's rows), pruned per channel group and compacted."""

    name = "filter"
    prunes_filters = True

    @classmethod
    def matrix(cls, w4):
        return w4.reshape(w4.shape[0], -1)

    @classmethod
    def count(cls, o, i, k):
        return o

    @classmethod
    def keep_shape(cls, o, i, k):
        return (o, 1, 1, 1)

    @classmethod
    def prune(cls, pruner, target):
        pruner.prune_filters(target)


@GRANULARITIES.register
class Channel(Granularity):
    """Input channels W[:, i] (a linear layer's columns)."""

    name = "channel"
    masks_unread = True
    cost_problem = ("its compaction also removes the filters no layer reads any more, which the "
                    "solve cannot foresee: use method.granularity=filter or unstructured")

    @classmethod
    def matrix(cls, w4):
        return w4.transpose(0, 1).reshape(w4.shape[1], -1)

    @classmethod
    def count(cls, o, i, k):
        return i

    @classmethod
    def keep_shape(cls, o, i, k):
        return (1, i, 1, 1)

    @classmethod
    def applies_to(cls, w):
        return w.shape[1] > 1  # a depthwise conv's only input channel is its own output


@GRANULARITIES.register
class Column(Granularity):
    """One (i, y, x) position across all filters (a linear layer's columns)."""

    name = "column"
    masks_unread = True

    @classmethod
    def matrix(cls, w4):
        return w4.reshape(w4.shape[0], -1).t()

    @classmethod
    def count(cls, o, i, k):
        return i * k

    @classmethod
    def keep_shape(cls, o, i, k):
        return (1, i, *k)


@GRANULARITIES.register
class NM(Granularity):
    """N:M (`method.nm`): see `nm_mask`. Its sparsity is 1 − N/M, reached in one step."""

    name = "nm"
    removes_channels = False
    one_step = True
    cost_problem = "N:M fixes the sparsity at 1 - N/M"

    @classmethod
    def sparsity_unit(cls, method_cfg) -> str:
        return f"{method_cfg.nm[0]}:{method_cfg.nm[1]}"

    @classmethod
    def prune(cls, pruner, target):
        pruner.prune_nm()


class Mixed(Granularity):
    """Several granularities at once (`filter+column`: AutoCompress chooses per layer). Which
    units go is the method's choice, so compaction masks nothing more on its own."""

    parts: ClassVar[Tuple[type, ...]] = ()


def granularity(name: str) -> type:
    """The granularity `name` names; `a+b` a Mixed one of its parts."""
    if "+" not in name:
        return GRANULARITIES.choose(name, "method.granularity")
    parts = tuple(granularity(p) for p in name.split("+"))
    return type("Mixed", (Mixed,), dict(
        name=name, parts=parts, removes_channels=any(p.removes_channels for p in parts),
        prunes_filters=all(p.prunes_filters for p in parts),
        cost_problem=next((p.cost_problem for p in parts if p.cost_problem), None)))


def as_4d(w: torch.Tensor) -> torch.Tensor:
    return w if w.dim() == 4 else w.reshape(w.shape[0], w.shape[1], 1, 1)


def unit_matrix(w: torch.Tensor, name: str) -> torch.Tensor:
    """The weight as a (units, unit_size) matrix: one row per unit of granularity `name`."""
    return GRANULARITIES.choose(name).matrix(as_4d(w))


def num_units(shape: torch.Size, name: str) -> int:
    k = 1
    for s in shape[2:]:
        k *= s
    return GRANULARITIES.choose(name).count(shape[0], shape[1], k)


def expand_units(keep: torch.Tensor, shape: torch.Size, name: str) -> torch.Tensor:
    """A per-unit keep vector -> an element mask of `shape` (a broadcast view, no copy)."""
    o, i = shape[0], shape[1]
    k = tuple(shape[2:]) or (1, 1)
    m = keep.reshape(GRANULARITIES.choose(name).keep_shape(o, i, k)).expand(o, i, *k)
    return m if len(shape) == 4 else m.reshape(o, i)


def _forced_first(scores: torch.Tensor, forced: Optional[torch.Tensor]) -> torch.Tensor:
    s = scores.float()
    if forced is not None:
        s = torch.where(forced.to(s.device), torch.full_like(s, float("-inf")), s)
    return s


def ranking(scores: torch.Tensor, forced: Optional[torch.Tensor] = None) -> torch.Tensor:
    """All unit indices, lowest score first; `forced` (bool) units first of all, so pruning toward a
    higher target never revives what an earlier step removed. Ties keep index order."""
    return torch.argsort(_forced_first(scores, forced), stable=True)


def lowest(scores: torch.Tensor, n: int, forced: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The indices of the n lowest-scoring units (forced ones first), as `ranking(...)[:n]` would
    give them as a set, but in O(units): a k-th value threshold, ties taken in index order."""
    s = _forced_first(scores, forced)
    if n <= 0:
        return torch.empty(0, dtype=torch.long, device=s.device)
    if n >= s.numel():
        return torch.arange(s.numel(), device=s.device)
    threshold = torch.kthvalue(s.cpu(), n).values.to(s.device)
    below = torch.nonzero(s < threshold).flatten()
    tied = torch.nonzero(s == threshold).flatten()[: n - below.numel()]
    return torch.cat([below, tied])


def keep_vector(scores: torch.Tensor, n_prune: int,
                forced: Optional[torch.Tensor] = None) -> torch.Tensor:
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[lowest(scores, n_prune, forced)] = False
    return keep


def pruned_units(mask: torch.Tensor, granularity: str) -> torch.Tensor:
    """Units whose every element is masked (bool per unit)."""
    return unit_matrix(mask, granularity).eq(0).all(1)


def nm_mask(w: torch.Tensor, n: int, m: int,
            scores: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bool mask keeping the n highest-scoring (default: largest |w|) of every m consecutive
    input-channel weights; `scores` has w's shape (a criterion's element scores).

    Conv weights are grouped in channels-last order (o, y, x, i). A trailing partial group (input
    channels not a multiple of m) keeps min(n, its size), so it never breaks the N:M bound.
    """
    w4 = as_4d(w.detach())
    o, i, kh, kw = w4.shape
    s4 = as_4d(scores.detach()) if scores is not None else w4.abs()
    score = s4.permute(0, 2, 3, 1).reshape(-1, i).float()
    pad = (-i) % m
    if pad:  # padded entries score -inf so real weights are always preferred
        score = torch.cat([score, score.new_full((score.shape[0], pad), float("-inf"))], 1)
    groups = score.reshape(score.shape[0], -1, m)
    top = groups.topk(n, dim=-1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    keep = keep.reshape(score.shape[0], -1)[:, :i]
    keep &= torch.isfinite(score[:, :i])
    keep = keep.reshape(o, kh, kw, i).permute(0, 3, 1, 2)
    return keep.reshape(w.shape)

