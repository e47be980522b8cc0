"""prunekit: a Hydra experiment runner for neural-network pruning.

`prunekit.load_pruned(path)` rebuilds a run's pruned model from its model.pt;
`prunekit.export_onnx(path_or_module, out)` writes it to ONNX (the `onnx` extra).
"""
# Fills the registries, schemas included: methods, models, data sets, trackers. The units import
# torch, so even `--help` and a typo pay its import (about 2 s on 2 cores): the price of a method
# being one self-contained unit.
import prunekit.data  # noqa: F401
import prunekit.methods  # noqa: F401
import prunekit.models  # noqa: F401
import prunekit.tracking  # noqa: F401
from prunekit.config import register_configs

__version__ = "0.1.0"
__all__ = ["load_pruned", "export_onnx"]

register_configs()


def __getattr__(name):  # the exporter (and onnx) loaded when these are used
    if name in __all__:
        from prunekit import export
        return getattr(export, name)
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
