"""The run's target as a method reaches it (docs/targets.md): its removed fraction, the reach check
before any training, the latency solve, and what the summary says was achieved.

A latency target (`target.kind=latency`, a speedup factor F at `target.batch_size`) is turned into
a FLOPs target by measurement, once, before the method runs: a copy of the model is pruned with
the method's own allocation rule (`Method.reach`) to a FLOPs fraction c, compacted, and measured
side by side with the dense model under the hardware's latency protocol. The first c is the
FLOPs reduction F itself; below F the next is the largest c the method can reach (a target it
cannot meet there is refused in one line); then the bracket [c below F, c above F] shrinks by
interpolating log speedup, until a measurement lands in [F, F · (1 + target.tolerance)] (at or
above the target, so the final measurement's noise still leaves it there) or
`target.max_measurements` are spent (then the smallest c measured at or above F is taken). The
method then runs toward that FLOPs fraction; the final measurement reports the speedup achieved.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Dict, List, Optional

import torch.nn as nn

from prunekit import distributed
from prunekit.errors import ConfigError
from prunekit.hardware import measure_latencies
from prunekit.methods.context import Context, build_pruner
from prunekit.plan import RunPlan
from prunekit.targets import TARGET_KINDS, Target, as_factor

if TYPE_CHECKING:
    from prunekit.methods.base import Method

log = logging.getLogger(__name__)


def check_reach(plan: RunPlan, model: nn.Module, example) -> None:
    """Refuse, before any training, a counted target (flops, params) this method cannot reach on
    this model: counts do not depend on the weights, so the untrained model answers."""
    t, method = plan.target, plan.method
    if not t.kind.counted or not method.prunes:
        return
    most = method.max_removed(build_pruner(plan, model, example))
    if most < t.fraction - 1e-9:
        raise ConfigError(f"target.value={t.value} is out of reach: method={method.name} can "
                          f"shrink the {t.kind.name} of model={plan.model.name} at most "
                          f"{as_factor(most):.3g}×")


def solve_latency(ctx: Context, method: "Method") -> Dict[str, float]:
    """The FLOPs fraction whose pruned model measures the speedup `target.value` (module
    docstring), and the summary keys; rank 0 measures, every rank gets its answer (or its
    refusal)."""
    answer = None
    if distributed.current().main:
        try:
            answer = _solve_latency(ctx, method)
        except ConfigError as e:
            answer = {"refused": str(e)}
    answer = distributed.from_main(answer)
    if "refused" in answer:
        raise ConfigError(answer["refused"])
    return answer


def next_fraction(below: Optional[Dict[str, float]], above: Optional[Dict[str, float]],
                  most: float, tried: int, aim_at: float) -> float:
    """The next FLOPs fraction to measure: the most the method can prune while nothing measured
    at or above the goal (then halfway there), else log-speedup interpolation in the bracket,
    kept inside its middle 80 % so the bracket always shrinks; `aim_at` is the middle of what
    is accepted."""
    if above is None:
        return most if tried == 1 else 0.5 * (below["removed"] + most)
    lo = below["removed"] if below else 0.0
    lo_s = below["speedup"] if below else 1.0
    hi, hi_s = above["removed"], above["speedup"]
    share = (math.log(aim_at) - math.log(lo_s)) / max(math.log(hi_s) - math.log(lo_s), 1e-12)
    return lo + (hi - lo) * min(max(share, 0.1), 0.9)


def measure_at(ctx: Context, method: "Method", c: float, bs: int) -> Dict[str, float]:
    """Prune a fork to the FLOPs fraction `c` with the method's rule, compact it and time it
    beside the dense model at batch `bs`: its speedup, the p95/median spread, its FLOPs factor."""
    lat = ctx.plan.latency
    fork = ctx.fork(quiet=True)
    fork.aim_at(c)
    method.reach(fork)
    fork.compact()
    dense, pruned = measure_latencies([ctx.dense_model, fork.model],
                                      tuple(ctx.check_input.shape[1:]), ctx.hw, batch_sizes=[bs],
                                      warmup=lat.warmup, repeats=lat.repeats,
                                      max_seconds=lat.max_seconds)
    point = {"removed": c, "speedup": dense[bs]["median_ms"] / pruned[bs]["median_ms"],
             "spread": max(dense[bs]["spread"], pruned[bs]["spread"]),
             "flops": as_factor(fork.pruner.cost.removed(fork.model))}
    log.info("latency target %.3g× at batch %d: FLOPs %.3g× measures %.3f× (p95/median %.2f)",
             ctx.plan.target.value, bs, point["flops"], point["speedup"], point["spread"])
    return point


def _solve_latency(ctx: Context, method: "Method") -> Dict[str, float]:
    t = ctx.plan.target
    bs, goal = t.batch_size, t.value
    most = method.max_removed(ctx.pruner)
    tried: List[Dict[str, float]] = []
    below: Optional[Dict[str, float]] = None
    above: Optional[Dict[str, float]] = None
    chosen: Optional[Dict[str, float]] = None
    c = min(t.fraction, most)
    with ctx.clock.phase("search"):
        while len(tried) < t.max_measurements:
            point = measure_at(ctx, method, c, bs)
            tried.append(point)
            s = point["speedup"]
            if goal <= s <= goal * (1.0 + t.tolerance):
                chosen = point
                break
            if s < goal:
                if c >= most - 1e-9:
                    raise ConfigError(
                        f"target.value={goal:g} is out of reach: the most method="
                        f"{method.name} can prune measures {s:.3g}× at batch {bs} on "
                        f"{ctx.hw.device.type} (FLOPs {point['flops']:.3g}×)")
                below = point
            else:
                above = point
            c = next_fraction(below, above, most, len(tried), goal * (1.0 + 0.5 * t.tolerance))
    if chosen is None:
        chosen = above if above is not None else tried[-1]
        log.warning("latency target %.3g×: no measurement within +%.0f%% after %d; taking FLOPs "
                    "%.3g× (measured %.3f×)", goal, 100 * t.tolerance, len(tried),
                    chosen["flops"], chosen["speedup"])
    return {"removed": chosen["removed"], "latency_solve_measurements": len(tried),
            "latency_solve_speedup": chosen["speedup"], "latency_solve_spread": chosen["spread"],
            "latency_solve_flops": chosen["flops"]}


def aim(ctx: Context, method: "Method") -> None:
    """Before the method runs: a latency target becomes the FLOPs fraction that meets it
    (solved once, journaled: a resumed run reads it back)."""
    if not ctx.plan.target.kind.measured or not method.prunes:
        return
    solved = ctx.once(lambda: solve_latency(ctx, method))
    ctx.aim_at(solved.pop("removed"))
    ctx.tally.report(**solved)


def achieved(target: Target, numbers: dict, prunes: bool = True) -> dict:
    """The summary's target keys: the target, what was achieved in every kind, and the relative
    error of the achieved value of the target's kind (achieved / target − 1; none for a method
    that does not prune)."""
    value = target.value
    got = {name: kind.achieved(numbers, target.batch_size) for name, kind in TARGET_KINDS.items()}
    reached = got[target.kind.name]
    return {"target_kind": target.kind.name, "target_value": value,
            **{f"achieved_{k}": v for k, v in got.items()}, "target_achieved": reached,
            "target_error": None if reached is None or not value or not prunes
            else reached / value - 1.0}
