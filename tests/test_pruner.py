"""Pruner, MaskSet and channel groups on real models."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from omegaconf import OmegaConf

import prunekit
from prunekit.artifacts import save_model
from prunekit.metrics import prunable_sparsity
from prunekit.models import MODELS, build_model, prunable_layers, residual_blocks
from prunekit.sparsity import MaskSet, Pruner, PruneSpec
from prunekit.sparsity.units import pruned_units


def model_of(name, size=8, in_channels=3, classes=10, seed=0):
    torch.manual_seed(seed)
    cfg = OmegaConf.create({"name": name, "in_channels": in_channels, "small_input": None})
    return build_model(cfg, classes, size)


def pruner_for(model, size=8, in_channels=3, **spec):
    layers = prunable_layers(model)
    x = torch.randn(1, in_channels, size, size)
    return Pruner(model, PruneSpec(**spec), layers, x, seed=0, blocks=list(residual_blocks(model)))


def test_prunable_layers_exclude_stem_and_classifier():
    m = model_of("resnet18")
    names = list(prunable_layers(m))
    assert "conv1" not in names and "fc" not in names
    assert "layer1.0.conv1" in names and "layer2.0.downsample.0" in names
    assert "conv1" in prunable_layers(m, prune_first_conv=True)
    assert "fc" in prunable_layers(m, prune_classifier=True)


@pytest.mark.parametrize("granularity", ["unstructured", "channel", "column"])
def test_layerwise_targets_are_exact_per_layer(granularity):
    m = model_of("lenet5", size=8, in_channels=1)
    p = pruner_for(m, in_channels=1, granularity=granularity)
    p.prune_to(0.6)
    for name in p.layer_names:
        w = m.get_submodule(name).weight
        units = pruned_units(p.masks[f"{name}.weight"], granularity)
        assert int(units.sum()) == int(round(0.6 * len(units)))
        expected = int(round(0.6 * len(units))) / len(units)
        assert float((w == 0).float().mean()) == pytest.approx(expected)


def test_global_unstructured_is_exact_over_all_layers_and_uneven_per_layer():
    m = model_of("resnet18")
    p = pruner_for(m, scope="global")
    p.prune_to(0.7)
    total = sum(p.dense_numel.values())
    zeros = sum(int((m.get_submodule(n).weight == 0).sum()) for n in p.layer_names)
    assert zeros == int(round(0.7 * total))
    per_layer = [float((m.get_submodule(n).weight == 0).float().mean()) for n in p.layer_names]
    assert max(per_layer) - min(per_layer) > 0.1  # global scope: layers differ


@pytest.mark.parametrize("criterion", ["l1", "random"])
def test_masks_only_grow(criterion):
    m = model_of("lenet5", in_channels=1)
    p = pruner_for(m, in_channels=1, criterion=criterion)
    p.prune_to(0.3)
    before = {n: t.clone() for n, t in p.masks.items()}
    p.prune_to(0.6)
    for n, old in before.items():
        assert (p.masks[n] <= old).all(), f"{n}: a pruned weight came back"
    assert prunable_sparsity(m, p.dense_numel) == pytest.approx(0.6, abs=0.01)


def test_nm_granularity_on_a_model():
    m = model_of("resnet18")
    p = pruner_for(m, granularity="nm", nm=(2, 4))
    p.prune_to(0.5)
    for n in p.layer_names:
        w = m.get_submodule(n).weight
        rows = w.permute(0, 2, 3, 1).reshape(-1, w.shape[1] // 4, 4)
        assert ((rows != 0).sum(-1) <= 2).all()
    assert prunable_sparsity(m, p.dense_numel) == pytest.approx(0.5, abs=1e-6)


def test_masks_survive_an_sgd_step_with_momentum():
    m = model_of("lenet5", in_channels=1)
    p = pruner_for(m, in_channels=1)
    p.prune_to(0.5)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        p.masks.apply()
    for n, mask in p.masks.items():
        assert (m.get_parameter(n)[mask == 0] == 0).all()
    assert prunable_sparsity(m, p.dense_numel) == pytest.approx(0.5, abs=1e-3)


def test_maskset_rejects_wrong_shapes():
    m = model_of("lenet5", in_channels=1)
    masks = MaskSet(m)
    with pytest.raises(ValueError):
        masks.set("features.0.weight", torch.ones(3, 3))


# ---------------------------------------------------------------- filters, groups, compaction
CONF = Path(__file__).resolve().parents[1] / "conf"
FAMILIES = ("torchvision", "timm", "custom")  # models chosen by model.arch / model.target
EVERY_MODEL = sorted(set(MODELS) - set(FAMILIES))  # a named model registered is a model tested


def tolerance(model, x) -> float:
    """1e-4, or 1e-5 of the output's scale when that is larger: a random-init resnet110 outputs
    thousands, where float32 rounding alone differs by 1e-3 between two equal computations."""
    with torch.no_grad():
        return max(1e-4, 1e-5 * float(model.eval()(x).abs().max()))


def channels_of(name: str) -> int:
    """The input channels of a model as its YAML sets them (3 unless it says otherwise)."""
    return yaml.safe_load((CONF / "model" / f"{name}.yaml").read_text()).get("in_channels", 3)


@pytest.mark.parametrize("granularity", ["filter", "channel"])
@pytest.mark.parametrize("name", EVERY_MODEL)
def test_structured_pruning_compacts_to_the_same_function_and_reloads(name, granularity, tmp_path):
    """Every model of the registry: the compacted model computes what the masked one did (for
    channel pruning, the producers of channels no layer reads any more go too), and its model.pt
    loads back with prunekit.load_pruned into a plain module with the same outputs."""
    size, channels = 8, channels_of(name)
    m = model_of(name, size, channels)
    for mod in m.modules():  # non-trivial BN statistics, so masking BN bias matters
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
    p = pruner_for(m, size, channels, granularity=granularity)
    assert p.groups.groups, "no prunable channel group found"
    params_before = sum(t.numel() for t in m.parameters())
    p.prune_to(0.5)
    x = torch.randn(4, channels, size, size)
    tol = tolerance(m, x)
    diff = p.compact(check_input=x)
    assert diff is not None and diff < tol
    assert p.channels_removed > 0
    assert sum(t.numel() for t in m.parameters()) < params_before
    if granularity == "filter":
        assert len(p.masks) == 0
    m.eval()
    out = m(x)
    assert out.shape == (4, 10)
    cfg = OmegaConf.create({"name": name, "in_channels": channels, "small_input": None})
    save_model(tmp_path / "model.pt", m, cfg, 10, size, compacted=True)
    loaded = prunekit.load_pruned(tmp_path / "model.pt")
    assert not loaded.training
    assert sum(t.numel() for t in loaded.parameters()) == sum(t.numel() for t in m.parameters())
    with torch.no_grad():
        assert torch.allclose(loaded(x), out, atol=1e-5)


def test_filter_target_is_met_in_weights_layerwise_and_global():
    for scope in ("layerwise", "global"):
        m = model_of("resnet18")
        p = pruner_for(m, granularity="filter", scope=scope)
        p.prune_to(0.5)
        achieved = prunable_sparsity(m, p.dense_numel)
        assert achieved == pytest.approx(0.5, abs=0.01), scope
        p.compact()
        assert prunable_sparsity(m, p.dense_numel) == pytest.approx(achieved, abs=1e-9)


def test_masked_filter_zeroes_its_batchnorm_channel():
    m = model_of("resnet18")
    p = pruner_for(m, granularity="filter")
    group = next(g for g in p.groups.groups if g.root == "layer1.0.conv1")
    p.groups.mask_channels(group, torch.tensor([0, 5]), p.masks)
    p.masks.apply()
    bn = m.layer1[0].bn1
    assert bn.weight[0] == 0 and bn.bias[0] == 0 and bn.bias[5] == 0
    assert (m.layer1[0].conv2.weight[:, [0, 5]] == 0).all()  # the next conv's inputs too
    captured = {}
    bn.register_forward_hook(lambda mod, i, o: captured.setdefault("out", o))
    m.eval()
    m(torch.randn(2, 3, 8, 8))
    assert (captured["out"][:, [0, 5]] == 0).all()


def test_residual_stream_groups_couple_every_branch():
    m = model_of("resnet18")
    p = pruner_for(m, granularity="filter")
    stream = next(g for g in p.groups.groups if "layer2.0.downsample.0" in g.member_names())
    names = set(stream.member_names())
    assert {"layer2.0.conv2", "layer2.1.conv2", "layer3.0.conv1"} <= names
    assert stream.block is None  # spans blocks: not a blockwise target
    # a group is found by its root, and says which members hold its outputs, inputs, norms
    assert p.groups.by_root(stream.root) is stream and list(p.groups)[0] is p.groups[0]
    assert "layer2.0.downsample.0" in {m.module for m in stream.outputs()}
    assert "layer3.0.conv1" in {m.module for m in stream.inputs()}
    assert "layer2.0.downsample.1" in {m.module for m in stream.norms()}
    assert not {m.module for m in stream.inputs()} & {m.module for m in stream.outputs()}


def test_blockwise_steps_and_ceil_ratio():
    m = model_of("resnet18")
    p = pruner_for(m, granularity="filter")
    steps = p.order.steps_in_order()
    assert [b for b, _ in steps] == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    block, groups = steps[0]
    assert [g.root for g in groups] == ["layer1.0.conv1"]
    p.prune_groups(groups, 0.3)
    removed = int(p.groups.masked_channels(groups[0], p.masks).sum())
    assert removed == math.ceil(0.3 * 64)
    p.compact()
    assert m.layer1[0].conv1.out_channels == 64 - removed
    assert m.layer1[0].conv2.in_channels == 64 - removed
    # cumulative against the dense count: asking again for the same ratio removes nothing more
    assert p.prune_groups(dict(p.order.steps_in_order())["layer1.0"], 0.3) == 0


def test_the_cifar_resnet_family_takes_any_6n_plus_2_depth_and_the_152_layer_one_prunes():
    """model=resnet152_cifar (the ICE-Pruning reference's network: 25 basic blocks a stage) has
    75 block-wise steps, prunes every block's inner conv and compacts to the masked model's
    outputs; the family builds at any depth 6n+2, and refuses others in one line."""
    from conftest import make_cfg
    from prunekit.config import model_label, validate
    from prunekit.errors import ConfigError

    cfg = make_cfg(["model=resnet152_cifar"])
    validate(cfg)
    assert model_label(cfg.model) == "resnet152_cifar"
    assert model_label(make_cfg(["model=cifar_resnet", "model.depth=152"]).model) == \
        "cifar_resnet:152"
    torch.manual_seed(0)
    m = build_model(cfg.model, 10, 8)
    p = pruner_for(m, granularity="filter")
    steps = p.order.steps_in_order()
    assert len(steps) == 75 and steps[-1][0] == "layer3.24"
    for _, groups in steps:
        p.prune_groups(groups, 0.5)
    x = torch.randn(2, 3, 8, 8)
    assert p.compact(check_input=x) < tolerance(m, x)
    assert [m.layer1[0].conv1.out_channels, m.layer2[24].conv1.out_channels,
            m.layer3[24].conv2.in_channels] == [8, 16, 32]
    for depth, blocks in ((8, 3), (26, 12)):
        shallow = build_model(make_cfg(["model=cifar_resnet", f"model.depth={depth}"]).model,
                              10, 8)
        assert len(list(residual_blocks(shallow))) == blocks
    with pytest.raises(ConfigError, match=r"model.depth=100 is not 6n\+2.*98 or 104"):
        validate(make_cfg(["model=cifar_resnet", "model.depth=100"]))


def test_bottleneck_and_vgg_step_units():
    m = model_of("resnet50")
    p = pruner_for(m, granularity="filter")
    steps = p.order.steps_in_order()
    assert len(steps) == 16 and all(len(g) == 2 for _, g in steps)  # conv1 and conv2 of each
    v = model_of("vgg16")
    pv = pruner_for(v, granularity="filter")
    assert len(pv.order.steps_in_order()) == 12  # 13 convs, the stem's outputs not prunable
    r = model_of("resnet56")
    pr = pruner_for(r, granularity="filter")
    assert len(pr.order.steps_in_order()) == 27


# He et al. 2016, Table 6: parameters of the CIFAR-10 ResNets (option-A shortcuts have none)
CIFAR_RESNET_PARAMS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6}


@pytest.mark.parametrize("depth", sorted(CIFAR_RESNET_PARAMS))
def test_the_cifar_resnet_family_builds_prunes_and_compacts(depth):
    from prunekit.models.classic import CifarBasicBlock

    m = model_of(f"resnet{depth}", 8, 1)
    blocks = [b for b in residual_blocks(m).values() if isinstance(b, CifarBasicBlock)]
    assert len(blocks) == 3 * (depth - 2) // 6  # 3 stages of n blocks, depth 6n + 2
    params = sum(p.numel() for p in m.parameters())
    assert params == pytest.approx(CIFAR_RESNET_PARAMS[depth], rel=0.03)
    x = torch.randn(2, 1, 8, 8)
    unstructured = pruner_for(m, 8, 1, granularity="unstructured")
    unstructured.prune_to(0.5)
    pruned = sum(int((unstructured.weight(n) == 0).sum()) for n in unstructured.layer_names)
    assert pruned / sum(unstructured.dense_numel.values()) == pytest.approx(0.5, abs=1e-3)
    m = model_of(f"resnet{depth}", 8, 1)
    filters = pruner_for(m, 8, 1, granularity="filter")
    filters.prune_to(0.5)
    diff = filters.compact(check_input=x)
    # a deep random network's outputs grow with depth: the tolerance is relative to them
    scale = float(m.eval()(x).detach().abs().max())
    assert diff < 1e-5 * max(scale, 10.0) and filters.channels_removed > 0, (diff, scale)
    assert sum(p.numel() for p in m.parameters()) < params


@pytest.mark.parametrize("granularity", ["channel", "column"])
def test_global_channel_and_column_pruning_never_empty_a_layer(granularity):
    """At a high target one global ranking could take a whole layer; compaction would then
    leave a conv with no width (it crashed on resnet18 at 0.8)."""
    model = model_of("resnet20", size=16)
    pruner = pruner_for(model, size=16, granularity=granularity, scope="global")
    pruner.prune_to(0.95)
    for n in pruner.unit_layers(granularity):
        assert not bool(pruned_units(pruner.masks[f"{n}.weight"], granularity).all()), n
    x = torch.randn(2, 3, 16, 16)
    assert pruner.compact(check_input=x) < 1e-4


def test_a_new_granularity_is_one_class(tmp_path):
    """A granularity registered from outside prunekit (here: whole kh x kw kernels, one per
    (output, input) pair) is accepted by the methods that take every granularity, scored by every
    criterion, pruned layerwise and globally to its target, and run end to end."""
    from conftest import FAST, make_cfg
    from prunekit.config import validate
    from prunekit.runner import run
    from prunekit.sparsity.units import GRANULARITIES, Granularity, pruned_units

    @GRANULARITIES.register
    class Kernel(Granularity):
        name = "kernel"
        removes_channels = False

        @classmethod
        def matrix(cls, w4):
            return w4.reshape(w4.shape[0] * w4.shape[1], -1)

        @classmethod
        def count(cls, o, i, k):
            return o * i

        @classmethod
        def keep_shape(cls, o, i, k):
            return (o, i, 1, 1)

    try:
        for scope in ("layerwise", "global"):
            model = model_of("resnet20")
            pruner = pruner_for(model, granularity="kernel", scope=scope)
            pruner.prune_to(0.5)
            assert prunable_sparsity(model, pruner.dense_numel) == pytest.approx(0.5, abs=0.01)
            w = pruner.weight("layer1.0.conv1")
            mask = pruner.masks.get("layer1.0.conv1.weight")
            gone = pruned_units(mask, "kernel")  # a kernel goes whole or not at all
            assert bool(w.reshape(-1, 9)[gone].eq(0).all()) and 0 < int(gone.sum()) < len(gone)
        cfg = make_cfg(["method=oneshot", "model=resnet20", "method.granularity=kernel",
                        "method.finetune_epochs=1", "dataset.subset=0.25", "pretrain.epochs=1",
                        *FAST])
        validate(cfg)
        s = run(cfg, tmp_path, show=False)
        assert s["status"] == "ok" and s["granularity"] == "kernel"
        assert s["sparsity"] == pytest.approx(0.5, abs=0.01)
    finally:
        GRANULARITIES.pop("kernel")


def test_kept_counts_and_aligned_removal():
    from prunekit.sparsity.groups import aligned_removal, kept_counts

    assert kept_counts(20, 20, 8) == [8, 16, 20]  # multiples, and the dense count untouched
    assert kept_counts(16, 20, 8) == [8, 16]  # once pruned, multiples only
    assert kept_counts(6, 6, 8) == [6]  # no multiple fits: the group keeps what it has
    assert kept_counts(4, 4, 1) == [1, 2, 3, 4]
    assert aligned_removal(9, 20, 20, 0, 8) == 12  # keep 8, not 11
    assert aligned_removal(3, 20, 20, 0, 8) == 4  # keep 16
    assert aligned_removal(1, 20, 20, 0, 8) == 0  # keep 20 (the dense count)
    assert aligned_removal(1, 20, 20, 2, 8) == 4  # the masked ones stay removed
    assert aligned_removal(5, 6, 6, 0, 8) == 0 and aligned_removal(5, 20, 20, 0, 1) == 5


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_a_channel_multiple_is_kept_in_every_pruned_group_and_the_target_still_met(scope):
    """hardware.channel_multiple: each group keeps a multiple of it (or its dense count), chosen
    by the criterion, and the solve still lands near the target on the constrained counts."""
    for multiple in (8, 4):
        model = model_of("resnet20")
        pruner = pruner_for(model, granularity="filter", scope=scope, channel_multiple=multiple)
        dense_sizes = {g.root: g.dense_size for g in pruner.groups.groups}
        pruner.prune_to(0.5)
        assert prunable_sparsity(model, pruner.dense_numel) == pytest.approx(0.5, abs=0.06)
        pruner.compact()
        sizes = {g.root: g.size for g in pruner.groups.groups}
        assert all(n % multiple == 0 or n == dense_sizes[r] for r, n in sizes.items()), sizes
        assert any(n < dense_sizes[r] for r, n in sizes.items())
        pruner.prune_to(0.7)  # a second, cumulative step keeps them multiples too
        pruner.compact()
        assert all(g.size % multiple == 0 or g.size == g.dense_size for g in pruner.groups.groups)
        assert prunable_sparsity(model, pruner.dense_numel) == pytest.approx(0.7, abs=0.06)


def test_block_wise_pruning_keeps_the_channel_multiple():
    model = model_of("resnet20")
    pruner = pruner_for(model, granularity="filter", channel_multiple=8)
    for _, groups in pruner.order.steps_in_order():
        pruner.prune_groups(groups, 0.6)
    pruner.compact()
    sizes = [g.size for g in pruner.order.blockwise_groups()]
    assert all(n % 8 == 0 for n in sizes) and min(sizes) >= 8, sizes
    assert pruner.planner.max_removed() < 1.0


def test_the_channel_multiple_defaults_to_8_on_cuda_and_the_cpu_and_1_elsewhere():
    from prunekit.hardware import channel_multiple

    auto = OmegaConf.create({"channel_multiple": None})
    assert channel_multiple(auto, torch.device("cuda")) == 8
    assert channel_multiple(auto, torch.device("cpu")) == 8
    assert channel_multiple(auto, torch.device("mps")) == 1
    assert channel_multiple(OmegaConf.create({"channel_multiple": 4}), torch.device("cuda")) == 4


def test_purification_and_admm_filter_sets_keep_the_channel_multiple():
    """AutoCompress's filter constraints round to the nearest allowed count; purification removes
    only weak channels, and only as many as leave an allowed count."""
    from prunekit.sparsity.projection import FilterConstraint
    from prunekit.sparsity.purify import aligned_weak

    model = model_of("resnet20")
    pruner = pruner_for(model, granularity="filter")
    g = next(g for g in pruner.groups.groups if g.size == 32)
    weights = {m.module: pruner.weight(m.module) for m in g.members}
    n_dense = sum(weights[m.module].numel() for m in g.outputs())
    assert FilterConstraint.for_rate(g, weights, 0.3, n_dense).n_zero == 10
    assert FilterConstraint.for_rate(g, weights, 0.3, n_dense, 8).n_zero == 8  # keep 24
    weak = torch.zeros(32, dtype=torch.bool)
    weak[:11] = True
    scores = torch.arange(32, 0, -1).double()  # channel 10 is the weakest of the weak
    gone = torch.zeros(32, dtype=torch.bool)
    kept = aligned_weak(g, weak, gone, scores, 8)
    assert int(kept.sum()) == 8 and bool(kept[3:11].all()) and not bool(kept[:3].any())
    assert int(aligned_weak(g, weak, gone, scores, 1).sum()) == 11
    few = torch.zeros(32, dtype=torch.bool)
    few[:5] = True
    assert not bool(aligned_weak(g, few, gone, scores, 8).any())  # 27 is no allowed count
