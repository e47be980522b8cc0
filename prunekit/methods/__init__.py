"""One module per method; importing this package imports every module in it, and each registers
its method unit in `METHODS` (a new method is its module and its conf/method YAML, nothing else)."""
from prunekit.config import METHODS
from prunekit.methods.base import Method, register
from prunekit.methods.context import Context
from prunekit.registry import import_all

import_all(__name__, __path__)

__all__ = ["METHODS", "Context", "Method", "register"]
