"""One idiom for every registry (methods, models, datasets, criteria, trackers, target kinds,
granularities): entries by name, filled where each entry is defined by a decorator, looked up with
a one-line error naming the choices; `import_all` imports a package's modules so they register."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Dict, Iterable, Optional, TypeVar, Union

from prunekit.errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Dict[str, T]):
    """`@REGISTRY.register` on a class with a `name` attribute, or `@REGISTRY.register("name")` on
    a function; `REGISTRY.choose(name, key)` for the entry a config names."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, entry: Union[str, T, None] = None) -> Union[T, Callable[[T], T]]:
        if isinstance(entry, str) or entry is None:
            def named(obj: T) -> T:
                return self._add(entry or getattr(obj, "name"), obj)
            return named
        return self._add(getattr(entry, "name"), entry)

    def _add(self, name: str, obj: T) -> T:
        if not name:
            raise ValueError(f"a {self.kind} needs a name to be registered")
        if name in self and self[name] is not obj:
            raise ValueError(f"two {self.kind}s are named {name!r}")
        self[name] = obj
        return obj

    def choose(self, name: str, key: Optional[str] = None) -> T:
        """The entry called `name`, or a ConfigError naming `key` and the known names."""
        if name not in self:
            raise ConfigError(f"{key or self.kind}={name} is not a known {self.kind}"
                              f"{did_you_mean(name, self)} (known: {', '.join(sorted(self))})")
        return self[name]


def import_all(package: str, path: Iterable[str]) -> None:
    """Import every module of `package` (its `__path__`): each registers its entries, so a new
    entry is its module alone."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
