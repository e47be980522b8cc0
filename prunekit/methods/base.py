"""What a method is: one self-describing unit (`Method`), registered by name in `METHODS`.

A method module holds its config schema (a dataclass of the keys it adds to `MethodConfig`), its
checks (`check(cfg)`, one-line ConfigErrors), what it declares about itself (the granularities,
scopes and criteria it accepts, its target unit, whether it needs channel groups, its summary
keys' formats) and its `run(ctx)`. Runner, validation, pruner construction, summary and report ask
the method; no code outside a method's module tests its name.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar, Dict, List, Optional, Tuple, Type

from omegaconf import DictConfig, OmegaConf

from prunekit.config import METHODS, SCOPES, MethodConfig
from prunekit.errors import ConfigError, at_least, choice
from prunekit.sparsity.criteria import CRITERIA
from prunekit.sparsity.units import GRANULARITIES, granularity
from prunekit.targets import TARGET_KINDS, target_kind

if TYPE_CHECKING:
    from prunekit.methods.context import Context


class Method:
    """A pruning method. Subclasses set `name` and `schema`, declare what they accept, extend
    `check` for their own keys (calling super) and implement `run(ctx)`."""

    name: ClassVar[str] = ""
    schema: ClassVar[type] = MethodConfig
    summary: ClassVar[str] = ""  # one line for the docs and `--help`
    # the granularities it accepts (None: every registered one it can reach, see
    # accepted_granularities); `one_step`: it prunes once, so a fixed pattern (N:M) fits too
    granularities: ClassVar[Optional[Tuple[str, ...]]] = None
    one_step: ClassVar[bool] = False
    scopes: ClassVar[Tuple[str, ...]] = SCOPES
    criteria: ClassVar[Optional[Tuple[str, ...]]] = None  # None: every criterion scoring units
    channel_groups: ClassVar[Optional[bool]] = None  # None: when the granularity removes channels
    prunes: ClassVar[bool] = True  # False (dense): no target, no speedup
    time_reference: ClassVar[bool] = False  # the report's `time_vs_<name>` baseline
    quick: ClassVar[Tuple[str, ...]] = ()  # overrides for a run of seconds (tests, smoke runs)
    # summary.json keys of the method (regular expressions) -> (report title, number format)
    summary_formats: ClassVar[Dict[str, Tuple[str, str]]] = {}
    headline: ClassVar[Tuple[str, ...]] = ()  # its keys the console's summary table shows too

    def __init__(self, options: DictConfig):
        self.options = options  # its own config: the `method` section

    def run(self, ctx: "Context") -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ reaching a cost target
    def reach(self, ctx: "Context") -> None:
        """Prune `ctx`'s model at once to `ctx.target` with this method's allocation rule (the
        latency solve measures what it gives, on a copy)."""
        ctx.prune_to(ctx.target)

    def max_removed(self, pruner) -> float:
        """The largest fraction of the target's cost this method can remove from the model."""
        return pruner.planner.max_removed()

    # ------------------------------------------------------------------ what it declares
    @classmethod
    def accepted_granularities(cls) -> Tuple[str, ...]:
        if cls.granularities is not None:
            return cls.granularities
        return tuple(n for n, g in GRANULARITIES.items() if cls.one_step or not g.one_step)

    @classmethod
    def accepted_criteria(cls) -> Tuple[str, ...]:
        if cls.criteria is not None:
            return cls.criteria
        return tuple(n for n, c in CRITERIA.items() if c.scores_units)

    @classmethod
    def target_unit(cls, kind: type, options: DictConfig) -> str:
        """What a target of `kind` counts with these options (summary key `target_unit`): a
        cost target's kind, or what `sparsity` counts (`sparsity_unit`)."""
        if not cls.prunes:
            return "none"
        return kind.name if kind.factor else cls.sparsity_unit(options)

    @classmethod
    def sparsity_unit(cls, options: DictConfig) -> str:
        """What `sparsity` counts with these options."""
        return granularity(options.granularity).sparsity_unit(options)

    @classmethod
    def target_sparsity(cls, kind_name: Optional[str], sparsity: Optional[float]
                        ) -> Optional[float]:
        """The `sparsity` aimed at (None: the target is another kind)."""
        if not cls.prunes:
            return 0.0
        kind = TARGET_KINDS.get(kind_name)  # a failed run's summary may name no kind
        return sparsity if kind is not None and not kind.factor else None

    @classmethod
    def target_problem(cls, kind: type, options: DictConfig) -> Optional[str]:
        """Why these options cannot reach a target of `kind` (None: they can). Counted kinds
        (flops, params) are solved on exact counts; latency by measurement, which only removed
        filters change."""
        g = granularity(options.granularity)
        if not kind.factor or not cls.prunes:  # dense: no target, a row in any table
            return None
        if g.cost_problem:
            return g.cost_problem
        if kind.needs_filters and not g.prunes_filters:
            return ("only removed filters run faster on dense kernels: use "
                    "method.granularity=filter")
        return None

    @classmethod
    def needs_channel_groups(cls, method_cfg: DictConfig) -> Optional[bool]:
        return cls.channel_groups

    @classmethod
    def hparams(cls, method_cfg: DictConfig) -> dict:
        return OmegaConf.to_container(method_cfg, resolve=False)

    # ------------------------------------------------------------------ checks
    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        """The checks every method shares; subclasses add theirs and call super()."""
        m = cfg.method
        if m.granularity not in cls.accepted_granularities():
            asked = GRANULARITIES.get(m.granularity)
            if asked is not None and asked.one_step:
                able = [n for n, u in METHODS.items()
                        if m.granularity in u.accepted_granularities()]
                raise ConfigError(f"method.granularity={m.granularity} needs one prune step: use "
                                  f"method={', '.join(able[:-1])} or {able[-1]}, not "
                                  f"method={m.name}")
            choice(cfg, "method.granularity", cls.accepted_granularities())
        choice(cfg, "method.criterion", cls.accepted_criteria())
        choice(cfg, "method.scope", cls.scopes)
        if len(m.nm) != 2 or not 0 < m.nm[0] < m.nm[1]:
            raise ConfigError(f"method.nm={list(m.nm)} must be [N, M] with 0 < N < M, e.g. [2, 4]")
        problem = cls.target_problem(target_kind(cfg), m)
        if problem:
            raise ConfigError(f"target.kind={cfg.target.kind} cannot be reached by method="
                              f"{m.name} with method.granularity={m.granularity}: {problem}")
        if granularity(m.granularity).one_step:  # N:M: the pattern fixes the sparsity
            implied = 1.0 - m.nm[0] / m.nm[1]
            if abs(implied - cfg.sparsity) > 1e-9:
                raise ConfigError(f"sparsity={cfg.sparsity} does not match method.nm="
                                  f"{list(m.nm)}, which removes {implied:g}: set "
                                  f"sparsity={implied:g}")
        at_least(cfg, "method.criterion_batches", 1)
        for key in m:
            if key.endswith("epochs"):
                at_least(cfg, f"method.{key}", 0, " (epochs cannot be negative)")

    @classmethod
    def headline_rows(cls, summary: dict) -> List[Tuple[str, object, str]]:
        """(title, value, format) of the method's headline keys a run's summary holds."""
        rows = []
        for key in cls.headline:
            if key in summary:
                title, fmt = cls.summary_format(key)
                rows.append((title, summary[key], fmt))
        return rows

    @classmethod
    def summary_format(cls, key: str) -> Optional[Tuple[str, str]]:
        """(title, format) of one of this method's summary keys, or None."""
        for pattern, (title, fmt) in cls.summary_formats.items():
            hit = re.fullmatch(pattern, key)
            if hit:
                return title.format(*hit.groups()), fmt
        return None


def register(cls: Type[Method]) -> Type[Method]:
    """Register a method unit: by name in METHODS, its schema in Hydra's ConfigStore."""
    return METHODS.register(cls)
