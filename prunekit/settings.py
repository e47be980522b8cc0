"""Which settings say what a run computes: a run's identity.

A schema declares, beside each key, whether it changes the results: `environment()` marks a key
that says where or how a run happens (a path, a display option, the checkpoint rhythm, the
latency protocol) and not what it computes. A checkpoint, a finished run and the trackers'
params are identified by the other keys, so a job preempted on one node and resumed on another
(another cache path, another data root) is still the same run.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import field
from typing import Any, Dict, List, Optional, Set

from omegaconf import DictConfig, OmegaConf

# How this process runs, not what it computes: never part of a run's identity, nor of the params
# a tracker records
RUN_CONTROL_KEYS = ("resume", "logger", "hydra")


def environment(**field_args) -> Any:
    """A schema field that does not change what a run computes: `environment(default=...)` or
    `environment(default_factory=...)` (a whole section)."""
    return field(metadata={"changes_results": False}, **field_args)


def environment_keys(node: DictConfig, prefix: str = "") -> Set[str]:
    """The dotted keys under `node` that their schemas declare `environment()`."""
    schema = OmegaConf.get_type(node)
    found = set()
    if dataclasses.is_dataclass(schema):
        found = {prefix + f.name for f in dataclasses.fields(schema)
                 if f.metadata.get("changes_results") is False}
    for key in node.keys():
        child = node._get_node(key)
        path = f"{prefix}{key}"
        if isinstance(child, DictConfig) and not child._is_none() and path not in found:
            found |= environment_keys(child, path + ".")
    return found


def flat_keys(d: dict, prefix: str = "") -> Dict[str, Any]:
    """A nested dict as one level of dotted keys: {"a.b": 1}."""
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def experiment_settings(cfg) -> Dict[str, Any]:
    """The resolved config less RUN_CONTROL_KEYS, as flat dotted keys (a plain dict too, e.g. a
    run's config_resolved.yaml read back)."""
    data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    for key in RUN_CONTROL_KEYS:
        data.pop(key, None)
    return flat_keys(data)


def result_settings(cfg: DictConfig) -> Dict[str, Any]:
    """The settings that change what the run computes: experiment_settings less its
    environment() keys."""
    return without(experiment_settings(cfg), environment_keys(cfg))


def without(settings: Dict[str, Any], left_out: Set[str]) -> Dict[str, Any]:
    """`settings` less every key in `left_out` and every key under one of them."""
    return {k: v for k, v in settings.items()
            if not any(k == e or k.startswith(e + ".") for e in left_out)}


def settings_hash(settings: Dict[str, Any]) -> str:
    return hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig, resolved: Optional[Dict[str, Any]] = None) -> str:
    """The identity of what `cfg` computes: a finished run's; a checkpoint's with `resolved`,
    the values this machine gave keys that name no value (`hardware.precision: auto` → bf16),
    so a state trained in one precision is not continued in another."""
    return settings_hash({**result_settings(cfg), **(resolved or {})})


def differences(old: Dict[str, Any], new: Dict[str, Any], shown: int = 6) -> str:
    """`sparsity: 0.5 → 0.9, seed: 0 → 7`: the keys whose values differ (at most `shown`)."""
    keys: List[str] = [*new, *(k for k in old if k not in new)]
    missing = "(unset)"
    changed = [f"{k}: {old.get(k, missing)} → {new.get(k, missing)}" for k in keys
               if old.get(k, missing) != new.get(k, missing)]
    more = f", and {len(changed) - shown} more" if len(changed) > shown else ""
    return ", ".join(changed[:shown]) + more
