"""Models: a registry of builders (`MODELS`), one module per family of them, imported (and so
registered) with the package — the built-in ones (classic.py), any torchvision classifier
(torchvision_any.py), any timm model (timm_any.py), the user's own module (custom.py)."""
from prunekit.models.build import MODELS, ModelRequest, build_model
from prunekit.models.layers import prunable_layers, residual_blocks
from prunekit.models.weights import load_weights, read_state_dict, resize_to_state
from prunekit.registry import import_all

import_all(__name__, __path__)

__all__ = ["MODELS", "ModelRequest", "build_model", "load_weights",
           "prunable_layers", "read_state_dict", "resize_to_state", "residual_blocks"]
