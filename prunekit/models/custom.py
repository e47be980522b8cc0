"""model=custom: your own nn.Module, built by `model.target=package.module:factory` with
`model.kwargs` (Hydra's `_target_` idea): a research model prunes without editing prunekit.
The factory is given `num_classes` and `in_channels` when its signature takes them (or takes
**kwargs); `model.kwargs` win over both. The module must be importable (on PYTHONPATH)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch.nn as nn

from prunekit.config import ModelConfig, schema
from prunekit.errors import ConfigError
from prunekit.models.build import MODELS, ModelRequest, construct, imports_code


@schema("model", "custom")
@dataclass
class CustomModelConfig(ModelConfig):
    target: Optional[str] = None  # package.module:factory
    kwargs: Dict[str, Any] = field(default_factory=dict)  # the factory's arguments
    label_key = "target"


def resolve(target: str):
    module_name, sep, attr = str(target).partition(":")
    if not sep:
        module_name, _, attr = str(target).rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"model.target={target} must be package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"model.target={target}: cannot import {module_name} ({e}); put it on "
                          "PYTHONPATH") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"model.target={target}: {module_name} has no callable {attr}")
    return factory


@imports_code
@MODELS.register("custom")
def build_custom(r: ModelRequest) -> nn.Module:
    target = r.get("target")
    if target is None:
        raise ConfigError("model.target is not set: model=custom needs "
                          "model.target=package.module:factory")
    return construct(resolve(target), r, f"model.target={target}")
