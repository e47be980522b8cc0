"""model=timm: any timm model (`model.arch`), the optional extra `pip install "prunekit[timm]"`.
`model.pretrained=true` loads timm's weights through its own hub cache ($HF_HOME); timm builds
the head for the data set's classes (`num_classes`) and the stem for `in_chans`. Small inputs keep
timm's architecture: set dataset.image_size where a model needs more pixels. A plain timm
Attention (ViT, DeiT) becomes a HeadAttention, so its heads can be removed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch.nn as nn

from prunekit.config import ModelConfig, schema
from prunekit.errors import ConfigError, closest, first_line
from prunekit.models.build import MODELS, ModelRequest, fetch_error
from prunekit.sparsity import attention


@schema("model", "timm")
@dataclass
class TimmModelConfig(ModelConfig):
    arch: Optional[str] = None  # the architecture's name: timm.list_models()
    pretrained: bool = False  # timm's pretrained weights
    label_key = "arch"


def timm_module():
    try:
        import timm
    except ImportError:
        raise ConfigError('model=timm needs timm: pip install "prunekit[timm]"') from None
    return timm


@MODELS.register("timm")
def build_timm(r: ModelRequest) -> nn.Module:
    timm = timm_module()
    arch = r.get("arch")
    if arch is None:
        raise ConfigError("model.arch is not set: model=timm needs model.arch=NAME "
                          "(timm.list_models() lists them)")
    known = timm.list_models()
    if arch not in known:
        raise ConfigError(f"model.arch={arch} is not a timm model{closest(arch, known)}: "
                          f"`python -c 'import timm; print(timm.list_models())'` lists all "
                          f"{len(known)}")
    kwargs = dict(num_classes=r.num_classes, in_chans=r.in_channels)
    if arch.startswith(("vit_", "deit_", "beit", "eva")) and not r.get("pretrained", False):
        kwargs["img_size"] = r.image_size  # a ViT's position embedding is sized for its images
    pretrained = bool(r.get("pretrained", False)) and r.pretrained
    try:
        model = timm.create_model(arch, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        if not pretrained:
            raise ConfigError(f"model.arch={arch}: timm cannot build it for {r.image_size} px, "
                              f"{r.num_classes} classes ({first_line(e, 100)})") from None
        raise fetch_error("model.pretrained", "true", e,
                          f"timm fetches {arch}'s weights from the Hugging Face hub into its cache "
                          "($HF_HOME)") from None
    attention.convert(model)  # plain ViT attention: prunable heads, q/k/v as Linears
    return model
