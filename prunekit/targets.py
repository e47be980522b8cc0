"""What a run aims at (`target.kind`, docs/targets.md): one class per kind, registered in
`TARGET_KINDS`, answering what callers ask — how its value reads, what the pruner counts, how it
is reached, how it is printed — so a new kind is one class here and nothing else.

- `sparsity`: the prunable layers' weights, zeroed or removed (the target: top-level `sparsity`).
- `flops`: a reduction factor (`target.value=2.0`) of the FLOPs as `metrics.effective_flops`
  counts them: a conv or linear layer's FLOPs scale with its non-zero weights.
- `params`: a reduction factor of the non-zero parameters (the compression ratio).
- `latency`: a measured speedup, solved by measurement into a FLOPs target (`methods.budget`).

Every kind is handled as the *removed fraction* c of its measure (sparsity: s; a factor F:
1 − 1/F), so a method's schedule toward its target (iterative's geometric steps, AGP's cubic,
AutoCompress's rounds) runs unchanged in any kind: the geometric steps 1 − (1 − c)^(k/n) are the
factors F^(k/n).

Kept free of torch: config.py validates with it, and `--help` must stay fast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from prunekit.errors import ConfigError, at_least, choice
from prunekit.registry import Registry


@dataclass
class TargetConfig:
    """What pruning aims at (docs/targets.md): `sparsity` (the top-level key) or a reduction
    factor of the FLOPs, the non-zero parameters or the measured latency."""

    kind: str = "sparsity"
    value: Optional[float] = None  # flops, params, latency: the factor, e.g. 2.0 (= half)
    batch_size: Optional[int] = None  # latency: the batch measured (None: the first of
    # hardware.latency.batch_sizes)
    tolerance: float = 0.02  # latency: the solve stops within this relative error of the value;
    # AutoCompress's purification may pass a counted target by at most this much
    max_measurements: int = 8  # latency: the most measurements one solve takes

    @classmethod
    def check(cls, cfg) -> None:
        """The target's own keys; whether the method can reach its kind is the method's check."""
        choice(cfg, "target.kind", tuple(TARGET_KINDS))
        target_kind(cfg).check(cfg)
        at_least(cfg, "target.batch_size", 1)
        at_least(cfg, "target.max_measurements", 2)
        if not 0.0 < cfg.target.tolerance < 0.5:
            raise ConfigError(f"target.tolerance={cfg.target.tolerance} must be in (0, 0.5): the "
                              "relative error the latency solve may stop at")


def as_factor(removed: float) -> float:
    """The reduction factor of a removed fraction (1 / (1 − c))."""
    return 1.0 / max(1.0 - removed, 1e-12)


class TargetKind:
    """A factor kind: `target.value` F > 1, reached as the removed fraction 1 − 1/F of `measure`
    (the `sparsity.cost.Cost` builder that counts it), reported as the summary's `achieved_key`."""

    name: ClassVar[str] = ""
    factor: ClassVar[bool] = True  # the target is a reduction factor (else a sparsity fraction)
    measure: ClassVar[str] = ""  # the Cost builder that counts it: weights, flops, params
    achieved_key: ClassVar[str] = ""  # the summary number that says what was reached
    counted: ClassVar[bool] = True  # exact counts: reachability is known before any training
    measured: ClassVar[bool] = False  # solved by measuring latency (methods.budget)
    needs_filters: ClassVar[bool] = False  # only removed filters change it on dense kernels

    @classmethod
    def value(cls, cfg) -> float:
        """What the run aims at in this kind's unit."""
        return float(cfg.target.value)

    @classmethod
    def removed_fraction(cls, value: float) -> float:
        return 1.0 - 1.0 / float(value)

    @classmethod
    def describe(cls, value: float) -> str:
        """`flops 2×`: a target as tables show it."""
        return f"{cls.name} {value:g}×"

    @classmethod
    def achieved(cls, numbers: dict, batch_size: int) -> Optional[float]:
        return numbers.get(cls.achieved_key)

    @classmethod
    def check(cls, cfg) -> None:
        t = cfg.target
        if t.value is None:
            raise ConfigError(f"target.kind={cls.name} needs target.value, the factor it shrinks "
                              "by (e.g. target.value=2.0 for half)")
        if not t.value > 1.0:
            raise ConfigError(f"target.value={t.value} must be > 1: it is the factor the "
                              f"{cls.name} shrinks by (2.0 = half)")


TARGET_KINDS: Registry = Registry("target kind")


@TARGET_KINDS.register
class Sparsity(TargetKind):
    name = "sparsity"
    factor = False
    measure = "weights"
    achieved_key = "sparsity"
    counted = False  # any sparsity below 1 is reachable

    @classmethod
    def value(cls, cfg) -> float:
        return float(cfg.sparsity)

    @classmethod
    def removed_fraction(cls, value: float) -> float:
        return float(value)

    @classmethod
    def describe(cls, value: float) -> str:
        return f"sparsity {value:g}"

    @classmethod
    def check(cls, cfg) -> None:
        if cfg.target.value is not None:
            others = [n for n, k in TARGET_KINDS.items() if k.factor]
            others = ", ".join(others[:-1]) + " or " + others[-1]
            raise ConfigError(f"target.value={cfg.target.value} is the reduction factor of "
                              f"target.kind={others}: with target.kind=sparsity set "
                              f"sparsity={cfg.sparsity} instead")


@TARGET_KINDS.register
class Flops(TargetKind):
    name = "flops"
    measure = "flops"
    achieved_key = "theoretical_speedup"


@TARGET_KINDS.register
class Params(TargetKind):
    name = "params"
    measure = "params"
    achieved_key = "compression_ratio"


@TARGET_KINDS.register
class Latency(TargetKind):
    """A measured speedup at `target.batch_size`, solved into a FLOPs fraction by measurement."""

    name = "latency"
    measure = "flops"  # what the solve aims the pruner at
    counted = False
    measured = True
    needs_filters = True

    @classmethod
    def achieved(cls, numbers: dict, batch_size: int) -> Optional[float]:
        return numbers.get(f"measured_speedup_bs{batch_size}", numbers.get("measured_speedup"))

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        if not cfg.hardware.latency.enabled:
            raise ConfigError("target.kind=latency measures latency: set "
                              "hardware.latency.enabled=true")


def target_kind(cfg) -> type:
    """The kind class `target.kind` names (one line naming the choices if none)."""
    return TARGET_KINDS.choose(cfg.target.kind, "target.kind")


def target_value(cfg) -> float:
    """What the run aims at in its kind's unit: `sparsity`, or the factor `target.value`."""
    return target_kind(cfg).value(cfg)


def target_fraction(cfg) -> float:
    """The removed fraction a run aims at: `sparsity`, or 1 − 1/F of a factor (a latency target's
    until its solve has found the FLOPs fraction that meets it)."""
    kind = target_kind(cfg)
    return kind.removed_fraction(kind.value(cfg))


@dataclass(frozen=True)
class Target:
    """A run's target, resolved once (plan.RunPlan.target): its kind, its value in the kind's
    unit (`sparsity`, or the factor), and the latency solve's settings."""

    kind: type  # the TargetKind class
    value: float
    tolerance: float = 0.02
    batch_size: int = 1  # the batch a latency target measures (target.batch_size, or the
    # first of hardware.latency.batch_sizes)
    max_measurements: int = 8

    @property
    def fraction(self) -> float:
        """The removed fraction of the kind's cost (a latency target's before its solve)."""
        return self.kind.removed_fraction(self.value)

    def describe(self) -> str:
        return self.kind.describe(self.value)


def describe(kind: str, value: float) -> str:
    """`sparsity 0.5`, `flops 2×`: a target as tables show it (an unknown kind, from a summary
    written by another version, by its name)."""
    known = TARGET_KINDS.get(kind)
    return known.describe(value) if known else f"{kind} {value:g}"
