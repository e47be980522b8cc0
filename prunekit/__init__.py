"""prunekit: a Hydra experiment runner for neural-network pruning.

`prunekit.load_pruned(path)` rebuilds a run's pruned model from its model.pt;
`prunekit.export_onnx(path_or_module, out)` writes it to ONNX (the `onnx` extra).
"""
import prunekit.methods  # noqa: F401  (fills the method registry, schemas included)
from prunekit.config import register_configs

__version__ = "0.1.0"
__all__ = ["load_pruned", "export_onnx"]

register_configs()


def __getattr__(name):  # torch is imported when these are used, not by `prune-run --help`
    if name in __all__:
        from prunekit import export
        return getattr(export, name)
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
