"""One module per method; importing this package fills the registry `METHODS` by name."""
from prunekit.methods import dense, gradual, ice, iterative, oneshot  # noqa: F401  (registration)
from prunekit.methods.base import METHODS, Context, Method

__all__ = ["METHODS", "Context", "Method"]
