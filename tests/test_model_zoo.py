"""The network you have: every torchvision classifier (the peer suite, as Torch-Pruning tests
itself), timm models, your own nn.Module, and torchvision's pretrained weights."""
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision
from omegaconf import OmegaConf

import prunekit
from conftest import FAST, make_cfg, run_cli
from prunekit.artifacts import save_model
from prunekit.config import METHODS
from prunekit.errors import ConfigError
from prunekit.models import build_model, prunable_layers, residual_blocks
from prunekit.models.torchvision_any import classifiers
from prunekit.runner import run
from prunekit.sparsity import Pruner, PruneSpec

SIZE = 32
SIZES = {"inception_v3": 96, "vit_h_14": 28, "maxvit_t": 224}  # more than 32 px; patches of 14
# Refused in one line: (pattern, what the line says)
REFUSED = [("shufflenet_v2", "ShuffleNetV2's channel shuffle")]


def family(arch: str) -> str:
    """resnet18 -> resnet, mobilenet_v3_small -> mobilenet_v3, efficientnet_v2_s ->
    efficientnet_v2, regnet_x_400mf -> regnet."""
    return re.match(r"[a-z]+(?:_v\d)?", arch).group(0)


def param_count(arch: str) -> int:
    """Parameters of `arch` by torchvision's weights metadata (no model is built)."""
    return min(w.meta["num_params"] for w in torchvision.models.get_model_weights(arch))


def smallest_of_each_family():
    smallest = {}
    for arch in classifiers():
        f = family(arch)
        if f not in smallest or param_count(arch) < param_count(smallest[f]):
            smallest[f] = arch
    return set(smallest.values())


CI = smallest_of_each_family()  # one of every family runs in CI; the rest with `make test-slow`
ZOO = [pytest.param(a, marks=() if a in CI else pytest.mark.slow) for a in classifiers()]


def torchvision_cfg(arch: str, **kw):
    return OmegaConf.create({"name": "torchvision", "arch": arch, "in_channels": 3,
                             "small_input": None, "weights": None, **kw})


def randomise(model: nn.Module) -> None:
    """Non-trivial BN statistics (a masked filter's BN constant must then matter) and a head
    that is not all zeros (torchvision's ViT starts from one)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
        elif isinstance(m, nn.Linear) and not m.weight.any():
            nn.init.normal_(m.weight, std=0.02)


@pytest.mark.parametrize("arch", ZOO)
def test_every_torchvision_classifier_prunes_filters_compacts_and_reloads(arch, tmp_path):
    size = SIZES.get(arch, SIZE)
    refusal = next((says for pattern, says in REFUSED if arch.startswith(pattern)), None)
    torch.manual_seed(0)
    cfg = torchvision_cfg(arch)
    try:
        model = build_model(cfg, 10, size)
        randomise(model)
        model.eval()
        x = torch.randn(2, 3, size, size)
        pruner = Pruner(model, PruneSpec(granularity="filter"), prunable_layers(model), x[:1],
                        seed=0, blocks=list(residual_blocks(model)))
    except ConfigError as e:
        assert refusal is not None, f"{arch} refused: {e}"
        assert refusal in str(e) and "\n" not in str(e)
        return
    assert refusal is None, f"{arch} should have been refused"
    params = sum(p.numel() for p in model.parameters())
    pruner.prune_to(0.5)
    with torch.no_grad():
        masked = model(x)
    diff = pruner.compact(check_input=x)
    assert diff is not None and diff <= 1e-4 * max(1.0, float(masked.abs().max()))
    assert sum(p.numel() for p in model.parameters()) < params
    save_model(tmp_path / "model.pt", model, cfg, 10, size, compacted=True)
    loaded = prunekit.load_pruned(tmp_path / "model.pt")
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------- through prune-run
TINY = ["dataset=fake", "dataset.num_samples=64", "dataset.batch_size=16", "pretrain.epochs=1",
        "hardware.latency.enabled=false", "checkpoint.enabled=false", *FAST]
ONESHOT = ["method=oneshot", "method.granularity=filter", "method.finetune_epochs=1"]
RUNS = [pytest.param(a, marks=() if a in {"densenet121", "efficientnet_b0", "convnext_tiny",
                                           "vit_b_16", "mobilenet_v3_small", "googlenet"}
                     else pytest.mark.slow) for a in classifiers()]


@pytest.mark.parametrize("arch", RUNS)
def test_prune_run_oneshot_filter_on_every_classifier(arch, tmp_path):
    overrides = ["model=torchvision", f"model.arch={arch}", *ONESHOT, *TINY]
    if arch in SIZES:
        overrides.append(f"dataset.image_size={SIZES[arch]}")
    refusal = next((says for pattern, says in REFUSED if arch.startswith(pattern)), None)
    if refusal:
        with pytest.raises(ConfigError, match=re.escape(refusal)):
            run(make_cfg(overrides), tmp_path, show=False)
        return
    s = run(make_cfg(overrides), tmp_path, show=False)
    assert s["status"] == "ok" and s["compacted"] and s["params"] < s["params_dense"]
    assert s["compaction_max_abs_diff"] is not None
    assert s["model"] == f"torchvision:{arch}"  # what reports group by


@pytest.mark.parametrize("granularity", ["unstructured", "nm"])
def test_a_family_refused_for_filters_takes_unstructured_and_nm_pruning(granularity, tmp_path):
    s = run(make_cfg(["model=torchvision", "model.arch=shufflenet_v2_x0_5", "method=oneshot",
                      f"method.granularity={granularity}", "method.finetune_epochs=1", *TINY]),
            tmp_path, show=False)
    # N:M groups run along input channels: its depthwise convs (one input channel) stay dense
    tolerance = 0.02 if granularity == "nm" else 0.01
    assert s["status"] == "ok" and s["sparsity"] == pytest.approx(0.5, abs=tolerance)


# Every method on every family: one network per family a method was not written for (CI runs the
# first two), and what it answers where it cannot run.
FAMILY_MODELS = [
    pytest.param(["model=torchvision", "model.arch=efficientnet_b0"], id="efficientnet_b0"),
    pytest.param(["model=timm", "model.arch=vit_tiny_patch16_224"], id="timm_vit_tiny"),
    *[pytest.param(["model=torchvision", f"model.arch={a}"], id=a, marks=pytest.mark.slow)
      for a in ("vit_b_16", "swin_t", "convnext_tiny", "densenet121", "googlenet",
                "mobilenet_v3_small", "regnet_x_400mf", "mnasnet0_5")]]
NO_SCALES = ("vit", "swin")  # no BatchNorm (or channel LayerNorm) scale: slimming cannot run
CANNOT = {"slimming": (NO_SCALES, "needs BatchNorm layers (or channel LayerNorms)")}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("model", FAMILY_MODELS)
def test_every_method_runs_on_every_family_or_says_why_in_one_line(model, method, tmp_path):
    """ICE's blocks are the family's residual blocks (MBConv, a ViT's encoder layers); the
    projection methods and the schedules take any network."""
    if model[0] == "model=timm":
        pytest.importorskip("timm")
    cfg = make_cfg([*model, f"method={method}", *METHODS[method].quick, *TINY])
    families, says = CANNOT.get(method, ((), ""))
    if any(f in model[1] for f in families):
        with pytest.raises(ConfigError, match=re.escape(says)) as e:
            run(cfg, tmp_path, show=False)
        assert "\n" not in str(e.value)
        return
    s = run(cfg, tmp_path, show=False)
    assert s["status"] == "ok"
    if METHODS[method].prunes:
        assert s["sparsity"] > 0.2 and s["params_nonzero"] < s["params_dense"]


# ------------------------------------------------------------------------- transformers
def vit(source: str):
    if source == "timm":
        pytest.importorskip("timm")
        return OmegaConf.create({"name": "timm", "arch": "vit_tiny_patch16_224",
                                 "pretrained": False, "in_channels": 3}), 3
    return torchvision_cfg("vit_b_16"), 12


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_vit_heads_are_removed_with_num_heads_kept_consistent(source, tmp_path):
    """Filter pruning of a ViT removes whole attention heads (q, k, v rows and proj columns) and
    MLP units; the masked model is the compacted one; load_pruned rebuilds the heads."""
    from prunekit.sparsity.attention import HeadAttention
    cfg, dense_heads = vit(source)
    torch.manual_seed(0)
    model = build_model(cfg, 10, SIZE).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    pruner = Pruner(model, PruneSpec(granularity="filter"), prunable_layers(model), x[:1],
                    seed=0, blocks=list(residual_blocks(model)))
    assert sum(1 for g in pruner.groups.groups if g.heads) == 12  # one per encoder layer
    pruner.prune_to(0.5)
    with torch.no_grad():
        masked = model(x)
    assert pruner.compact(check_input=x) <= 1e-4 * max(1.0, float(masked.abs().max()))
    attentions = [m for m in model.modules() if isinstance(m, HeadAttention)]
    assert all(a.num_heads == dense_heads - math.ceil(dense_heads / 2) for a in attentions)
    assert all(a.q.out_features == a.num_heads * a.head_dim == a.proj.in_features
               for a in attentions)
    save_model(tmp_path / "model.pt", model, cfg, 10, SIZE, compacted=True)
    loaded = prunekit.load_pruned(tmp_path / "model.pt").eval()
    assert [a.num_heads for a in loaded.modules() if isinstance(a, HeadAttention)] == \
        [a.num_heads for a in attentions]
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), rtol=1e-4, atol=1e-5)


def test_prune_run_removes_vit_b_16_heads(tmp_path):
    from prunekit.sparsity.attention import HeadAttention
    s = run(make_cfg(["model=torchvision", "model.arch=vit_b_16", *ONESHOT, *TINY]), tmp_path,
            show=False)
    assert s["status"] == "ok" and s["compacted"]
    heads = [a.num_heads for a in prunekit.load_pruned(tmp_path / "model.pt").modules()
             if isinstance(a, HeadAttention)]
    assert len(heads) == 12 and max(heads) < 12


@pytest.mark.parametrize("arch", ["regnet_y_400mf", pytest.param("resnext50_32x4d",
                                                                  marks=pytest.mark.slow)])
def test_grouped_convs_lose_whole_conv_groups(arch, tmp_path):
    """A grouped conv's channels go a conv group at a time, with the channels feeding it and
    those it writes (RegNetY's squeeze-excitation included); load_pruned rebuilds the groups."""
    torch.manual_seed(0)
    cfg = torchvision_cfg(arch)
    model = build_model(cfg, 10, SIZE).eval()
    randomise(model)
    x = torch.randn(2, 3, SIZE, SIZE)
    dense = {n: m.groups for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels}
    pruner = Pruner(model, PruneSpec(granularity="filter"), prunable_layers(model), x[:1],
                    seed=0, blocks=list(residual_blocks(model)))
    pruner.prune_to(0.5)
    with torch.no_grad():
        masked = model(x)
    assert pruner.compact(check_input=x) <= 1e-4 * max(1.0, float(masked.abs().max()))
    after = {n: model.get_submodule(n) for n in dense}
    assert all(m.groups < dense[n] for n, m in after.items()), "a grouped conv kept every group"
    assert all(m.in_channels == m.groups * m.weight.shape[1] for m in after.values())
    save_model(tmp_path / "model.pt", model, cfg, 10, SIZE, compacted=True)
    loaded = prunekit.load_pruned(tmp_path / "model.pt").eval()
    assert {n: loaded.get_submodule(n).groups for n in dense} == \
        {n: m.groups for n, m in after.items()}
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["swin_t", pytest.param("swin_v2_t", marks=pytest.mark.slow)])
def test_swin_untraced_loses_mlp_units_and_keeps_its_heads(arch):
    """torch-pruning cannot group Swin: prunekit finds its MLPs itself and compacts them; its
    attention (whose head width torchvision derives from the input width) is kept whole."""
    torch.manual_seed(0)
    model = build_model(torchvision_cfg(arch), 10, SIZE).eval()
    randomise(model)
    x = torch.randn(2, 3, SIZE, SIZE)
    pruner = Pruner(model, PruneSpec(granularity="filter"), prunable_layers(model), x[:1],
                    seed=0, blocks=list(residual_blocks(model)))
    assert pruner.groups.dg is None and all(g.block for g in pruner.groups.groups)
    qkv = {n: m.weight.shape for n, m in model.named_modules() if n.endswith("attn.qkv")}
    pruner.prune_to(0.5)
    with torch.no_grad():
        masked = model(x)
    assert pruner.compact(check_input=x) <= 1e-4 * max(1.0, float(masked.abs().max()))
    blocks = [m for n, m in model.named_modules() if n.endswith(".mlp") and hasattr(m, "0")]
    assert blocks and all(b[0].out_features < 4 * b[0].in_features for b in blocks)
    assert qkv == {n: m.weight.shape for n, m in model.named_modules() if n.endswith("attn.qkv")}


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_head_attention_computes_what_the_fused_attention_did_and_takes_its_weights(source):
    """The conversion changes no output; a state dict of the unconverted model (torchvision's
    in_proj_weight, timm's qkv) loads as model.checkpoint."""
    from prunekit.models import load_weights
    from prunekit.sparsity.attention import convert
    cfg, _ = vit(source)
    torch.manual_seed(0)
    converted = build_model(cfg, 10, SIZE).eval()
    if source == "timm":
        import timm
        plain = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=SIZE).eval()
    else:
        import torchvision
        plain = torchvision.models.vit_b_16(num_classes=10, image_size=SIZE).eval()
    randomise(plain)
    fused = {k: v.clone() for k, v in plain.state_dict().items()}
    assert any("in_proj_weight" in k or "qkv.weight" in k for k in fused)
    load_weights(converted, fused, "user.pt", "vit")
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(converted(x), plain(x), atol=1e-5)
        assert convert(plain) == 12
        assert torch.allclose(plain(x), converted(x), atol=1e-5)


@pytest.mark.parametrize("granularity", ["unstructured", "nm"])
def test_every_linear_of_a_vit_is_pruned_unstructured_and_nm(granularity):
    """q, k and v are Linears after the conversion: no weight of the attention escapes."""
    torch.manual_seed(0)
    model = build_model(torchvision_cfg("vit_b_16"), 10, SIZE)
    layers = prunable_layers(model)
    attention = [n for n in layers if ".self_attention." in n]
    assert len(attention) == 4 * 12
    pruner = Pruner(model, PruneSpec(granularity=granularity), layers,
                    torch.zeros(1, 3, SIZE, SIZE), seed=0)
    pruner.prune_to(0.5)
    for name in attention:
        w = model.get_submodule(name).weight
        assert (w == 0).float().mean().item() == pytest.approx(0.5, abs=0.02), name
        if granularity == "nm":
            assert ((w.reshape(-1, 4) != 0).sum(1) <= 2).all(), name


# ------------------------------------------------------------------------- pretrained weights
def test_pretrained_weights_come_from_torchvisions_cache_and_the_head_is_replaced(
        tmp_path, monkeypatch):
    """The file torchvision would download, put in its cache: loaded as is, but a head for
    ten classes instead of a thousand."""
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    torch.manual_seed(1)
    file_state = torchvision.models.resnet18(weights=None).state_dict()  # 1000 classes
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(file_state, cache / weights.url.rsplit("/", 1)[-1])
    model = build_model(torchvision_cfg("resnet18", weights="DEFAULT", small_input=False), 10, 64)
    assert model.fc.out_features == 10
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in file_state.items() if not k.startswith("fc."))
    # small inputs keep the pretrained stem, at stride 1, without the max-pool
    small = build_model(torchvision_cfg("resnet18", weights="DEFAULT"), 10, 32)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, nn.Identity)
    assert torch.equal(small.conv1.weight, file_state["conv1.weight"])


def test_pretrained_weights_offline_are_one_line_naming_the_file(tmp_path):
    env = {"TORCH_HOME": str(tmp_path / "torch"), "https_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9"}  # no network, whatever the machine has
    r = run_cli(["model=torchvision", "model.arch=resnet18", "model.weights=DEFAULT",
                 "dataset=fake", "dataset.num_samples=20", *FAST], tmp_path, env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("prune-run: error: model.weights=DEFAULT")
    assert "resnet18-f37072fd.pth" in line and "checkpoints" in line


@pytest.mark.parametrize("overrides, says", [
    (["model=torchvision"], "model.arch is not set"),
    (["model=torchvision", "model.arch=resnet181"], "(closest: resnet18, "),
    (["model=torchvision", "model.arch=resnet18", "model.weights=IMAGENET9K"],
     "not a weights name of resnet18"),
    (["model=torchvision", "model.arch=maxvit_t"], "cannot take 3x32x32 images"),
    (["model=custom"], "model.target is not set"),
    (["model=custom", "model.target=no_such_module:build"], "cannot import no_such_module"),
])
def test_model_mistakes_are_one_line(overrides, says, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(says)) as e:
        run(make_cfg([*overrides, *TINY]), tmp_path, show=False)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------- your own module
class TinyNet(nn.Module):
    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def tiny_net(num_classes: int, width: int = 8) -> nn.Module:
    return TinyNet(num_classes, width)


def test_a_custom_module_defined_here_runs_end_to_end_and_reloads(tmp_path):
    s = run(make_cfg(["model=custom", "model.target=test_model_zoo:tiny_net",
                      "+model.kwargs.width=16", *ONESHOT, *TINY]), tmp_path, show=False)
    assert s["status"] == "ok" and s["compacted"] and s["params"] < s["params_dense"]
    assert s["model"] == "custom:test_model_zoo:tiny_net"
    with pytest.raises(ConfigError, match="a file cannot choose code"):
        prunekit.load_pruned(tmp_path / "model.pt")  # the file alone names the factory
    for loaded in (prunekit.load_pruned(tmp_path / "model.pt", model=tiny_net),
                   prunekit.load_pruned(tmp_path / "model.pt", trust_code=True)):
        assert isinstance(loaded, TinyNet) and loaded.features[3].out_channels < 32  # 2 x 16


# ------------------------------------------------------------------------- timm
def test_a_timm_model_prunes_and_compacts(tmp_path):
    pytest.importorskip("timm")
    s = run(make_cfg(["model=timm", "model.arch=resnet10t", *ONESHOT, *TINY]), tmp_path,
            show=False)
    assert s["status"] == "ok" and s["compacted"] and s["params"] < s["params_dense"]
    assert prunekit.load_pruned(tmp_path / "model.pt")(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_timm_pretrained_offline_is_one_line(tmp_path):
    pytest.importorskip("timm")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    r = run_cli(["model=timm", "model.arch=resnet10t", "model.pretrained=true", "dataset=fake",
                 "dataset.num_samples=20", *FAST], Path(tmp_path), env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(
        "prune-run: error: model.pretrained=true: the weights could not be fetched")


# ------------------------------------------------------------------------- LayerNorm channels
def test_convnext_loses_conv_channels_and_its_masked_model_is_the_compacted_one():
    """ConvNeXt's conv channels are on the residual stream, which LayerNorm couples: a masked
    channel must leave the LayerNorm statistics as the compacted model's, or the two differ."""
    torch.manual_seed(0)
    model = build_model(torchvision_cfg("convnext_tiny"), 10, SIZE).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    pruner = Pruner(model, PruneSpec(granularity="filter"), prunable_layers(model), x[:1],
                    seed=0, blocks=list(residual_blocks(model)))
    pruner.prune_to(0.5)
    with torch.no_grad():
        masked = model(x)
    assert pruner.compact(check_input=x) < 1e-4 * max(1.0, float(masked.abs().max()))
    widths = [model.features[i][0].block[0].out_channels for i in (3, 5, 7)]  # depthwise convs
    assert all(w < dense for w, dense in zip(widths, (192, 384, 768))), widths


@pytest.mark.parametrize("channels_first", [False, True])
def test_a_channel_masked_layernorm_normalises_over_the_kept_channels(channels_first):
    from torchvision.models.convnext import LayerNorm2d

    from prunekit.sparsity.layernorm import channel_masked, set_kept
    norm = (LayerNorm2d if channels_first else nn.LayerNorm)(6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 6, 3, 3) if channels_first else torch.randn(4, 6)
    plain = norm(x)
    channel_masked(norm)
    assert torch.equal(norm(x), plain)  # nothing masked: a plain LayerNorm
    keep = torch.tensor([0, 2, 3, 5])
    mask = torch.zeros(6, dtype=torch.bool)
    mask[keep] = True
    with torch.no_grad():
        norm.weight.mul_(mask)
        norm.bias.mul_(mask)
    set_kept(norm, mask)
    small = (LayerNorm2d if channels_first else nn.LayerNorm)(4)
    small.load_state_dict({"weight": norm.weight[keep], "bias": norm.bias[keep]})
    dim = 1 if channels_first else -1
    out = norm(x)
    assert torch.allclose(out.index_select(dim, keep), small(x.index_select(dim, keep)),
                          atol=1e-6)
    assert not out.index_select(dim, torch.tensor([1, 4])).any()
