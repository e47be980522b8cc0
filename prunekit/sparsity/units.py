"""Units of pruning within one weight tensor, their scores, exact keep-masks, and projections.

A *unit* is what a granularity removes as a whole:

| granularity  | unit of a conv weight (O, I, kh, kw)         | of a linear weight (O, I) |
|--------------|----------------------------------------------|---------------------------|
| unstructured | one element                                  | one element               |
| filter       | one output channel W[o]                      | one row W[o]              |
| channel      | one input channel W[:, i]                    | one column W[:, i]        |
| column       | one (i, y, x) position across all filters     | one column W[:, i]        |

N:M keeps the N largest of every M consecutive input-channel weights (channels-last order, the
layout sparse kernels use) and is handled by `nm_mask`.

Keeping the k units of largest L2 norm is the exact Euclidean projection onto "at most k units
non-zero": `sparsity.projection` builds ADMM's and SLR's Π on these functions, and pruning with
criterion l2 uses the same code. Selection breaks ties by index, so counts are exact.
"""
from __future__ import annotations

from typing import Optional

import torch

UNIT_GRANULARITIES = ("unstructured", "filter", "channel", "column")


def as_4d(w: torch.Tensor) -> torch.Tensor:
    return w if w.dim() == 4 else w.reshape(w.shape[0], w.shape[1], 1, 1)


def unit_matrix(w: torch.Tensor, granularity: str) -> torch.Tensor:
    """The weight as a (units, unit_size) matrix: one row per unit."""
    w4 = as_4d(w)
    o, i, kh, kw = w4.shape
    if granularity == "unstructured":
        return w4.reshape(-1, 1)
    if granularity == "filter":
        return w4.reshape(o, -1)
    if granularity == "channel":
        return w4.transpose(0, 1).reshape(i, -1)
    if granularity == "column":
        return w4.reshape(o, -1).t()
    raise ValueError(f"unknown granularity {granularity!r}")


def num_units(shape: torch.Size, granularity: str) -> int:
    o, i = shape[0], shape[1]
    k = 1
    for s in shape[2:]:
        k *= s
    return {"unstructured": o * i * k, "filter": o, "channel": i, "column": i * k}[granularity]


def expand_units(keep: torch.Tensor, shape: torch.Size, granularity: str) -> torch.Tensor:
    """A per-unit keep vector -> an element mask of `shape` (a broadcast view, no copy)."""
    o, i = shape[0], shape[1]
    k = tuple(shape[2:]) or (1, 1)
    if granularity == "unstructured":
        return keep.reshape(shape)
    if granularity == "filter":
        m = keep.reshape(o, 1, 1, 1)
    elif granularity == "channel":
        m = keep.reshape(1, i, 1, 1)
    elif granularity == "column":
        m = keep.reshape(1, i, *k)
    else:
        raise ValueError(f"unknown granularity {granularity!r}")
    m = m.expand(o, i, *k)
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

