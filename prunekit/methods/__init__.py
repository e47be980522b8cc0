"""One module per method; importing this package imports every module in it, and each registers
its method unit in `METHODS` (a new method is its module and its conf/method YAML, nothing else)."""
import importlib
import pkgutil

from prunekit.config import METHODS
from prunekit.methods.base import Method, register
from prunekit.methods.context import Context

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Context", "Method", "register"]
