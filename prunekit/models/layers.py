"""What pruning reads from a model: its prunable layers and its residual blocks (the unit of
ICE's and the blockwise baseline's steps)."""
from __future__ import annotations

from typing import Dict

import torch.nn as nn
from torchvision.models.convnext import CNBlock
from torchvision.models.efficientnet import FusedMBConv, MBConv
from torchvision.models.mnasnet import _InvertedResidual as MnasInvertedResidual
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.mobilenetv3 import InvertedResidual as InvertedResidualV3
from torchvision.models.regnet import ResBottleneckBlock
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.swin_transformer import SwinTransformerBlock
from torchvision.models.vision_transformer import EncoderBlock

from prunekit.models.classic import CifarBasicBlock

# Residual blocks, by family; a ViT's is an encoder layer (attention and MLP, each residual), a
# Swin's its transformer block (SwinTransformerBlockV2 is a subclass). A
# network with none of them (VGG, LeNet, DenseNet, GoogLeNet) is pruned one layer per step.
BLOCK_TYPES = (BasicBlock, Bottleneck, InvertedResidual, CifarBasicBlock, InvertedResidualV3,
               MBConv, FusedMBConv, MnasInvertedResidual, ResBottleneckBlock, CNBlock,
               EncoderBlock, SwinTransformerBlock)
# The same in optional packages, by (module, class name): timm's ViT block.
BLOCK_NAMES = {("timm.models.vision_transformer", "Block")}


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
    return {n: m for n, m in model.named_modules() if isinstance(m, BLOCK_TYPES)
            or (type(m).__module__, type(m).__name__) in BLOCK_NAMES}
