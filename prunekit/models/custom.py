"""model=custom: your own nn.Module, built by `model.target=package.module:factory` with
`model.kwargs` (Hydra's `_target_` idea): a research model prunes without editing prunekit.
The factory is given `num_classes` and `in_channels` when its signature takes them (or takes
**kwargs); `model.kwargs` win over both. The module must be importable (on PYTHONPATH)."""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch.nn as nn
from omegaconf import OmegaConf

from prunekit.config import ModelConfig, schema
from prunekit.errors import ConfigError
from prunekit.models.build import MODELS, ModelRequest


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


@MODELS.register("custom")
def build_custom(r: ModelRequest) -> nn.Module:
    target = r.get("target")
    if target is None:
        raise ConfigError("model.target is not set: model=custom needs "
                          "model.target=package.module:factory")
    factory = resolve(target)
    params = inspect.signature(factory).parameters
    open_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in (("num_classes", r.num_classes), ("in_channels", r.in_channels))
              if k in params or open_kwargs}
    extra = r.get("kwargs", {})
    kwargs.update(OmegaConf.to_container(extra) if OmegaConf.is_config(extra) else dict(extra))
    try:
        model = factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"model.target={target}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.target={target} returned a {type(model).__name__}, not an "
                          "nn.Module")
    return model
