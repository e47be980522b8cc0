"""Model registry: torchvision builders with small-input stems, the CIFAR ResNets, LeNet-5.

Every builder, registered with `@MODELS.register("name")`, takes (num_classes, in_channels,
image_size, small_input) and returns a freshly initialised nn.Module. Weights come from training
(the dense cache) or `model.checkpoint`; nothing is downloaded.
"""
from __future__ import annotations

import math
import pickle
import warnings
from typing import Callable, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock, Bottleneck

from prunekit.config import STATE_DICT_FIX, check_torch_file
from prunekit.errors import ConfigError
from prunekit.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def _kaiming_conv(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _torchvision_resnet(builder: Callable) -> Callable:
    def build(num_classes: int, in_channels: int, image_size: int, small_input: bool) -> nn.Module:
        model = builder(weights=None, num_classes=num_classes)
        if small_input:  # 3x3 stride-1 stem, no max-pool: keeps 32 px (or 8 px) images resolvable
            model.conv1 = _kaiming_conv(in_channels, 64, 3, 1, 1)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = _kaiming_conv(in_channels, 64, 7, 2, 3)
        return model

    return build


@MODELS.register("vgg16")
def build_vgg16(num_classes: int, in_channels: int, image_size: int,
                small_input: bool) -> nn.Module:
    model = torchvision.models.vgg16_bn(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.features[0] = _kaiming_conv(in_channels, 64, 3, 1, 1)
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


@MODELS.register("mobilenet_v2")
def build_mobilenet_v2(num_classes: int, in_channels: int, image_size: int,
                       small_input: bool) -> nn.Module:
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    stem = model.features[0][0]
    if in_channels != 3 or small_input:
        model.features[0][0] = _kaiming_conv(in_channels, stem.out_channels, 3,
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
        self.conv1 = _kaiming_conv(in_planes, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _kaiming_conv(planes, planes, 3, 1, 1)
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
        self.conv1 = _kaiming_conv(in_channels, 16, 3, 1, 1)
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


@MODELS.register("lenet5")
def build_lenet5(num_classes: int, in_channels: int, image_size: int,
                 small_input: bool) -> nn.Module:
    return LeNet5(num_classes, in_channels, image_size)


for _name in ("resnet18", "resnet50"):
    MODELS.register(_name)(_torchvision_resnet(getattr(torchvision.models, _name)))
for _depth in CIFAR_RESNET_DEPTHS:
    MODELS.register(f"resnet{_depth}")(_cifar_resnet(_depth))

# Residual blocks: the unit of ICE's and the blockwise baseline's pruning steps.
BLOCK_TYPES = (BasicBlock, Bottleneck, InvertedResidual, CifarBasicBlock)


def build_model(model_cfg, num_classes: int, image_size: int) -> nn.Module:
    build = MODELS.choose(model_cfg.name, "model.name")
    small = model_cfg.small_input if model_cfg.small_input is not None else image_size <= 64
    return build(num_classes=num_classes, in_channels=model_cfg.in_channels,
                        image_size=image_size, small_input=small)


def prunable_layers(model: nn.Module, prune_first_conv: bool = False,
                    prune_classifier: bool = False) -> Dict[str, nn.Module]:
    """Conv2d and Linear layers whose weights are pruning targets, in registration order.

    The first conv (the stem) and the last Linear (the classifier) are excluded by default: they are
    small, and pruning them costs accuracy out of proportion (ShrinkBench, NNCF do the same).
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    first_conv = next((n for n, m in layers if isinstance(m, nn.Conv2d)), None)
    classifier = next((n for n, m in reversed(layers) if isinstance(m, nn.Linear)), None)
    excluded = set()
    if not prune_first_conv:
        excluded.add(first_conv)
    if not prune_classifier:
        excluded.add(classifier)
    return {n: m for n, m in layers if n not in excluded}


def residual_blocks(model: nn.Module) -> Dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BLOCK_TYPES)}


def read_state_dict(path: str, key: str = "model.checkpoint") -> Dict[str, torch.Tensor]:
    """Load a state dict with weights_only=True: a bare one or prunekit's {'state_dict': ...}."""
    check_torch_file(path, f"{key}={path}")  # validate() did this for runs; callers may not
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # e.g. a whole pickled nn.Module
            raise ConfigError(f"{key}={path} holds pickled Python objects, which loading with "
                              f"weights_only=True refuses: {STATE_DICT_FIX}") from None
        raise ConfigError(f"{key}={path} is not a PyTorch file: {STATE_DICT_FIX}") from None
    except Exception as e:  # truncated zip, wrong magic number, not a file torch.load knows
        reason = str(e).strip().splitlines()[0][:80] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{key}={path} cannot be loaded ({reason}): {STATE_DICT_FIX}") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ConfigError(f"{key}={path} is not a state dict (a dict of parameter names to "
                          f"tensors): {STATE_DICT_FIX}")
    return state


def load_weights(model: nn.Module, state: Dict[str, torch.Tensor], path: str,
                 model_name: str) -> None:
    """Load the user's weights (`read_state_dict(path)`) into `model`, or fail with one line
    that says what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. '{missing[0]}')")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. '{unexpected[0]}')")
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} shape mismatches (e.g. '{k}': file "
                         f"{tuple(state[k].shape)}, model {tuple(own[k].shape)})")
        raise ConfigError(f"model.checkpoint={path} does not fit model={model_name}: "
                          f"{', '.join(parts)}; check model=, dataset= (classes, channels) and "
                          "dataset.image_size")
    model.load_state_dict(state)


def resize_to_state(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Give every layer of `model` the shapes its entries in `state` have (a compacted model's
    state dict), so `model.load_state_dict(state)` fits."""
    for name, module in model.named_modules():
        _resize_layer(module, state, f"{name}." if name else "")


def _resize_layer(module: nn.Module, state: dict, prefix: str) -> None:
    """Give one layer the shapes its entries in `state` have."""
    w = state.get(f"{prefix}weight")
    if isinstance(module, nn.Conv2d) and w is not None and w.shape != module.weight.shape:
        depthwise = module.groups > 1 and module.groups == module.in_channels
        if module.groups > 1 and not depthwise:
            raise ConfigError(f"{prefix}weight: a grouped conv of another width cannot be rebuilt")
        module.out_channels = w.shape[0]
        module.in_channels = w.shape[0] if depthwise else w.shape[1]
        if depthwise:
            module.groups = w.shape[0]
    elif isinstance(module, nn.Linear) and w is not None and w.shape != module.weight.shape:
        module.out_features, module.in_features = w.shape
    elif isinstance(module, nn.modules.batchnorm._BatchNorm) and w is not None \
            and w.shape != module.weight.shape:
        module.num_features = w.shape[0]
    else:
        return
    for name, p in list(module.named_parameters(recurse=False)):
        setattr(module, name, nn.Parameter(torch.empty_like(state[f"{prefix}{name}"])))
    for name, b in list(module.named_buffers(recurse=False)):
        if b is not None and b.dim() > 0:
            module.register_buffer(name, torch.empty_like(state[f"{prefix}{name}"]))
