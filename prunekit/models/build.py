"""The model registry and what every builder shares: the request a builder gets, the stem and
head adaptations a pretrained network needs, and the one-line error for weights that cannot be
fetched."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from prunekit.config import model_label
from prunekit.errors import ConfigError, first_line
from prunekit.registry import Registry


@dataclass
class ModelRequest:
    """What a builder is asked for. `pretrained=False` asks for the architecture only (rebuilding
    a saved model: its weights come from the file, nothing is fetched)."""

    cfg: Any  # the model config (model.*)
    num_classes: int
    in_channels: int
    image_size: int
    small_input: bool
    pretrained: bool = True

    def get(self, key: str, default=None):
        """A model key, tolerating configs saved before the key existed."""
        value = self.cfg.get(key, default) if hasattr(self.cfg, "get") else default
        return default if value is None else value


# A builder: ModelRequest -> nn.Module. `@MODELS.register("name")`.
MODELS: Registry[Callable[[ModelRequest], nn.Module]] = Registry("model")


def classic(name: str) -> Callable:
    """Register a builder of the form (num_classes, in_channels, image_size, small_input)."""
    def wrap(fn: Callable) -> Callable:
        MODELS.register(name)(lambda r: fn(r.num_classes, r.in_channels, r.image_size,
                                           r.small_input))
        return fn
    return wrap


def small_input(model_cfg, image_size: int) -> bool:
    """The small-input stem rule: on unless `model.small_input` says otherwise, for images of
    64 px or less."""
    flag = model_cfg.get("small_input") if hasattr(model_cfg, "get") else None
    return flag if flag is not None else image_size <= 64


def imports_code(builder: Callable) -> Callable:
    """Mark a builder that imports and calls code its config names (model=custom): a file
    (model.pt) naming it cannot build it alone (export.load_pruned asks for the factory)."""
    builder.imports_code = True
    return builder


def build_model(model_cfg, num_classes: int, image_size: int, pretrained: bool = True,
                factory: Optional[Callable] = None) -> nn.Module:
    """The network `model_cfg` names; with `factory`, the caller's own (called as `construct`
    calls it) instead of whatever the config names."""
    build = (MODELS.choose(model_cfg.name, "model.name") if factory is None
             else lambda r: construct(factory, r, getattr(factory, "__name__", "the factory")))
    request = ModelRequest(model_cfg, num_classes, int(model_cfg.get("in_channels", 3)),
                           image_size, small_input(model_cfg, image_size), pretrained)
    model = build(request)
    check_forward(model, request)
    return model


def construct(factory: Callable, r: ModelRequest, what: str) -> nn.Module:
    """`factory(**kwargs)`: `num_classes` and `in_channels` where its signature takes them,
    then `model.kwargs` (plain data) over them; `what` names the factory in errors."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C factory: no signature to read
        params = {}
    open_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in (("num_classes", r.num_classes), ("in_channels", r.in_channels))
              if k in params or open_kwargs}
    extra = r.get("kwargs", {})
    kwargs.update(OmegaConf.to_container(extra) if OmegaConf.is_config(extra) else dict(extra))
    try:
        model = factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{what}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{what} returned a {type(model).__name__}, not an nn.Module")
    return model


def check_forward(model: nn.Module, r: ModelRequest) -> None:
    """One forward pass on a zero batch (no RNG drawn, eval mode: no statistics touched), so a
    network that cannot take the data's images says so in one line before any training."""
    what = model_label(r.cfg)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, r.in_channels, r.image_size, r.image_size))
    except (RuntimeError, ValueError, AssertionError) as e:
        raise ConfigError(f"model {what} cannot take {r.in_channels}x{r.image_size}x"
                          f"{r.image_size} images ({first_line(e)}): set dataset.image_size "
                          "(e.g. 224) or model.small_input") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.shape != (1, r.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model {what} returns {shape} for one image, not (1, "
                          f"{r.num_classes}) class scores")


def kaiming_conv(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


# --------------------------------------------------------------------------- adapting a network
def first_conv(model: nn.Module) -> Optional[str]:
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def adapt_input_channels(model: nn.Module, in_channels: int) -> None:
    """A stem for `in_channels` inputs: a pretrained RGB stem summed over its colour weights (a
    grey image replicated to RGB gives the same response), else repeated to the new count."""
    name = first_conv(model)
    conv = model.get_submodule(name) if name else None
    if conv is None or conv.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        w = conv.weight.sum(1, keepdim=True)
        new.weight.copy_(w.repeat(1, in_channels, 1, 1) / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    set_module(model, name, new)


def replace_head(model: nn.Module, num_classes: int) -> bool:
    """Give a pretrained classifier `num_classes` outputs: the last Linear (or, in SqueezeNet,
    the last 1x1 conv) is replaced by a freshly initialised one. Returns whether it changed."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        return False
    name, head = layers[-1]
    outputs = head.out_features if isinstance(head, nn.Linear) else head.out_channels
    if outputs == num_classes:
        return False
    if isinstance(head, nn.Linear):
        new = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    else:
        new = nn.Conv2d(head.in_channels, num_classes, head.kernel_size, head.stride,
                        head.padding, bias=head.bias is not None)
    set_module(model, name, new)
    return True


def fetch_error(key: str, value: str, err: BaseException, where: str) -> ConfigError:
    """The one line for weights that could not be fetched (offline and not cached)."""
    from prunekit.data.fetch import fetch_failure

    return ConfigError(f"{key}={value}: the weights could not be fetched ({fetch_failure(err)}); "
                       f"{where}, or run once with network access")
