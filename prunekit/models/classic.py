"""The built-in models: torchvision ResNets, VGG-16 and MobileNetV2 with small-input stems, the
CIFAR ResNets of He et al. (resnet20 ... resnet110, and `model=cifar_resnet model.depth=6n+2` at
any depth, e.g. `model=resnet152_cifar`, the ICE-Pruning reference's 75-block network), LeNet-5.
Randomly initialised; weights come from dense training."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.config import ModelConfig, schema
from prunekit.errors import ConfigError, at_least
from prunekit.models.build import MODELS, ModelRequest, classic, kaiming_conv


def _torchvision_resnet(name: str) -> Callable:
    def build(num_classes: int, in_channels: int, image_size: int, small_input: bool) -> nn.Module:
        import torchvision  # here, not at import: `prune-run` starts without it

        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if small_input:  # 3x3 stride-1 stem, no max-pool: keeps 32 px (or 8 px) images resolvable
            model.conv1 = kaiming_conv(in_channels, 64, 3, 1, 1)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = kaiming_conv(in_channels, 64, 7, 2, 3)
        return model

    return build


@classic("vgg16")
def build_vgg16(num_classes: int, in_channels: int, image_size: int,
                small_input: bool) -> nn.Module:
    import torchvision

    model = torchvision.models.vgg16_bn(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.features[0] = kaiming_conv(in_channels, 64, 3, 1, 1)
        model.features[0].bias = nn.Parameter(torch.zeros(64))
    if small_input:
        # Keep only the max-pools the image can afford (32 px: all 5 -> 1x1; 8 px: 3), then the
        # usual CIFAR head: global pooling and one 512 -> classes layer (no 4096-wide MLP).
        pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
        affordable = max(0, int(math.log2(image_size)))
        for i in reversed(pools[affordable:]):
            del model.features[i]
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Linear(512, num_classes)
        nn.init.normal_(model.classifier.weight, 0, 0.01)
        nn.init.zeros_(model.classifier.bias)
    return model


@classic("mobilenet_v2")
def build_mobilenet_v2(num_classes: int, in_channels: int, image_size: int,
                       small_input: bool) -> nn.Module:
    import torchvision

    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    stem = model.features[0][0]
    if in_channels != 3 or small_input:
        model.features[0][0] = kaiming_conv(in_channels, stem.out_channels, 3,
                                             1 if small_input else 2, 1)
    return model


class PadShortcut(nn.Module):
    """He et al.'s option-A shortcut: subsample by 2 and zero-pad the new channels (no weights)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.extra // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra - half))


class CifarBasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = kaiming_conv(in_planes, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = kaiming_conv(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut = PadShortcut(planes - in_planes) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. 2016 (depth 6n+2; 16/32/64 channels; option-A shortcuts)."""

    def __init__(self, depth: int = 56, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = kaiming_conv(in_channels, 16, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(CifarBasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)  # n = 3, 5, 7, 9, 18 blocks per stage


@schema("model", "cifar_resnet")
@dataclass
class CifarResNetConfig(ModelConfig):
    """The CIFAR ResNet family at any depth 6n+2 (n BasicBlocks a stage, 3 stages)."""

    depth: int = 56
    label_key = "depth"

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        at_least(cfg, "model.depth", 8)
        depth = cfg.model.depth
        if (depth - 2) % 6:
            lower = depth - (depth - 2) % 6
            raise ConfigError(f"model.depth={depth} is not 6n+2 (n basic blocks a stage): "
                              f"e.g. {lower} or {lower + 6}")


@MODELS.register("cifar_resnet")
def build_cifar_resnet(r: ModelRequest) -> nn.Module:
    return CifarResNet(int(r.get("depth", 56)), r.num_classes, r.in_channels)


def _cifar_resnet(depth: int) -> Callable:
    def build(num_classes: int, in_channels: int, image_size: int,
              small_input: bool) -> nn.Module:
        return CifarResNet(depth, num_classes, in_channels)

    return build


class LeNet5(nn.Module):
    """LeNet-5 (ReLU, max-pool). Its second conv pads when the image is too small for 5x5."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        half = image_size // 2
        pad2 = 0 if half - 4 >= 2 else 2
        side = (half + 2 * pad2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=pad2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@classic("lenet5")
def build_lenet5(num_classes: int, in_channels: int, image_size: int,
                 small_input: bool) -> nn.Module:
    return LeNet5(num_classes, in_channels, image_size)


for _name in ("resnet18", "resnet50"):
    classic(_name)(_torchvision_resnet(_name))
for _depth in CIFAR_RESNET_DEPTHS:
    classic(f"resnet{_depth}")(_cifar_resnet(_depth))
# the ICE-Pruning reference's CIFAR network, named apart from torchvision's ImageNet ResNet-152
classic("resnet152_cifar")(_cifar_resnet(152))

