"""The constraint sets of ADMM / AutoCompress / SLR: exact Euclidean projections, exact counts."""
import itertools

import pytest
import torch
from test_pruner import model_of, pruner_for

from prunekit.sparsity.groups import Role
from prunekit.sparsity.projection import (
    FilterConstraint,
    LayerConstraint,
    hard_prune,
    project_all,
    zero_count,
)
from prunekit.sparsity.units import expand_units, num_units, pruned_units


def brute_force_distance(w, granularity, n_zero):
    """The smallest ‖w − p‖² over every p that zeroes at least n_zero units of w."""
    n = num_units(w.shape, granularity)
    best = float("inf")
    for k in range(n_zero, n + 1):
        for drop in itertools.combinations(range(n), k):
            keep = torch.tensor([u not in drop for u in range(n)])
            p = w * expand_units(keep, w.shape, granularity)
            best = min(best, float((w - p).pow(2).sum()))
    return best


@pytest.mark.parametrize("granularity", ["unstructured", "filter", "channel", "column"])
@pytest.mark.parametrize("seed", [0, 1])
def test_layer_projection_is_the_euclidean_projection(granularity, seed):
    w = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(seed))
    if num_units(w.shape, granularity) > 10:  # keep the brute force small
        w = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(seed))
    n = num_units(w.shape, granularity)
    for n_zero in (1, n // 2, n - 1):
        c = LayerConstraint("x", granularity, n_zero)
        p = c.project({"x": w})["x"]
        assert int(pruned_units(p.ne(0), granularity).sum()) == n_zero
        assert float((w - p).pow(2).sum()) == pytest.approx(
            brute_force_distance(w, granularity, n_zero), rel=1e-6)


def test_nm_projection_is_the_euclidean_projection():
    w = torch.randn(2, 8, 1, 1, generator=torch.Generator().manual_seed(2))
    p = LayerConstraint("x", "nm", nm=(2, 4)).project({"x": w})["x"]
    for row_w, row_p in zip(w.reshape(-1, 4), p.reshape(-1, 4)):
        assert int(row_p.ne(0).sum()) == 2
        best = min(float(sum(row_w[i] ** 2 for i in drop))
                   for drop in itertools.combinations(range(4), 2))
        assert float((row_w - row_p).pow(2).sum()) == pytest.approx(best, rel=1e-6)


def test_filter_projection_couples_the_filters_of_a_residual_add():
    """A residual stream's group: channel c is one structure across every conv writing the add;
    projecting keeps the channels of largest joint L2 norm, the exact Π of that set."""
    m = model_of("resnet18")
    p = pruner_for(m, granularity="filter")
    group = next(g for g in p.groups.groups if g.root.startswith("layer2")
                 and len([x for x in g.outputs()]) > 1)
    c = FilterConstraint(group, n_zero=0)
    g = torch.Generator().manual_seed(0)
    tensors = {n: torch.randn(p.weight(n).shape, generator=g) for n in c.layers}
    c.n_zero = 50
    z = c.project(tensors)
    joint = torch.zeros(group.size, dtype=torch.float64)
    for mem in group.members:
        if mem.role is Role.OUT:
            rows = tensors[mem.module].reshape(tensors[mem.module].shape[0], -1)
            joint += mem.reduce(rows.double().pow(2).sum(1), "sum")
    gone = torch.argsort(joint)[:50]
    for mem in group.members:
        if mem.role is Role.OUT:
            t = z[mem.module]
            assert t[mem.take(gone.tolist())].abs().sum() == 0  # the weakest channels, everywhere
            alive = torch.ones(group.size, dtype=torch.bool)
            alive[gone] = False
            kept_rows = mem.take(torch.nonzero(alive).flatten().tolist())
            assert torch.equal(t[kept_rows], tensors[mem.module][kept_rows])
    # the distance is the weakest channels' joint energy: no other choice of 50 is closer
    dist = sum(float((tensors[n] - z[n]).pow(2).sum()) for n in c.layers)
    assert dist == pytest.approx(float(joint.sort().values[:50].sum()), rel=1e-5)


def test_zero_count_closed_form_and_general_agree():
    norms = torch.tensor([0.0, 0.0, 3.0, 1.0, 2.0, 5.0])
    alive = torch.tensor([0, 0, 4, 4, 4, 4])
    # 16 alive of 24 dense; rate 0.75 leaves 6 -> remove 2 or 3 live (10 or 6 left): 3, plus 2 dead
    assert zero_count(norms, alive, 24, 0.75) == 5
    assert zero_count(norms, alive, 24, 0.0) == 2  # never revives, never removes below the rate
    assert zero_count(norms, alive, 24, 0.99) == 5  # at least one live structure stays
    uneven = torch.tensor([0, 0, 4, 1, 4, 4])  # the general path: removal in norm order
    # remove norm 1 (1 weight), then 2 (4), then 3 (4): left 13 -> 12 -> 8 -> 4; want 6 -> 8 or 4
    assert zero_count(norms, uneven, 24, 0.75) in (4, 5)


def test_layer_rate_counts_the_dense_weights():
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    c = LayerConstraint.for_rate(w, "x", "column", 0.5, w.numel())
    assert c.n_zero == 18  # half of the 36 columns
    w[:, 0] = 0  # 9 columns already zero (a producer's filter went): they count first
    c = LayerConstraint.for_rate(w, "x", "column", 0.5, w.numel())
    assert c.n_zero == 18
    small = w[:4]  # 4 rows left of 8 physically: already 1 - 27*4/288 = 0.625 removed
    c = LayerConstraint.for_rate(small, "x", "column", 0.5, w.numel())
    assert c.n_zero == 9  # nothing more to remove


@pytest.mark.parametrize("granularity", ["unstructured", "column", "filter"])
def test_hard_prune_hits_the_count_and_keeps_w_on_the_set(granularity):
    m = model_of("lenet5", in_channels=1)
    p = pruner_for(m, in_channels=1, granularity=granularity)
    if granularity == "filter":
        cons = [FilterConstraint(g, g.size // 2) for g in p.groups.groups]
    else:
        cons = [LayerConstraint.for_rate(p.weight(n), n, granularity, 0.7, p.dense_numel[n])
                for n in p.layer_names]
    before = {n: p.weight(n).detach().clone() for c in cons for n in c.layers}
    z = project_all(cons, before)
    hard_prune(cons, p)
    for n, t in z.items():  # the hard prune of W is Π(W) (filters: minus the readers' inputs)
        assert torch.equal(p.weight(n).detach(), t * p.masks[f"{n}.weight"])
    if granularity == "filter":
        for g, c in zip(p.groups.groups, cons):
            assert int(p.groups.masked_channels(g, p.masks).sum()) == c.n_zero
    else:
        for n in p.layer_names:
            w = p.weight(n)
            assert int(w.eq(0).sum()) == pytest.approx(0.7 * w.numel(), abs=w.numel() / num_units(
                w.shape, granularity))
