"""Pruning criteria: every registered one on every kind of unit, and taylor's and lamp's rules on
inputs whose answer is known."""
import pytest
import torch
import torch.nn as nn
from test_pruner import model_of, pruner_for

from prunekit.sparsity.criteria import CRITERIA, Lamp, Taylor, criterion_named

BATCHES = [(torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(i)),
            torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(i)))
           for i in range(3)]


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_every_criterion_prunes_channel_groups_to_the_target(name):
    """A new criterion is tested here without editing a list: it scores every channel group of a
    residual network with one finite value per channel, and the pruner reaches its target."""
    m = model_of("resnet18").eval()
    p = pruner_for(m, granularity="filter", criterion=name)
    p.prepare(BATCHES, 2)
    for g in p.groups.groups:
        s = p.channel_scores(g)
        assert s.shape == (g.size,) and torch.isfinite(s).all(), g.root
    p.prune_to(0.5)
    p.masks.apply()
    from prunekit.metrics import prunable_sparsity
    assert prunable_sparsity(m, p.dense_numel) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("name", sorted(n for n, c in CRITERIA.items() if c.scores_units))
@pytest.mark.parametrize("granularity", ["unstructured", "channel", "column", "nm"])
def test_every_unit_criterion_prunes_every_granularity_exactly(name, granularity):
    m = model_of("resnet18")
    target = 0.5
    p = pruner_for(m, granularity=granularity, criterion=name, scope="layerwise")
    p.prepare(BATCHES, 2)
    p.prune_to(target)
    p.masks.apply()
    for layer in p.unit_layers(granularity):
        w = m.get_submodule(layer).weight
        assert float((w == 0).float().mean()) == pytest.approx(target, abs=0.05), layer


def test_a_criterion_that_cannot_score_units_says_so():
    with pytest.raises(NotImplementedError, match="channel groups only"):
        criterion_named("entropy").unit_scores("x", torch.randn(4, 4), "unstructured")


def test_taylor_is_the_squared_first_order_term_averaged_over_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    batches = [(torch.randn(5, 6), torch.randint(0, 3, (5,))) for _ in range(3)]
    t = Taylor()
    t.prepare(model, ["1"], [], batches, max_batches=2)
    w = model[1].weight
    expected = torch.zeros_like(w, dtype=torch.float64)
    for x, y in batches[:2]:  # max_batches: the third is not read
        g, = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), [w])
        expected += (w.detach().double() * g.double()).pow(2)
    assert torch.allclose(t.table["1"], expected / 2)
    assert w.grad is None  # gradients never land in .grad
    w.requires_grad_(False)  # a frozen layer (ICE freezes layers it still prunes) is scored too
    t.prepare(model, ["1"], [], batches, max_batches=2)
    assert torch.allclose(t.table["1"], expected / 2) and not w.requires_grad


def test_taylor_prunes_a_large_weight_the_loss_does_not_use_while_l1_keeps_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[5.0, 0.3, -0.4, 0.2], [-5.0, 0.5, 0.3, -0.6]]))
    x = torch.randn(64, 4)
    x[:, 0] = 0.0  # input 0 is always zero: its weights never change the loss
    batches = [(x, (x[:, 1] > 0).long())]
    t = Taylor()
    t.prepare(model, ["1"], [], batches, 1)
    w = model[1].weight
    taylor = t.unit_scores("1", w, "channel")
    l1 = criterion_named("l1").unit_scores("1", w, "channel")
    assert int(taylor.argmin()) == 0 and taylor[0] == 0
    assert int(l1.argmax()) == 0


def test_lamp_scores_are_a_weights_share_of_its_layers_larger_rest():
    w = torch.tensor([[1.0, -3.0, 2.0]])
    s = Lamp().unit_scores("x", w, "unstructured")
    # sorted squares 1, 4, 9: 1 / 14, 4 / 13, 9 / 9
    assert torch.allclose(s, torch.tensor([1 / 14, 1.0, 4 / 13]))


def test_lamp_under_global_scope_never_empties_a_layer_of_small_weights():
    """Global magnitude pruning removes a layer whose weights are all small; LAMP keeps each
    layer's largest weight (score 1) to the end: the layer-adaptive point of the paper."""
    m = model_of("resnet18")
    with torch.no_grad():
        m.layer1[0].conv1.weight.mul_(1e-3)
    sparsity = {}
    for name in ("l1", "lamp"):
        mm = model_of("resnet18")
        mm.load_state_dict(m.state_dict())
        p = pruner_for(mm, granularity="unstructured", criterion=name, scope="global")
        p.prune_to(0.7)
        p.masks.apply()
        sparsity[name] = float((mm.layer1[0].conv1.weight == 0).float().mean())
    assert sparsity["l1"] == 1.0
    assert sparsity["lamp"] < 1.0
