"""What a journaled operation returns, as a checkpoint keeps it (resume.Replay.op): plain data,
with the dataclasses an operation may return declared here by name (`@journaled`) and built back
from this table only, so the names in a file choose no other code."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

# The dataclasses an operation may return, by name. The journal keeps one as its fields and its
# name, and a replay builds it back from this table only: a file's names choose no other code.
JOURNALED: Dict[str, type] = {}
TYPE_KEY = "__journaled__"


def journaled(cls: type) -> type:
    """Declare a dataclass that journaled operations return (a decorator)."""
    JOURNALED[cls.__name__] = cls
    return cls


def to_journal(value: Any) -> Any:
    """An operation's result as the journal keeps it: plain data, its dataclasses tagged."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if JOURNALED.get(name) is not type(value):
            raise TypeError(f"{name} is returned by a journaled operation: declare it @journaled")
        return {TYPE_KEY: name, **{f.name: to_journal(getattr(value, f.name))
                                   for f in dataclasses.fields(value) if f.init}}
    if type(value) in (list, tuple):
        return type(value)(to_journal(v) for v in value)
    if isinstance(value, dict):
        return {k: to_journal(v) for k, v in value.items()}
    return value


def from_journal(value: Any) -> Any:
    """A journaled result as the operation returned it (to_journal's inverse)."""
    if isinstance(value, dict):
        fields = {k: from_journal(v) for k, v in value.items() if k != TYPE_KEY}
        if TYPE_KEY not in value:
            return fields
        if value[TYPE_KEY] not in JOURNALED:
            raise ValueError(f"the journal holds a {value[TYPE_KEY]!r}, which no operation returns")
        return JOURNALED[value[TYPE_KEY]](**fields)
    if type(value) in (list, tuple):
        return type(value)(from_journal(v) for v in value)
    return value
