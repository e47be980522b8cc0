"""Units, scores, exact selection and projections of one weight tensor."""
import pytest
import torch

from prunekit.sparsity.criteria import unit_scores
from prunekit.sparsity.units import (
    expand_units,
    keep_vector,
    lowest,
    nm_mask,
    num_units,
    pruned_units,
    ranking,
)


def conv_weight(seed=0, shape=(6, 4, 3, 3)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("granularity", ["unstructured", "filter", "channel", "column"])
@pytest.mark.parametrize("shape", [(6, 4, 3, 3), (10, 8)])
def test_keep_mask_prunes_exactly_round_s_units(granularity, shape):
    w = conv_weight(shape=shape)
    for s in (0.0, 0.25, 0.5, 0.9):
        scores = unit_scores(w, granularity, "l1")
        n_units = num_units(w.shape, granularity)
        n_prune = int(round(s * n_units))
        mask = expand_units(keep_vector(scores, n_prune), w.shape, granularity)
        assert mask.shape == w.shape
        assert int(pruned_units(mask, granularity).sum()) == n_prune
        # the pruned units are the lowest-scoring ones
        pruned = pruned_units(mask, granularity)
        if 0 < n_prune < n_units:
            assert scores[pruned].max() <= scores[~pruned].min()


def test_unit_shapes_of_a_conv():
    w = conv_weight()
    assert num_units(w.shape, "filter") == 6
    assert num_units(w.shape, "channel") == 4
    assert num_units(w.shape, "column") == 4 * 9
    keep = torch.ones(4, dtype=torch.bool)
    keep[1] = False
    m = expand_units(keep, w.shape, "channel")
    assert (m[:, 1] == 0).all() and m[:, [0, 2, 3]].all()
    keep = torch.ones(36, dtype=torch.bool)
    keep[5] = False  # channel 0, position (1, 2)
    m = expand_units(keep, w.shape, "column")
    assert (m[:, 0, 1, 2] == 0).all() and int((~m).sum()) == 6


def test_l1_and_l2_scores_match_definitions():
    w = conv_weight()
    assert torch.allclose(unit_scores(w, "filter", "l1"), w.abs().sum((1, 2, 3)))
    assert torch.allclose(unit_scores(w, "filter", "l2"), w.pow(2).sum((1, 2, 3)).sqrt())
    assert torch.allclose(unit_scores(w, "channel", "l2", per_element=True),
                          w.pow(2).mean((0, 2, 3)).sqrt())


def test_random_scores_follow_the_generator():
    w = conv_weight()
    a = unit_scores(w, "filter", "random", torch.Generator().manual_seed(3))
    b = unit_scores(w, "filter", "random", torch.Generator().manual_seed(3))
    c = unit_scores(w, "filter", "random", torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_lowest_is_exact_with_ties_and_forced_units():
    scores = torch.tensor([3.0, 1.0, 1.0, 1.0, 2.0, 0.5])
    assert set(lowest(scores, 3).tolist()) == {5, 1, 2}  # ties taken in index order
    assert set(lowest(scores, 0).tolist()) == set()
    assert set(lowest(scores, 6).tolist()) == set(range(6))
    forced = torch.tensor([True, False, False, False, False, False])
    assert set(lowest(scores, 2, forced).tolist()) == {0, 5}
    assert ranking(scores, forced).tolist()[:2] == [0, 5]
    for n in range(7):  # agrees with the full ranking as a set
        assert set(lowest(scores, n).tolist()) == set(ranking(scores)[:n].tolist())


def test_nm_mask_keeps_n_largest_of_every_m():
    w = conv_weight(shape=(4, 8, 3, 3))
    mask = nm_mask(w, 2, 4)
    groups = mask.permute(0, 2, 3, 1).reshape(-1, 2, 4)  # (o, y, x) rows, channel groups of 4
    assert (groups.sum(-1) == 2).all()
    vals = w.abs().permute(0, 2, 3, 1).reshape(-1, 2, 4)
    kept_min = torch.where(groups, vals, torch.full_like(vals, float("inf"))).min(-1).values
    dropped_max = torch.where(~groups, vals, torch.full_like(vals, -1.0)).max(-1).values
    assert (kept_min >= dropped_max).all()


def test_nm_mask_partial_group_never_breaks_the_bound():
    w = conv_weight(shape=(3, 6, 1, 1))  # 6 channels: one full group of 4, one partial of 2
    mask = nm_mask(w, 1, 4).reshape(3, 6)
    assert (mask[:, :4].sum(1) == 1).all()
    assert (mask[:, 4:].sum(1) == 1).all()

