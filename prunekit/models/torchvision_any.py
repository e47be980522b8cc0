"""model=torchvision: any classifier of `torchvision.models.list_models(module=torchvision.models)`
(`model.arch`), randomly initialised or with torchvision's weights (`model.weights`: DEFAULT or a
weights name such as IMAGENET1K_V1), fetched through torchvision's cache under $TORCH_HOME.

With weights for another class count, the head is replaced (see build.replace_head) and the dense
stage fine-tunes the whole network. Small inputs (model.small_input, on for images of 64 px or
less): the stem conv's stride becomes 1 and a max-pool straight after the stem goes, which keeps
pretrained weights valid; transformers keep their patch stems (ViT is built for the image size).
ViT's attention becomes a HeadAttention (same function; prunable heads, q/k/v Linears).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch.nn as nn

from prunekit.config import ModelConfig, schema
from prunekit.errors import ConfigError, closest
from prunekit.models.build import (
    MODELS,
    ModelRequest,
    adapt_input_channels,
    fetch_error,
    first_conv,
    replace_head,
)
from prunekit.sparsity import attention
from prunekit.sparsity.groups import NO_CHANNEL_GROUPS as GROUPS_ATTRIBUTE


@schema("model", "torchvision")
@dataclass
class TorchvisionModelConfig(ModelConfig):
    arch: Optional[str] = None  # the architecture's name: torchvision.models.list_models()
    weights: Optional[str] = None  # null (random), DEFAULT or a weights name
    label_key = "arch"


PATCH_STEMS = ("vit_", "swin_", "maxvit_")  # transformers: the stem is the patch embedding
AUX_HEADS = ("googlenet", "inception_v3")  # built without their auxiliary training heads
# Families whose channel groups are not traced: only the groups prunekit finds without a trace
# are pruned (Swin: its MLP units), and a family with none is refused in one line.
NO_CHANNEL_GROUPS = {
    "shufflenet_v2": "torch-pruning's dependency graph fails on ShuffleNetV2's channel shuffle "
                     "(ZeroDivisionError inside torch-pruning)",
    "swin_": "torch-pruning's grouping of Swin's shifted-window attention exhausts memory",
    "maxvit_": "torch-pruning's grouping of MaxViT's partitioned attention is not supported",
}


LIST_COMMAND = ("python -c 'import torchvision as tv; "
                "print(tv.models.list_models(module=tv.models))'")


def classifiers():
    import torchvision  # here, not at import: `prune-run` starts without it

    return torchvision.models.list_models(module=torchvision.models)


def arch_of(r: ModelRequest, key: str = "model.arch") -> str:
    arch = r.get("arch")
    known = classifiers()
    if arch is None:
        raise ConfigError(f"{key} is not set: model=torchvision needs model.arch=NAME, one of "
                          f"torchvision's classifiers (e.g. resnet18, convnext_tiny, vit_b_16)")
    if arch not in known:
        raise ConfigError(f"{key}={arch} is not a torchvision classifier{closest(arch, known)}: "
                          f"`{LIST_COMMAND}` lists all {len(known)}")
    return arch


def weights_of(arch: str, name: str):
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    if name not in enum.__members__:
        raise ConfigError(f"model.weights={name} is not a weights name of {arch} (known: "
                          f"{', '.join(enum.__members__)}, or null for random initialisation)")
    return enum[name]


def shrink_stem(model: nn.Module) -> None:
    """Stride 1 for the stem conv, no max-pool before the next conv: 32 px images keep a
    resolution the later stages can use, and pretrained stem weights stay valid."""
    stem = first_conv(model)
    if stem is None:
        return
    model.get_submodule(stem).stride = (1, 1)
    seen_stem = False
    for name, m in model.named_modules():
        if name == stem:
            seen_stem = True
        elif seen_stem and isinstance(m, nn.Conv2d):
            return
        elif seen_stem and isinstance(m, nn.MaxPool2d):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())
            return


@MODELS.register("torchvision")
def build_torchvision(r: ModelRequest) -> nn.Module:
    import torchvision

    arch = arch_of(r)
    kwargs = {}
    weights = None
    name = r.get("weights")
    if name is not None and r.pretrained:
        weights = weights_of(arch, str(name))
    if arch in AUX_HEADS:
        kwargs["aux_logits"] = False  # the Trainer takes one output
        # torchvision turns on an ImageNet input re-normalisation with weights; prunekit's data
        # are normalised already, and a rebuilt model.pt (no weights) must compute the same
        kwargs["transform_input"] = False
        if weights is None:
            kwargs["init_weights"] = True
    if arch.startswith("vit_"):
        if weights is not None and r.image_size != weights.meta["min_size"][0]:
            raise ConfigError(f"model.weights={name}: {arch}'s weights are for "
                              f"{weights.meta['min_size'][0]} px images; set dataset.image_size="
                              f"{weights.meta['min_size'][0]}")
        if weights is None:
            kwargs["image_size"] = r.image_size
    if weights is None:
        model = torchvision.models.get_model(arch, weights=None, num_classes=r.num_classes,
                                             **kwargs)
    else:
        try:
            model = torchvision.models.get_model(arch, weights=weights, **kwargs)
        except Exception as e:  # offline, not in the cache, a broken download
            import torch.hub
            file = weights.url.rsplit("/", 1)[-1]
            raise fetch_error("model.weights", str(name), e,
                              f"torchvision wanted {weights.url}: put {file} in "
                              f"{torch.hub.get_dir()}/checkpoints/") from None
        replace_head(model, r.num_classes)
    if r.small_input and not arch.startswith(PATCH_STEMS):
        shrink_stem(model)
    adapt_input_channels(model, r.in_channels)
    if arch.startswith("vit_"):
        attention.convert(model)  # heads that can be removed; q, k, v as Linears
    refused = next((why for family, why in NO_CHANNEL_GROUPS.items()
                    if arch.startswith(family)), None)
    if refused:
        setattr(model, GROUPS_ATTRIBUTE, f"model.arch={arch}: {refused}")
    return model
