"""Models: a registry of builders (`MODELS`), one module per family of them, imported (and so
registered) with the package — the built-in ones (classic.py), any torchvision classifier
(torchvision_any.py), any timm model (timm_any.py), the user's own module (custom.py)."""
import importlib
import pkgutil

from prunekit.models.build import MODELS, ModelRequest, build_model
from prunekit.models.layers import prunable_layers, residual_blocks
from prunekit.models.weights import load_weights, read_state_dict, resize_to_state

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "ModelRequest", "build_model", "load_weights",
           "prunable_layers", "read_state_dict", "resize_to_state", "residual_blocks"]
