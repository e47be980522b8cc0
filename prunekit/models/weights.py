"""Weights from files: the user's state dict (`model.checkpoint`), checked against the model in
one line, and the resizer that gives a model a compacted state dict's shapes."""
from __future__ import annotations

import pickle
import warnings
from typing import Dict

import torch
import torch.nn as nn

from prunekit.config import STATE_DICT_FIX, check_torch_file
from prunekit.errors import ConfigError, first_line
from prunekit.sparsity.attention import HeadAttention, split_state
from prunekit.state import load_state


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
        reason = first_line(e, 80)
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
    state = split_state(model, state)  # a ViT's fused attention entries, as prunekit holds them
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
    load_state(model, state)


def resize_to_state(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Give every layer of `model` the shapes its entries in `state` have (a compacted model's
    state dict), so `model.load_state_dict(state)` fits."""
    for name, module in model.named_modules():
        _resize_layer(module, state, f"{name}." if name else "")
    for module in model.modules():
        if isinstance(module, HeadAttention):
            module.sync_heads()


def _resize_layer(module: nn.Module, state: dict, prefix: str) -> None:
    """Give one module the shapes its entries in `state` have: the size attributes of the layers
    that have them (convs, linears, norms), then every direct parameter and buffer whose shape
    differs (ConvNeXt's layer_scale among them)."""
    w = state.get(f"{prefix}weight")
    resized = w is not None and getattr(module, "weight", None) is not None \
        and w.shape != module.weight.shape
    if resized and isinstance(module, nn.Conv2d):
        # a grouped conv loses whole conv groups (depthwise: groups of one channel), each as
        # wide as before
        if module.groups > 1:
            module.groups = w.shape[0] // (module.out_channels // module.groups)
        module.out_channels = w.shape[0]
        module.in_channels = module.groups * w.shape[1]
    elif resized and isinstance(module, nn.Linear):
        module.out_features, module.in_features = w.shape
    elif resized and isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = w.shape[0]
    elif resized and isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(w.shape)
    for name, p in list(module.named_parameters(recurse=False)):
        saved = state.get(f"{prefix}{name}")
        if saved is not None and saved.shape != p.shape:
            setattr(module, name, nn.Parameter(torch.empty_like(saved)))
    for name, b in list(module.named_buffers(recurse=False)):
        saved = state.get(f"{prefix}{name}")
        if b is not None and saved is not None and saved.shape != b.shape:
            module.register_buffer(name, torch.empty_like(saved))
