"""One module per method; importing this package fills the registry `METHODS` by name."""
from prunekit.methods import (admm, autocompress, dense, gradual, ice, iterative,  # noqa: F401
                              oneshot, slr)  # (registration)
from prunekit.methods.base import METHODS, Context, Method

__all__ = ["METHODS", "Context", "Method"]
