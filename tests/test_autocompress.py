"""AutoCompress: the guided search's rules, purification, mask-preserving compaction, the method."""
import csv
import random

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf
from test_hardware import CPU
from test_pruner import model_of, pruner_for

from conftest import FAST, make_cfg
from prunekit.errors import ConfigError
from prunekit.methods.autocompress import round_targets, undone
from prunekit.methods.autocompress_search import (
    Action,
    SearchSpace,
    SearchUnit,
    anneal,
    fit_to_target,
    initial_action,
    neighbour,
)
from prunekit.runner import run
from prunekit.sparsity import purify
from prunekit.sparsity.groups import Role
from prunekit.sparsity.purify import mask_near_zero, mask_unread
from prunekit.sparsity.units import expand_units
from prunekit.train import Trainer


def some_units(seed=0, n=7):
    rng = random.Random(seed)
    return [SearchUnit(f"u{i}", (f"u{i}",), rng.choice([100, 400, 400, 2000, 9000]),
                       ("filter", "column") if i % 2 else ("column",),
                       lower=rng.choice([0.0, 0.0, 0.1, 0.3])) for i in range(n)]


def assert_rule(rates, units, max_rate):
    for a, ra in zip(units, rates):
        assert ra >= a.lower - 1e-12 and ra <= max(max_rate, a.lower) + 1e-12
        for b, rb in zip(units, rates):
            if a.size > b.size:
                assert ra >= rb - 1e-12, "a larger unit got a lower rate"


@pytest.mark.parametrize("seed", range(5))
def test_fit_to_target_is_exact_and_monotone_in_size(seed):
    units = some_units(seed)
    rng = random.Random(seed)
    total = sum(u.size for u in units) + 500
    for target in (0.35, 0.6, 0.85):
        base = [rng.random() for _ in units]
        space = SearchSpace(units, outside=50.0, total=total)
        rates = fit_to_target(base, space, target, 0.99)
        assert_rule(rates, units, 0.99)
        assert space.nominal_sparsity(rates) == pytest.approx(target, abs=1e-9)


def test_fit_to_target_stops_at_the_bounds_when_the_target_is_out_of_reach():
    units = [SearchUnit("a", ("a",), 10, ("column",)), SearchUnit("b", ("b",), 10, ("column",))]
    assert fit_to_target([0.1, 0.2], SearchSpace(units), 0.999, 0.9) == pytest.approx([0.9, 0.9])


def test_neighbours_keep_the_rule_and_the_target_and_shrink_with_temperature():
    units = some_units(1)
    space = SearchSpace(units)
    start = initial_action(space, 0.6, 0.99)
    rng = random.Random(0)
    hot, cold = [], []
    for _ in range(30):
        for heat, out in ((1.0, hot), (0.05, cold)):
            a = neighbour(start, space, 0.6, 0.99, 0.35 * heat, 0.5 * heat, rng)
            assert_rule(a.rates, units, 0.99)
            assert space.nominal_sparsity(a.rates) == pytest.approx(0.6, abs=1e-9)
            for u, s in zip(units, a.schemes):
                assert s in u.schemes  # a column-only layer never gets filter
            out.append(max(abs(x - y) for x, y in zip(a.rates, start.rates)))
    assert sum(cold) < sum(hot) / 4


class FixedRng:
    """random() returns a fixed value: acceptance becomes deterministic."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


def test_anneal_honours_the_budget_and_returns_the_best_evaluated():
    values = iter([50.0, 40.0, 70.0, 60.0, 65.0, 90.0, 10.0, 99.0])
    calls = []

    def evaluate(action):
        calls.append(action)
        return next(values)

    trials = []
    best, value, n = anneal(evaluate, Action((0.5,), ("column",)),
                            lambda a, heat: Action((a.rates[0] + 0.01,), a.schemes),
                            temperature=2.0, final_temperature=0.01, cooling=0.9, evaluations=6,
                            rng=FixedRng(0.99), on_trial=trials.append)
    assert len(calls) == n == 6 and len(trials) == 6
    assert value == 90.0 and best is calls[5]


def test_acceptance_uses_a_temperature_in_points_and_cools_on_acceptance():
    # current 80; candidates 1 and 2 points worse at T = 2: exp(-0.5) = 0.61, exp(-1) = 0.37
    values = iter([80.0, 79.0, 77.0, 76.0])
    trials = []
    anneal(lambda a: next(values), Action((0.5,), ("column",)), lambda a, heat: a,
           temperature=2.0, final_temperature=0.01, cooling=0.5, evaluations=4,
           rng=FixedRng(0.5), on_trial=trials.append)
    assert [t.accepted for t in trials] == [True, True, False, False]
    # T halves after the accepted 79; the move 2 points worse at T = 1 (exp(-2)) is rejected
    assert [t.temperature for t in trials] == [2.0, 2.0, 1.0, 1.0]


def test_search_stops_at_the_final_temperature():
    n_calls = []
    _, _, n = anneal(lambda a: n_calls.append(1) or 50.0, Action((0.5,), ("column",)),
                     lambda a, heat: a, temperature=1.0, final_temperature=0.3, cooling=0.5,
                     evaluations=100, rng=FixedRng(0.0))
    assert n == len(n_calls) == 3  # T: 1 -> 0.5 -> 0.25 < 0.3 after two accepted moves


def test_round_targets_are_cumulative():
    t = round_targets(0.9, 3)
    assert t[-1] == pytest.approx(0.9)
    assert t[0] == pytest.approx(1 - 0.1 ** (1 / 3))
    assert all(a < b for a, b in zip(t, t[1:]))


# --------------------------------------------------------------------------- purification
def eval_out(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def stream_group(p, prefix="layer2"):
    return next(g for g in p.groups.groups if g.root.startswith(prefix)
                and len([m for m in g.outputs()]) > 1)


def test_purification_removes_an_unread_stream_channel_from_every_branch():
    """Channel c of layer2's residual stream: when no reader uses it (layer2.1.conv1 and the
    layer3 block inputs), it goes from every writer of the add (conv2 of both blocks and the
    shortcut), exactly: the output does not change, masked or compacted."""
    torch.manual_seed(0)
    m = model_of("resnet18")
    p = pruner_for(m, granularity="filter+column")
    g = stream_group(p)
    c = 5
    for mem in g.members:
        if mem.role is Role.IN:
            w = p.weight(mem.module)
            mask = torch.ones_like(w, dtype=torch.bool)
            mask[:, mem.take([c])] = False
            p.masks.restrict(f"{mem.module}.weight", mask)
    p.masks.apply()
    x = torch.randn(4, 3, 8, 8)
    before = eval_out(m, x)
    assert mask_unread(p) == 1
    assert bool(p.groups.masked_channels(g, p.masks)[c])
    writers = [mem.module for mem in g.outputs()]
    assert len(writers) == 3
    for name in writers:
        rows = next(mm for mm in g.members if mm.module == name).take([c])
        assert p.weight(name)[rows].abs().sum() == 0, name
    assert torch.allclose(eval_out(m, x), before, atol=1e-5)
    widths = {n: p.weight(n).shape[0] for n in writers}
    p.compact()
    for n in writers:
        assert p.weight(n).shape[0] == widths[n] - 1
    assert torch.allclose(eval_out(m, x), before, atol=1e-4)


def test_purification_strands_the_filter_whose_only_reader_lost_its_columns():
    m = model_of("resnet18")
    p = pruner_for(m, granularity="filter+column")
    g = next(g for g in p.groups.groups if g.root == "layer1.0.conv1")
    w = p.weight("layer1.0.conv2")  # the only reader of layer1.0.conv1's channels
    keep = torch.ones(w.shape[1] * 9, dtype=torch.bool)
    keep[3 * 9:3 * 9 + 9] = False  # every column of input channel 3
    p.masks.restrict("layer1.0.conv2.weight", expand_units(keep, w.shape, "column"))
    assert mask_unread(p) == 1
    assert bool(p.groups.masked_channels(g, p.masks)[3])
    assert p.masks["layer1.0.bn1.bias"][3] == 0  # the BN channel goes with the filter


def test_near_zero_thresholds_are_relative_and_keep_one():
    torch.manual_seed(0)
    m = model_of("lenet5", in_channels=1)
    p = pruner_for(m, in_channels=1, granularity="filter+column")
    with torch.no_grad():
        w = p.weight("features.3")
        w[2] *= 1e-3  # one filter far below its neighbours
    state = p.masks.state()
    saved = {n: q.detach().clone() for n, q in m.named_parameters()}

    def reset():
        p.masks.restore(state)
        with torch.no_grad():
            for n, q in m.named_parameters():
                q.copy_(saved[n])

    got = mask_near_zero(p, 0.0)
    assert got.channels == 0 and got.columns == 0  # nothing exactly zero
    reset()
    got = mask_near_zero(p, 0.01)
    g = next(g for g in p.groups.groups if g.root == "features.3")
    assert bool(p.groups.masked_channels(g, p.masks)[2]) and got.channels >= 1
    reset()
    mask_near_zero(p, 1e9)  # everything is "near zero": every group and layer keeps one
    for grp in p.groups.groups:
        assert int((~p.groups.masked_channels(grp, p.masks)).sum()) >= 1
    for n in p.layer_names:
        assert int(p.weight(n).ne(0).sum()) > 0


def test_a_channel_scores_by_its_batchnorm_scale_times_its_readers_not_its_filter_norm():
    m = model_of("resnet20")
    p = pruner_for(m, granularity="filter+column")
    g = next(g for g in p.groups.groups if g.root == "layer1.0.conv1")  # conv1 -> bn1 -> conv2
    with torch.no_grad():
        p.weight("layer1.0.conv1")[2] *= 1e-3  # BN normalises this filter's output back
        m.get_submodule("layer1.0.bn1").weight[5] = 1e-4  # this channel's output is tiny
    ratios = purify.relative(purify.channel_scores(p, g), torch.ones(g.size, dtype=torch.bool))
    assert ratios[2] > 0.1 and ratios[5] < 1e-3
    channel, column = purify.weakest(p)
    assert channel == pytest.approx(float(ratios.min())) and 0 < column <= 1
    got = mask_near_zero(p, 0.01)
    gone = p.groups.masked_channels(g, p.masks)
    assert bool(gone[5]) and not bool(gone[2]) and got.channels >= 1


def test_compaction_keeps_the_column_masks_of_the_layers_that_stay():
    """A reader's pruned columns survive when a producer's channels are removed physically."""
    m = model_of("resnet18")
    p = pruner_for(m, granularity="filter+column")
    shape = p.weight("layer1.0.conv2").shape  # 64 x 64 x 3 x 3, reads layer1.0.conv1
    keep = torch.ones(shape[1] * 9, dtype=torch.bool)
    keep[::7] = False
    columns = expand_units(keep, shape, "column")
    p.masks.restrict("layer1.0.conv2.weight", columns)
    g = next(g for g in p.groups.groups if g.root == "layer1.0.conv1")
    p.groups.mask_channels(g, torch.tensor([0, 1]), p.masks)
    p.masks.apply()
    x = torch.randn(2, 3, 8, 8)
    before = eval_out(m, x)
    p.compact()
    assert p.weight("layer1.0.conv2").shape[1] == 62
    assert torch.equal(p.masks["layer1.0.conv2.weight"].bool(), columns[:, 2:])
    assert "layer1.0.conv1.weight" not in p.masks  # nothing left to mask there: dropped
    assert torch.allclose(eval_out(m, x), before, atol=1e-4)


# --------------------------------------------------------------------------- quick evaluation
def test_recalibrated_batchnorm_holds_the_statistics_of_the_calibration_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.1))
    conv, bn = model[1], model[2]
    batches = [(torch.randn(8, 3, 6, 6) * 3 + 1, torch.zeros(8)) for _ in range(3)]
    model.train()
    trainer = Trainer(None, OmegaConf.create({"progress": False}), CPU, progress=False)
    assert trainer.recalibrate_bn(model, batches) == 1
    with torch.no_grad():
        outs = [conv(x) for x, _ in batches]  # no dropout: it was in eval mode
    mean = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outs]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, rtol=1e-4)
    assert bn.momentum == 0.1 and model.training and model[0].training  # as they were
    model.eval()
    trainer.recalibrate_bn(model, batches)
    assert not model.training and not bn.training


def test_undone_brings_back_masks_parameters_and_batchnorm_statistics():
    m = model_of("resnet20")
    p = pruner_for(m, granularity="filter+column")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    masks = p.masks.state()
    with undone(p):
        mask_near_zero(p, 1e9)
        with torch.no_grad():
            for b in m.buffers():
                b.add_(1)
    assert p.masks.state().keys() == masks.keys()
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())


# --------------------------------------------------------------------------- the method
@pytest.mark.parametrize("schemes", ["filter+column", "column"])
def test_autocompress_run_records_search_rounds_and_layers(tmp_path, schemes):
    s = run(make_cfg(["method=autocompress", "model=lenet5", "dataset.subset=0.4", "sparsity=0.7",
                      f"method.granularity={schemes}",
                      "method.rounds=2", "method.search.evaluations=5", "method.iterations=1",
                      "method.finetune_epochs=1", *FAST]), tmp_path, show=False)
    assert s["status"] == "ok"
    assert s["sparsity"] >= 0.7 - 0.02
    assert s["steps"] == 2 and s["search_evaluations"] <= 10
    assert s["time_search_s"] > 0
    assert s["compacted"] and s["compaction_max_abs_diff"] < 1e-4
    with open(tmp_path / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    trials = [r for r in rows if r["event"] == "trial"]
    for rnd in ("1", "2"):
        these = [r for r in trials if r["round"] == rnd]
        assert 1 <= len(these) <= 5
        target = round_targets(0.7, 2)[int(rnd) - 1]
        nominal = {round(float(r["nominal_sparsity"]), 9) for r in these}
        if max(nominal) > target + 1e-6:  # purification already passed it: every unit at its
            assert len(nominal) == 1 and rnd == "2"  # lower bound, the same for every action
        else:
            assert all(v == pytest.approx(target, abs=1e-6) for v in nominal)
    rounds = [r for r in rows if r["event"] == "round"]
    assert [float(r["target"]) for r in rounds] == pytest.approx(round_targets(0.7, 2))
    assert sum(1 for r in rows if r["event"] == "admm") == 2
    with open(tmp_path / "layers.csv") as f:
        layers = [r for r in csv.DictReader(f) if r["prunable"] == "True"]
    assert all(r["scheme"] in schemes.split("+") and 0 <= float(r["rate"]) < 1 for r in layers)


@pytest.mark.parametrize("override, message", [
    ("method.granularity=nm", "method.granularity=nm"),
    ("method.search.max_rate=0.4", "method.search.max_rate=0.4"),
    ("method.purify.thresholds=[0.1,0.0]", "method.purify.thresholds"),
    ("method.search.cooling=1.0", "method.search.cooling=1.0"),
])
def test_autocompress_config_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        run(make_cfg(["method=autocompress", override, "model=lenet5", *FAST]), tmp_path,
            show=False)
