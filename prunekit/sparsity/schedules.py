"""Sparsity schedules: Zhu & Gupta's cubic (AGP) and the iterative pipeline's step targets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class AGPSchedule:
    """s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n Δt))^power,  t in {t0, t0 + Δt, ..., t0 + n Δt}.

    t counts optimiser steps from 0; masks are updated *before* step t when t is an update step.
    n = floor((end_step - begin_step) / Δt) (Distiller's span rule), so the last update lands on
    s_f exactly at t0 + n Δt <= end_step instead of missing it when the span is not a multiple of
    Δt (TF-MOT's behaviour, SparseML #1117). Before t0 the sparsity is s_i; after the last update
    the masks stop changing but stay applied.
    """

    initial: float
    final: float
    begin_step: int
    end_step: int
    frequency: int
    power: int = 3

    @property
    def n(self) -> int:
        return (self.end_step - self.begin_step) // self.frequency

    @property
    def last_update(self) -> int:
        return self.begin_step + self.n * self.frequency

    def problem(self, total_steps: int) -> Optional[str]:
        """Why the run cannot carry out this schedule (naming the method keys), or None."""
        if self.end_step >= total_steps:
            return (f"method.end_step={self.end_step} is not before the end of training "
                    f"({total_steps} optimiser steps): lower it or raise method.epochs")
        if self.n < 1:
            return (f"method.frequency={self.frequency} leaves no update between "
                    f"begin_step={self.begin_step} and end_step={self.end_step}: lower "
                    "method.frequency or raise method.epochs")
        return None

    def is_update(self, t: int) -> bool:
        on_grid = (t - self.begin_step) % self.frequency == 0
        return self.begin_step <= t <= self.last_update and on_grid

    def sparsity_at(self, t: int) -> float:
        if t < self.begin_step:
            return self.initial
        if t >= self.last_update:
            return self.final
        progress = (t - self.begin_step) / (self.n * self.frequency)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** self.power

    def updates(self) -> List[Tuple[int, float]]:
        return [(self.begin_step + k * self.frequency,
                 self.sparsity_at(self.begin_step + k * self.frequency)) for k in range(self.n + 1)]


def iterative_targets(final: float, steps: int, schedule: str) -> List[float]:
    """Cumulative targets of the standard pipeline's steps; the last is exactly `final`.

    geometric, 1 - (1 - s)^(k/N), removes the same fraction of what remains at every step (the
    schedule of LTH-style iterative pruning and of NNI's AutoCompress rounds); linear is s*k/N."""
    if schedule == "geometric":
        return [1.0 - (1.0 - final) ** (k / steps) for k in range(1, steps + 1)]
    if schedule == "linear":
        return [final * k / steps for k in range(1, steps + 1)]
    raise ValueError(f"no cumulative targets for schedule {schedule!r}")
