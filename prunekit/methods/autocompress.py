"""autocompress: AutoCompress (Liu, Ma et al., AAAI 2020).

Rounds of rising cumulative targets; in each, guided simulated annealing chooses per-unit rates
and schemes (filter or column, `autocompress_search.py`), ADMM enforces them, a hard prune and a
purification remove what is left useless, and a fine-tune follows. The rules and the deviations
from the paper and NNI: docs/methods/autocompress.md.
"""
from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig

from prunekit.errors import ConfigError, at_least, fraction, positive
from prunekit.methods.admm import AdmmSolverConfig, ProjectionMethod, admm_train, constraint_rows
from prunekit.methods.autocompress_search import (
    Action,
    Measure,
    SearchSpace,
    SearchUnit,
    Trial,
    anneal,
    initial_action,
    neighbour,
)
from prunekit.methods.base import register
from prunekit.methods.context import Context
from prunekit.metrics import count_params
from prunekit.sparsity.groups import aligned_removal
from prunekit.sparsity.projection import (
    FilterConstraint,
    LayerConstraint,
    hard_prune,
    zero_count,
)
from prunekit.sparsity.purify import Purified, mask_near_zero, mask_unread, weakest
from prunekit.sparsity.units import GRANULARITIES
from prunekit.targets import as_factor, target_kind
from prunekit.train import Evaluation

log = logging.getLogger(__name__)

SCHEMES = ("filter+column", "filter", "column")  # what its search may choose


def by_filter(scheme: str) -> bool:
    """Whether a unit pruned by `scheme` loses whole filters (else weights within its layers)."""
    return GRANULARITIES[scheme].prunes_filters


@dataclass
class AutocompressSearchConfig:
    evaluations: int = 40  # quick evaluations per round, the initial action included
    temperature: float = 2.0  # T0, in points of val top-1 (the energy's unit)
    final_temperature: float = 0.1
    cooling: float = 0.9  # T <- T * cooling per accepted move
    perturbation: float = 0.35  # rates move by U(-m, m), m = perturbation * T / T0
    scheme_flip: float = 0.2  # a unit flips its scheme with probability scheme_flip * T / T0
    max_rate: float = 0.99  # no unit loses more of its weights
    val_fraction: float = 0.2  # of the val split, for the quick evaluations
    # train images that re-estimate BatchNorm statistics before every quick evaluation and
    # purification check (adaptive BN, EagleEye); 0 scores the pruned model as it is (the paper)
    calibration_images: int = 256


@dataclass
class PurifyConfig:
    enabled: bool = True
    # relative scores (sparsity.purify); after ADMM the weakest live channel scores ~0.4-0.5 of
    # its group's mean and the weakest column ~0.7 of its layer's (docs/methods/autocompress.md)
    thresholds: List[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    tolerance: float = 0.5  # points of val top-1 a threshold may cost


@dataclass
class AutocompressConfig(AdmmSolverConfig):
    granularity: str = "filter+column"
    rounds: int = 3  # cumulative targets 1 - (1 - S)^(i / rounds)
    iterations: int = 3  # ADMM iterations per round
    finetune_epochs: int = 2  # after every round
    search: AutocompressSearchConfig = field(default_factory=AutocompressSearchConfig)
    purify: PurifyConfig = field(default_factory=PurifyConfig)


def round_targets(sparsity: float, rounds: int) -> List[float]:
    """Cumulative targets 1 − (1 − S)^{i/N}, i = 1..N; the last is S."""
    return [1.0 - (1.0 - sparsity) ** (i / rounds) for i in range(1, rounds + 1)]


def removed_fraction(pruner, layers: Sequence[str]) -> Tuple[int, float]:
    """(dense weights, fraction removed so far) over `layers`."""
    dense = sum(pruner.dense_numel[n] for n in layers)
    alive = sum(int(torch.count_nonzero(pruner.weight(n))) for n in layers)
    return dense, 1.0 - alive / dense


def search_space(pruner, schemes: Sequence[str]) -> SearchSpace:
    """The units of the search, the weights removed outside them, and the prunable total."""
    units: List[SearchUnit] = []
    covered = set()
    if any(by_filter(x) for x in schemes):
        for g in pruner.groups:
            layers = tuple(m.module for m in g.outputs())
            size, lower = removed_fraction(pruner, layers)
            units.append(SearchUnit(g.root, layers, size, tuple(schemes), lower))
            covered.update(layers)
    rest = [n for n in pruner.layer_names if n not in covered]
    per_layer = tuple(x for x in schemes if not by_filter(x))
    if per_layer:
        for n in rest:
            size, lower = removed_fraction(pruner, [n])
            units.append(SearchUnit(n, (n,), size, per_layer, lower))
        rest = []
    outside = sum(pruner.dense_numel[n] * removed_fraction(pruner, [n])[1] for n in rest)
    return SearchSpace(tuple(units), outside, float(sum(pruner.dense_numel.values())))


def constraints_for(pruner, units: Sequence[SearchUnit], action: Action) -> List:
    """The constraint sets of an action on the model's current weights."""
    out: List = []
    for u, rate, scheme in zip(units, action.rates, action.schemes):
        if by_filter(scheme):
            weights = {n: pruner.weight(n) for n in u.layers}
            out.append(FilterConstraint.for_rate(pruner.groups.by_root(u.name), weights, rate,
                                                 u.size, pruner.spec.channel_multiple))
        else:
            out += [LayerConstraint.for_rate(pruner.weight(n), n, scheme, rate,
                                             pruner.dense_numel[n]) for n in u.layers]
    return out


def action_measure(pruner, units: Sequence[SearchUnit]) -> Optional[Measure]:
    """Under a counted target (flops, params): the exact removed fraction of its cost an action
    leaves. A filter unit loses the channels its constraint would zero (the count does not
    depend on which); a column unit's layers keep at most (1 - rate) of their dense weights.
    None under target.kind=sparsity: the search counts weights (its nominal sparsity)."""
    if pruner.cost.uniform:
        return None
    removed = pruner.planner.plan_cost()
    index = {u.name: pruner.groups.index_of(u.name) for u in units
             if any(by_filter(x) for x in u.schemes)}
    alive = {}  # filter-capable unit -> non-zero weights of each of its channels
    for u in units:
        if any(by_filter(x) for x in u.schemes):
            group = pruner.groups[index[u.name]]
            weights = {n: pruner.weight(n) for n in u.layers}
            alive[u.name] = group.per_channel(weights, lambda rows: rows.ne(0).sum(1)).long()

    def measure(rates: Sequence[float], schemes: Sequence[str]) -> float:
        removal, caps = {}, {}
        for u, rate, scheme in zip(units, rates, schemes):
            if by_filter(scheme):
                a = alive[u.name]
                g = pruner.groups[index[u.name]]
                n = aligned_removal(zero_count(a.double(), a, u.size, rate), g.size,
                                    g.dense_size, int((a == 0).sum()), pruner.spec.channel_multiple)
                removal[index[u.name]] = torch.argsort(a, stable=True)[:n]  # the dead first
            else:
                caps.update({n: (1.0 - rate) * pruner.dense_numel[n] for n in u.layers})
        return removed(removal, caps)

    return measure


@contextlib.contextmanager
def undone(pruner):
    """Whatever is masked inside is undone on exit: the masks, every parameter and every buffer
    (BatchNorm statistics a quick evaluation re-estimated) come back."""
    state = pruner.masks.state()
    tensors = [*pruner.model.parameters(), *pruner.model.buffers()]
    saved = [t.detach().clone() for t in tensors]
    try:
        yield
    finally:
        pruner.masks.restore(state)
        with torch.no_grad():
            for t, s in zip(tensors, saved):
                t.copy_(s)


class QuickEvaluation:
    """The score of a pruned model that the search and purification decide on: val top-1 with
    `trainer` (the search's val subset, or the whole val split), after the BatchNorm statistics
    are re-estimated on a fixed sample of train images (none when `calibration_images` is 0)."""

    def __init__(self, ctx: Context, trainer, calibration_images: int):
        self.ctx, self.trainer = ctx, trainer
        self.calibration = (ctx.data.calibration(calibration_images, ctx.plan.seed)
                            if calibration_images > 0 else None)

    def recalibrate(self) -> None:
        if self.calibration is not None:
            self.trainer.recalibrate_bn(self.ctx.model, self.calibration)

    def evaluation(self) -> Evaluation:
        self.recalibrate()
        return self.trainer.evaluate(self.ctx.model, "val", self.ctx.plan.val_max_batches)

    def __call__(self) -> float:
        return self.evaluation().top1

    def of_action(self, units: Sequence[SearchUnit], action: Action) -> Evaluation:
        """An action's quick evaluation: its one-shot hard prune of the current weights, scored,
        then undone."""
        with undone(self.ctx.pruner):
            hard_prune(constraints_for(self.ctx.pruner, units, action), self.ctx.pruner)
            return self.evaluation()


def purify(ctx: Context, options: DictConfig, score: QuickEvaluation, val_ref: float,
           most: Optional[float] = None, **row) -> Tuple[Purified, Optional[float]]:
    """Exact removal of unread channels, then the largest threshold whose quick evaluation
    `score` stays within the tolerance of `val_ref` (and, under a counted target, that leaves at
    most `most` of its cost removed)."""
    pruner = ctx.pruner
    with ctx.clock.phase("prune"):
        done = Purified(mask_unread(pruner), 0)
    chosen = None
    for tau in options.thresholds:
        with undone(pruner):
            with ctx.clock.phase("prune"):
                got = mask_near_zero(pruner, tau)
                over = most is not None and pruner.cost.removed(ctx.model) > most + 1e-12
            with ctx.clock.phase("eval"):
                val = score()
        ok = val >= val_ref - options.tolerance and not over
        ctx.record_step(event="purify", **row, threshold=tau, channels=got.channels,
                        columns=got.columns, val_top1=val, past_target=over, accepted=ok)
        if not ok:
            break
        chosen = tau
    if chosen is not None:
        with ctx.clock.phase("prune"):
            done = done + mask_near_zero(pruner, chosen)
        with ctx.clock.phase("eval"):
            score.recalibrate()
    return done, chosen


def search_round(ctx: Context, options: DictConfig, i: int, target: float, space: SearchSpace,
                 score: QuickEvaluation, rng: random.Random) -> Tuple[Action, float, int]:
    """Steps 1-3 of round i: anneal over actions scored by quick evaluation (one-shot hard prune,
    `score`, undone); every evaluation is a steps.csv row."""
    s = options.search

    units = space.units
    measure = action_measure(ctx.pruner, units)

    def propose(action: Action, heat: float) -> Action:
        return neighbour(action, space, target, s.max_rate, s.perturbation * heat,
                         s.scheme_flip * heat, rng, measure)

    def on_trial(t: Trial) -> None:
        ctx.record_step(event="trial", round=i, trial=t.number, temperature=t.temperature,
                        val_top1=t.value, accepted=t.accepted, best_val_top1=t.best,
                        nominal_sparsity=space.nominal_sparsity(t.action.rates),
                        filter_units=sum(map(by_filter, t.action.schemes)),
                        action=t.action.describe(units))

    with ctx.clock.phase("search"):
        start = initial_action(space, target, s.max_rate, measure)
        return anneal(lambda action: score.of_action(units, action).top1, start, propose,
                      temperature=s.temperature, final_temperature=s.final_temperature,
                      cooling=s.cooling, evaluations=s.evaluations, rng=rng, on_trial=on_trial)


def layer_columns(constraints: Sequence, units: Sequence[SearchUnit],
                  action: Action) -> Dict[str, Dict[str, object]]:
    """layers.csv's columns of a round: each constrained layer's scheme and zero structures,
    and its search unit and rate."""
    columns = constraint_rows(constraints)
    for u, rate in zip(units, action.rates):
        for n in u.layers:
            columns[n].update(unit=u.name, rate=rate)
    return columns


class RandomState:
    """The search's random.Random as a checkpointed object (ctx.keep_state)."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def state_dict(self) -> dict:
        return {"state": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["state"]))


@register
class Autocompress(ProjectionMethod):
    """A round is a sequence of journaled operations (the search, ADMM's epochs, the hard prune,
    purification, the fine-tune's epochs): a resumed run continues inside a round, mid-epoch
    included, as every other method does."""

    name = "autocompress"
    schema = AutocompressConfig
    summary = "AutoCompress (Liu et al. 2020): searched rates and schemes, ADMM, purification"
    quick = ("method.rounds=1", "method.search.evaluations=3", "method.iterations=1",
             "method.finetune_epochs=1")
    granularities = SCHEMES
    channel_groups = True  # purification removes channels whatever the schemes

    @classmethod
    def target_problem(cls, kind: type, options) -> Optional[str]:
        if kind.measured:
            return ("its search fits every action to a counted budget, which a measured latency "
                    "is not: use target.kind=flops")
        return super().target_problem(kind, options)

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        cls.check_solver(cfg)
        m, s = cfg.method, cfg.method.search
        at_least(cfg, "method.rounds", 1)
        at_least(cfg, "method.search.evaluations", 1)
        for key in ("temperature", "final_temperature"):
            positive(cfg, f"method.search.{key}")
        if s.final_temperature > s.temperature:
            raise ConfigError(f"method.search.final_temperature={s.final_temperature} must not "
                              f"exceed method.search.temperature={s.temperature}")
        if not 0.0 < s.cooling < 1.0:
            raise ConfigError(f"method.search.cooling={s.cooling} must be in (0, 1)")
        at_least(cfg, "method.search.perturbation", 0)
        fraction(cfg, "method.search.scheme_flip", low_open=False)
        fraction(cfg, "method.search.val_fraction")
        at_least(cfg, "method.search.calibration_images", 0)
        if not 0.0 < s.max_rate < 1.0 or (not target_kind(cfg).factor
                                            and not cfg.sparsity < s.max_rate):
            raise ConfigError(f"method.search.max_rate={s.max_rate} must be in (sparsity="
                              f"{cfg.sparsity}, 1): no layer may lose more, and the target must "
                              "be reachable")
        t = list(m.purify.thresholds)
        if any(v < 0 for v in t) or t != sorted(t):
            raise ConfigError(f"method.purify.thresholds={t} must be non-negative and ascending")
        at_least(cfg, "method.purify.tolerance", 0)

    def run(self, ctx: Context) -> None:
        c = self.options
        rng = ctx.keep_state("search_rng", RandomState(ctx.plan.seed))
        search, check = self.quick_evaluations(ctx)
        totals = {"search_evaluations": 0, "purified_channels": 0, "purified_columns": 0}
        for i, target in enumerate(round_targets(ctx.target, c.rounds), 1):
            got = self.round(ctx, i, target, search, check, rng.rng)
            for k in totals:
                totals[k] += got[k]
        ctx.tally.report(**totals)

    def quick_evaluations(self, ctx: Context,
                          calibration_images: Optional[int] = None) -> Tuple[QuickEvaluation,
                                                                             QuickEvaluation]:
        """The search's quick evaluation (on its val subset) and purification's (the whole val
        split), each after re-estimating BatchNorm on `calibration_images` (default: the
        config's)."""
        s = self.options.search
        n = s.calibration_images if calibration_images is None else calibration_images
        data = (ctx.data.subset(val=s.val_fraction, seed=ctx.plan.seed) if s.val_fraction < 1.0
                else ctx.data)
        return (QuickEvaluation(ctx, ctx.trainer.with_data(data, logging.DEBUG), n),
                QuickEvaluation(ctx, ctx.trainer, n))

    def round(self, ctx: Context, i: int, target: float, search: QuickEvaluation,
              check: QuickEvaluation, rng: random.Random) -> dict:
        """Round i: its search, ADMM, hard prune, purification and fine-tune. Whatever is
        computed from the model between operations is journaled (the units, the layer columns):
        a resumed run's replay must not recompute it from a model not yet restored."""
        c = self.options
        started = time.perf_counter()
        space = ctx.op(lambda: search_space(ctx.pruner, tuple(c.granularity.split("+"))))
        units = space.units
        if not units:
            raise ConfigError(f"method.granularity={c.granularity}: {ctx.plan.model.name} has "
                              "no layer or channel group that scheme can prune")
        action, value, n_trials = ctx.once(lambda: search_round(ctx, c, i, target, space, search,
                                                                rng))
        log.info("AutoCompress round %d/%d: target %.4f, %d evaluations, best val top-1 %.2f%% "
                 "(%d of %d units by filter)", i, c.rounds, target, n_trials, value,
                 sum(map(by_filter, action.schemes)), len(units))
        constraints = constraints_for(ctx.pruner, units, action)
        columns = ctx.op(lambda: layer_columns(constraints, units, action))
        admm_train(ctx, constraints, c, desc=f"round {i} ADMM", round=i)
        row = self.prune_and_purify(ctx, i, target, constraints, check)
        ctx.compact()
        row["val_top1_purified"] = ctx.validate()
        ctx.finetune(c.finetune_epochs, c.lr, desc=f"round {i} fine-tune")
        val = ctx.validate()
        ctx.tally.count_step()
        ctx.record_step(event="round", step=i, round=i, target=target,
                        nominal_sparsity=space.nominal_sparsity(action.rates),
                        sparsity=ctx.sparsity(), val_top1_search=value, **row, val_top1=val,
                        params=count_params(ctx.model), time_s=time.perf_counter() - started)
        ctx.tally.layer_columns(columns)
        ctx.drop_state("admm")  # the round's ADMM is over: nothing of it to checkpoint
        return {"search_evaluations": n_trials, "purified_channels": row["purified_channels"],
                "purified_columns": row["purified_columns"]}

    def prune_and_purify(self, ctx: Context, i: int, target: float, constraints: Sequence,
                         check: QuickEvaluation) -> dict:
        """Round i's hard prune onto the ADMM sets (BatchNorm re-estimated, as in the search),
        then purification; the round's row of what they did."""
        def prune_hard() -> None:
            with ctx.clock.phase("prune"):
                hard_prune(constraints, ctx.pruner)
            with ctx.clock.phase("eval"):
                check.recalibrate()

        ctx.op(prune_hard)
        val_hard = ctx.validate()
        with ctx.clock.phase("prune"):
            weakest_channel, weakest_column = ctx.op(lambda: list(weakest(ctx.pruner)))
        most = None  # under a counted target, purification may pass it by the tolerance only
        if ctx.plan.target.kind.factor:
            most = 1.0 - 1.0 / (as_factor(target) * (1.0 + ctx.plan.target.tolerance))

        def purified() -> list:
            got, tau = purify(ctx, self.options.purify, check, val_hard, most, round=i)
            return [got.channels, got.columns, tau]

        channels, columns, tau = (ctx.op(purified) if self.options.purify.enabled
                                  else (0, 0, None))
        return {"val_top1_hard": val_hard, "weakest_channel": weakest_channel,
                "weakest_column": weakest_column, "purify_threshold": tau,
                "purified_channels": channels, "purified_columns": columns}
