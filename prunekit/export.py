"""A run's `model.pt` as a plain `nn.Module` (`load_pruned`), and its ONNX export (`export_onnx`).

model.pt holds the state dict and what rebuilds the architecture: the model's name, input channels,
stem, classes and image size. A compacted model has smaller layers than the registry builds, so
every Conv2d, Linear and BatchNorm is resized to its shapes in the state dict before loading. The
result is an ordinary module of the pruned size in eval mode, with no masks and no training state:
what a deployment takes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from prunekit.artifacts import MODEL_FORMAT, state_digest
from prunekit.deploy import exported
from prunekit.errors import ConfigError, first_line
from prunekit.files import torch_file_problem
from prunekit.models import MODELS, build_model, resize_to_state
from prunekit.state import load_state


def load_pruned(path: Union[str, Path], map_location: str = "cpu",
                model: Optional[Callable[..., nn.Module]] = None,
                trust_code: bool = False) -> nn.Module:
    """The pruned model of a run's model.pt: the architecture rebuilt at its pruned size, the
    weights loaded (weights_only), eval mode.

    The file chooses the architecture only among prunekit's registry builders (a named model, a
    torchvision or timm architecture by its library's name). A `model=custom` file names a
    factory to import and call, which a file must not choose: pass `model=` (your factory,
    called with the file's num_classes, in_channels and model.kwargs as `model=custom` calls
    it), or `trust_code=True` to import the factory the file names."""
    try:
        problem = torch_file_problem(str(path))
        if problem:
            raise ValueError(problem)
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ConfigError(f"{path} cannot be loaded ({first_line(e, 100)}): give a run's "
                          "model.pt") from None
    blob = blob if isinstance(blob, dict) else {}
    state = blob.get("state_dict")
    if blob.get("format") != MODEL_FORMAT or not isinstance(blob.get("model"), dict) or not (
            isinstance(state, dict) and all(isinstance(t, torch.Tensor) for t in state.values())):
        raise ConfigError(f"{path} is not a prunekit model.pt (format {MODEL_FORMAT}): give the "
                          "model.pt a run wrote")
    if "sha256" in blob and blob["sha256"] != state_digest(state):
        raise ConfigError(f"{path}: its content hash does not match: the file is corrupt (copy "
                          "it again)")
    cfg = OmegaConf.create(blob["model"])
    builder = MODELS.choose(cfg.get("name"), f"{path}: model.name")
    if model is None and getattr(builder, "imports_code", False) and not trust_code:
        named = cfg.get("target") or cfg.get("name")
        raise ConfigError(f"{path} names code to import and run ({named}), and a file cannot "
                          "choose code: load it with prunekit.load_pruned(path, model=<your "
                          "factory>), or trust_code=True if you trust whoever made the file")
    net = build_model(cfg, blob["num_classes"], blob["image_size"], pretrained=False,
                      factory=model)  # the architecture only: the weights are in the file
    resize_to_state(net, state)
    load_state(net, state)
    net.input_shape = (blob["model"]["in_channels"], blob["image_size"], blob["image_size"])
    return net.eval()


ONNX_INLINE_LIMIT = 1 << 30  # bytes of weights kept inside the .onnx file (protobuf: < 2 GiB)


def export_onnx(model: Union[str, Path, nn.Module], out: Union[str, Path],
                input_shape: Optional[Sequence[int]] = None, batch_size: int = 1,
                trust_code: bool = False) -> Path:
    """Write `model` (a module, or the path of a run's model.pt) to ONNX at `out`, traced on a
    (batch_size, *input_shape) input; a model.pt knows its own input shape. A model whose
    weights exceed ONNX_INLINE_LIMIT keeps them in `out` + ".data" beside it. Needs the `onnx`
    extra (onnx, onnxscript): pip install "prunekit[onnx]". A model.pt of a `model=custom` run
    is refused unless `trust_code` (see load_pruned): pass the module load_pruned built instead."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError('ONNX export needs the onnx and onnxscript packages: pip install '
                          '"prunekit[onnx]"') from None
    if not isinstance(model, nn.Module):
        model = load_pruned(model, trust_code=trust_code)
    shape = tuple(input_shape or getattr(model, "input_shape", ()))
    if not shape:
        raise ConfigError("export_onnx: give input_shape=(channels, height, width) for a module")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # One self-contained file: weights go into a `.onnx.data` sidecar only where protobuf's
    # 2 GiB limit forces them out (the exporter's default splits every model)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    program = exported(model, shape, batch_size, dynamic_batch=False)
    program.save(str(out), external_data=size > ONNX_INLINE_LIMIT)
    return out
