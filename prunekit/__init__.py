"""prunekit: a Hydra experiment runner for neural-network pruning."""
from prunekit.config import register_configs

__version__ = "0.1.0"

register_configs()
