"""AutoCompress's action sampling: simulated annealing over per-unit (rate, scheme), guided by the
experience rule (a larger unit never gets a lower rate). Pure functions of lists, so every rule is
testable without a model; the rules: docs/methods/autocompress.md, "The search".
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from prunekit.journaled import journaled

# (rates, schemes) -> the fraction of the target's cost an action removes (default: its nominal
# sparsity); a cost target (target.kind=flops|params) counts it exactly
Measure = Callable[[Sequence[float], Sequence[str]], float]


@journaled
@dataclass(frozen=True)
class SearchUnit:
    name: str  # the group's root layer, or the layer
    layers: Tuple[str, ...]  # the prunable layers whose weights the rate counts
    size: int  # their dense weight count
    schemes: Tuple[str, ...]  # the schemes it can take, preferred first
    lower: float = 0.0  # the fraction of its dense weights already removed


@journaled
@dataclass(frozen=True)
class Action:
    rates: Tuple[float, ...]
    schemes: Tuple[str, ...]

    def describe(self, units: Sequence[SearchUnit]) -> str:
        return ", ".join(f"{u.name}:{s[0]}{r:.2f}" for u, r, s in zip(units, self.rates,
                                                                      self.schemes))


@journaled
@dataclass(frozen=True)
class SearchSpace:
    """What the search moves over: its units, the weights already removed in the prunable
    layers that are no unit (`outside`), and the prunable total (default: the units' size)."""

    units: Tuple[SearchUnit, ...]
    outside: float = 0.0
    total: Optional[float] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", tuple(self.units))
        if self.total is None:
            object.__setattr__(self, "total", float(sum(u.size for u in self.units)))

    def nominal_sparsity(self, rates: Sequence[float]) -> float:
        """Fraction of all prunable weights removed if each unit loses `rate` of its weights."""
        return (self.outside + sum(u.size * r for u, r in zip(self.units, rates))) / self.total


def fit_to_target(base: Sequence[float], space: SearchSpace, target: float, max_rate: float,
                  schemes: Sequence[str] = (), measure: Optional[Measure] = None) -> List[float]:
    """Rates from `base` under the experience rule, scaled so the action's `measure` (default:
    the nominal sparsity) is `target`."""
    units = space.units
    n = len(units)
    order = sorted(range(n), key=lambda i: (units[i].size, i))
    b = sorted(max(0.0, float(x)) for x in base)
    if not any(b):
        b = [1.0] * n

    def rates_at(scale: float) -> List[float]:
        out = [0.0] * n
        running = 0.0
        for rank, i in enumerate(order):
            lo = units[i].lower
            r = min(max(lo, scale * b[rank]), max(max_rate, lo))
            running = max(running, r)  # monotone in size
            out[i] = running
        return out

    def f(scale: float) -> float:
        if measure is not None:
            return measure(rates_at(scale), schemes)
        return space.nominal_sparsity(rates_at(scale))

    lo, hi = 0.0, max_rate / min(x for x in b if x > 0)
    if f(lo) >= target:
        return rates_at(lo)
    if f(hi) <= target:
        return rates_at(hi)
    for _ in range(200):  # f is continuous and non-decreasing in the scale
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15 * max(hi, 1.0):
            break
    return rates_at(hi if abs(f(hi) - target) <= abs(f(lo) - target) else lo)


def initial_action(space: SearchSpace, target: float, max_rate: float,
                   measure: Optional[Measure] = None) -> Action:
    """The uniform start: every unit at the same rate (as far as lower bounds allow), each with
    its preferred scheme."""
    schemes = tuple(u.schemes[0] for u in space.units)
    rates = fit_to_target([target] * len(space.units), space, target, max_rate, schemes,
                          measure)
    return Action(tuple(rates), schemes)


def neighbour(action: Action, space: SearchSpace, target: float, max_rate: float, step: float,
              flip: float, rng: random.Random, measure: Optional[Measure] = None) -> Action:
    """A random move of size `step` (rates) and `flip` (scheme probability), re-fitted to the
    target under the experience rule."""
    base = [r + rng.uniform(-step, step) for r in action.rates]
    schemes = tuple(rng.choice([s for s in u.schemes if s != cur]) if len(u.schemes) > 1
                    and rng.random() < flip else cur for u, cur in zip(space.units,
                                                                        action.schemes))
    return Action(tuple(fit_to_target(base, space, target, max_rate, schemes, measure)), schemes)


@dataclass
class Trial:
    number: int
    temperature: float
    value: float
    accepted: bool
    best: float
    action: Action


def anneal(evaluate: Callable[[Action], float], start: Action,
           propose: Callable[[Action, float], Action], *, temperature: float,
           final_temperature: float, cooling: float, evaluations: int, rng: random.Random,
           on_trial: Callable[[Trial], None] = lambda t: None) -> Tuple[Action, float, int]:
    """Simulated annealing that maximises `evaluate`; `propose(action, T/T0)` makes a move.
    Returns the best action evaluated, its value and the number of evaluations (at most
    `evaluations`)."""
    current, e_cur = start, evaluate(start)
    best, e_best = current, e_cur
    t = temperature
    on_trial(Trial(1, t, e_cur, True, e_best, current))
    number = 1
    while number < evaluations and t >= final_temperature:
        number += 1
        candidate = propose(current, t / temperature)
        e = evaluate(candidate)
        accepted = e >= e_cur or rng.random() < math.exp((e - e_cur) / t)
        if e > e_best:
            best, e_best = candidate, e
        on_trial(Trial(number, t, e, accepted, e_best, candidate))
        if accepted:
            current, e_cur = candidate, e
            t *= cooling
    return best, e_best, number
