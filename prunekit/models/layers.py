"""What pruning reads from a model: its prunable layers and its residual blocks (the unit of
ICE's and the blockwise baseline's steps)."""
from __future__ import annotations

from typing import Dict

import torch.nn as nn

# Residual blocks, by family, as (module, class name), so finding them imports no model zoo (and
# `prune-run` starts without torchvision); a subclass counts (SwinTransformerBlockV2). A ViT's
# block is an encoder layer (attention and MLP, each residual), a Swin's its transformer block. A
# network with none of them (VGG, LeNet, DenseNet, GoogLeNet) is pruned one layer per step.
BLOCK_NAMES = {
    ("torchvision.models.resnet", "BasicBlock"), ("torchvision.models.resnet", "Bottleneck"),
    ("torchvision.models.mobilenetv2", "InvertedResidual"),
    ("torchvision.models.mobilenetv3", "InvertedResidual"),
    ("torchvision.models.efficientnet", "MBConv"),
    ("torchvision.models.efficientnet", "FusedMBConv"),
    ("torchvision.models.mnasnet", "_InvertedResidual"),
    ("torchvision.models.regnet", "ResBottleneckBlock"),
    ("torchvision.models.convnext", "CNBlock"),
    ("torchvision.models.vision_transformer", "EncoderBlock"),
    ("torchvision.models.swin_transformer", "SwinTransformerBlock"),
    ("prunekit.models.classic", "CifarBasicBlock"),
    ("timm.models.vision_transformer", "Block"),
}


def is_block(module: nn.Module) -> bool:
    return any((cls.__module__, cls.__name__) in BLOCK_NAMES for cls in type(module).__mro__)


def prunable_layers(model: nn.Module, prune_first_conv: bool = False,
                    prune_classifier: bool = False) -> Dict[str, nn.Module]:
    """Conv2d and Linear layers whose weights are pruning targets, in registration order.

    The first conv (the stem) and the last Linear (the classifier) are excluded by default: they are
    small, and pruning them costs accuracy out of proportion (ShrinkBench, NNCF do the same).
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    first_conv = next((n for n, m in layers if isinstance(m, nn.Conv2d)), None)
    classifier = next((n for n, m in reversed(layers) if isinstance(m, nn.Linear)), None)
    if classifier is None and layers:  # no Linear at all (SqueezeNet): the last conv classifies
        classifier = layers[-1][0]
    excluded = set()
    if not prune_first_conv:
        excluded.add(first_conv)
    if not prune_classifier:
        excluded.add(classifier)
    return {n: m for n, m in layers if n not in excluded}


def residual_blocks(model: nn.Module) -> Dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if is_block(m)}
