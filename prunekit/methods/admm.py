"""admm: structured or unstructured pruning by ADMM (Zhang et al. 2018), the solver on its own.

min f(W) s.t. W_i ∈ S_i, split with Z_i = W_i: W-steps train on f(W) + Σ ρ/2‖W_i − Z_i + U_i‖²,
Z ← Π(W + U) (the exact Euclidean projection, `sparsity.projection`), U ← U + W − Z; then a hard
prune from W and masked retraining. The update rules, the sets per granularity, `layer_rates` and
what is deliberately not copied from NNI: docs/methods/admm.md.
"""
from __future__ import annotations

import fnmatch
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from omegaconf import DictConfig

from prunekit.config import MethodConfig
from prunekit.errors import ConfigError, at_least, positive
from prunekit.methods.base import Method, register
from prunekit.methods.context import Context
from prunekit.sparsity.projection import (
    FilterConstraint,
    LayerConstraint,
    Tensors,
    hard_prune,
    project_all,
)
from prunekit.train import FitHooks

log = logging.getLogger(__name__)


@dataclass
class ProjectionConfig(MethodConfig):
    """The keys of every method that projects onto the sparse set (admm, slr, autocompress)."""

    criterion: str = "l2"  # the projections keep the largest-L2 structures: the exact Π
    rho: float = 0.1  # ρ of the penalty ρ/2‖W − Z + U‖² (U = Λ/ρ, the scaled multipliers)


@dataclass
class AdmmSolverConfig(ProjectionConfig):
    """The ADMM solver's keys, shared by admm and autocompress (which runs it every round)."""

    rho_growth: float = 1.0  # ρ ← min(ρ · growth, rho_max) after every ADMM iteration
    rho_max: float = 1.0
    iterations: int = 10  # ADMM iterations (Z/U updates)
    epochs_per_iteration: int = 1  # W-step epochs between Z/U updates


@dataclass
class HardPruneConfig(ProjectionConfig):
    """admm, slr: a hard prune onto the constraints after training, then masked retraining."""

    retrain_epochs: int = 3  # masked retraining after the hard prune (fresh optimiser)
    retrain_lr: Optional[float] = None  # None: lr
    layer_rates: List[str] = field(default_factory=list)  # ["layer or glob:rate", ...]


@dataclass
class AdmmConfig(AdmmSolverConfig, HardPruneConfig):
    """admm's keys: the solver's and the hard prune's."""


class ProjectionMethod(Method):
    """What admm, slr and autocompress share: they project onto the sparse set by keeping the
    largest-L2 structures of each layer (or channel group), each at its own rate."""

    criteria = ("l2",)
    scopes = ("layerwise",)

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        m = cfg.method
        if m.criterion != "l2":
            raise ConfigError(f"method.criterion={m.criterion}: {m.name} projects onto the sparse "
                              "set by keeping the largest-L2 structures (the exact Euclidean "
                              "projection); use method.criterion=l2")
        if m.scope != "layerwise":
            raise ConfigError(f"method.scope={m.scope}: {m.name} constrains every layer (or "
                              "channel group) at its own rate; use method.scope=layerwise")
        super().check(cfg)
        positive(cfg, "method.rho")

    @staticmethod
    def check_solver(cfg: DictConfig) -> None:
        """The ADMM solver's keys (admm, autocompress)."""
        m = cfg.method
        positive(cfg, "method.rho_max")
        at_least(cfg, "method.rho_growth", 1.0, " (ρ may only grow)")
        if m.rho_max < m.rho:
            raise ConfigError(f"method.rho_max={m.rho_max} must be >= method.rho={m.rho}")
        at_least(cfg, "method.iterations", 1)
        at_least(cfg, "method.epochs_per_iteration", 1)

    @staticmethod
    def check_retraining(cfg: DictConfig) -> None:
        """The keys of the hard prune and masked retraining (admm, slr)."""
        positive(cfg, "method.retrain_lr")
        parse_layer_rates(cfg.method.layer_rates)


def parse_layer_rates(items) -> Dict[str, float]:
    """["pattern:rate", ...] -> {pattern: rate}, or a ConfigError naming the bad item."""
    out: Dict[str, float] = {}
    for item in items:
        pattern, _, rate = str(item).rpartition(":")
        try:
            value = float(rate)
        except ValueError:
            value = None
        if not pattern or value is None or not 0.0 <= value < 1.0:
            raise ConfigError(f"method.layer_rates: '{item}' is not 'layer:rate' with a rate in "
                              "[0, 1) (the fraction removed), e.g. "
                              "method.layer_rates=[layer4.*:0.95]")
        out[pattern] = value
    return out


def to_device(tensors: Tensors, device) -> Tensors:
    """Detached copies of `tensors` on `device` (checkpoints: cpu; a resumed run: the model's)."""
    return {n: t.detach().to(device) for n, t in tensors.items()}


class PenaltySplit:
    """The split W = Z of ADMM and SLR for constraints on a model's weights: Z, the scaled duals
    U = Λ/ρ, and the penalty ρ/2 Σ‖W − Z + U‖². Z and U are tensors of their own, never views
    of W; how they move is the method's (AdmmState, slr.SlrState)."""

    def __init__(self, model: nn.Module, constraints: Sequence, rho: float):
        self.model = model
        self.constraints = list(constraints)
        self.weights = {n: model.get_submodule(n).weight
                        for c in self.constraints for n in c.layers}
        with torch.no_grad():
            self.Z: Tensors = project_all(self.constraints, self._w())
        self.U: Tensors = {n: torch.zeros_like(z) for n, z in self.Z.items()}
        self.rho = float(rho)
        self._anchor()

    def _w(self) -> Tensors:
        return {n: w.detach() for n, w in self.weights.items()}

    def _anchor(self) -> None:
        self.anchor = {n: self.Z[n] - self.U[n] for n in self.Z}  # W − Z + U = W − anchor

    def penalty(self) -> torch.Tensor:
        """ρ/2 Σ‖W − Z + U‖²_F, differentiable in W."""
        return 0.5 * self.rho * sum((w - self.anchor[n]).pow(2).sum()
                                    for n, w in self.weights.items())

    @staticmethod
    def primal_residual(w: Tensors, z: Tensors) -> float:
        """‖W − Z‖/‖W‖ over all constrained layers."""
        primal = math.sqrt(sum(float((w[n] - z[n]).pow(2).sum()) for n in w))
        norm = math.sqrt(sum(float(t.pow(2).sum()) for t in w.values()))
        return primal / max(norm, 1e-12)

    def state_dict(self) -> dict:
        return {"Z": to_device(self.Z, "cpu"), "U": to_device(self.U, "cpu"), "rho": self.rho}

    def load_state_dict(self, state: dict) -> None:
        """A resumed run: Z, U and ρ as checkpointed, bound to the model's current weights."""
        self.weights = {n: self.model.get_submodule(n).weight for n in self.weights}
        self.Z = to_device(state["Z"], self.device)
        self.U = to_device(state["U"], self.device)
        self.rho = float(state["rho"])
        self._anchor()

    @property
    def device(self) -> torch.device:
        return next(iter(self.weights.values())).device


class AdmmState(PenaltySplit):
    """ADMM's moves: Z ← Π(W + U), U ← U + W − Z, and ρ changes that keep Λ."""

    @torch.no_grad()
    def update(self) -> Dict[str, float]:
        """The Z-step and U-step; returns the residuals: primal ‖W − Z‖/‖W‖, dual ρ‖Z − Z_prev‖."""
        w = self._w()
        z = project_all(self.constraints, {n: w[n] + self.U[n] for n in w})
        dual = self.rho * math.sqrt(sum(float((z[n] - self.Z[n]).pow(2).sum()) for n in w))
        for n in w:
            self.U[n] += w[n] - z[n]
        self.Z = z
        self._anchor()
        return {"primal_residual": self.primal_residual(w, z), "dual_residual": dual}

    @torch.no_grad()
    def set_rho(self, rho: float) -> None:
        """Change ρ keeping the multipliers Λ = ρU: U ← U·ρ_old/ρ_new."""
        rho = float(rho)
        if rho != self.rho:
            for u in self.U.values():
                u.mul_(self.rho / rho)
            self.rho = rho
            self._anchor()


def admm_train(ctx: Context, constraints: Sequence, options: DictConfig, desc: str = "ADMM",
               **row) -> AdmmState:
    """`options.iterations` ADMM iterations of `options.epochs_per_iteration` epochs each toward the
    constraint sets; one steps.csv row (event=admm) per iteration."""
    state = ctx.keep_state("admm", AdmmState(ctx.model, constraints, options.rho))
    per = options.epochs_per_iteration

    def after_epoch(epoch: int, loss: float) -> None:
        if (epoch + 1) % per:
            return
        k = (epoch + 1) // per
        residuals = state.update()
        ctx.record_step(event="admm", **row, iteration=k, rho=state.rho, loss=loss, **residuals,
                        val_top1=ctx.validate())
        state.set_rho(min(state.rho * options.rho_growth, options.rho_max))

    ctx.finetune(options.iterations * per, options.lr, desc=desc,
                 hooks=FitHooks(loss=ctx.trainer.penalised_loss(state.penalty),
                                after_epoch=after_epoch))
    return state


def layer_rate_patterns(rates: Dict[str, float], names: Sequence[str]) -> Dict[str, float]:
    """{layer: rate} for the layers the patterns (exact names or globs) name; the first pattern
    that matches a layer wins. A pattern that matches nothing is a user error."""
    out: Dict[str, float] = {}
    for pattern, rate in rates.items():
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ConfigError(f"method.layer_rates: '{pattern}' matches no layer it can set "
                              f"(these: {', '.join(names)})")
        for n in hits:
            out.setdefault(n, float(rate))
    return out


def admm_constraints(ctx: Context, options: DictConfig) -> List:
    """The constraint set of every layer (filter: every channel group) for `method=admm`."""
    pruner, g = ctx.pruner, options.granularity
    if pruner.granularity.prunes_filters:
        groups = list(pruner.groups)
        rates = layer_rate_patterns(parse_layer_rates(options.layer_rates),
                                    [grp.root for grp in groups])
        plan = pruner.planner.filter_plan(ctx.target)
        return [FilterConstraint(grp, min(round(rates[grp.root] * grp.dense_size), grp.size - 1)
                                 if grp.root in rates else len(plan[gi]))
                for gi, grp in enumerate(groups)]
    names = pruner.unit_layers(g)
    rates = layer_rate_patterns(parse_layer_rates(options.layer_rates), names)
    rate = pruner.unit_ratio(ctx.target)  # every layer's: the target, or what meets its cost
    return [LayerConstraint.for_rate(pruner.weight(n), n, g, rates.get(n, rate),
                                     pruner.dense_numel[n], tuple(options.nm)) for n in names]


def constraint_rows(constraints: Sequence) -> Dict[str, Dict[str, object]]:
    """layers.csv columns of each constrained layer: its scheme, its unit (the layer, or the
    channel group's root) and how many of the unit's structures are zero."""
    info: Dict[str, Dict[str, object]] = {}
    for c in constraints:
        filt = isinstance(c, FilterConstraint)
        for n in c.layers:
            info[n] = {"scheme": "filter" if filt else c.scheme,
                       "unit": c.group.root if filt else c.layer, "zero_structures": c.n_zero}
    return info


def hard_prune_and_retrain(ctx: Context, constraints: Sequence, options: DictConfig) -> None:
    """What ADMM and SLR do after their training: hard-prune W onto the sets (mask from W, exact
    top-k), compact filters, measure `top1_hard` (test, for reporting) and `val_top1_hard`, then
    retrain with the masks for `options.retrain_epochs` with a fresh optimiser; after every retrain
    epoch its val top-1 and, for reporting, its test top-1 (`top1_retrain{e}`)."""
    started = time.perf_counter()

    def prune() -> None:
        with ctx.clock.phase("prune"):
            hard_prune(constraints, ctx.pruner)

    ctx.op(prune)
    ctx.compact()
    val_hard = ctx.validate()
    top1_hard = ctx.test_top1()
    ctx.tally.count_step()
    ctx.record_step(event="hard_prune", step=1, target=ctx.target, sparsity=ctx.sparsity(),
                    val_top1=val_hard, top1_hard=top1_hard, time_s=time.perf_counter() - started)
    ctx.tally.report(top1_hard=top1_hard, val_top1_hard=val_hard)
    ctx.tally.layer_columns(constraint_rows(constraints))

    def after_epoch(epoch: int, loss: float) -> None:
        top1 = ctx.test_top1()
        ctx.tally.report(**{f"top1_retrain{epoch + 1}": top1})
        ctx.record_step(event="retrain", step=1, epoch=epoch + 1, loss=loss,
                        sparsity=ctx.sparsity(), val_top1=ctx.validate(), top1=top1)

    if options.retrain_epochs > 0:
        ctx.finetune(options.retrain_epochs, options.retrain_lr or options.lr,
                     desc="masked retraining", hooks=FitHooks(after_epoch=after_epoch))


RETRAIN_FORMATS = {r"top1_hard": ("top-1 hard prune %", ".2f"),
                   r"top1_retrain(\d+)": ("top-1 +{} retrain ep. %", ".2f")}


class HardPruneMethod(ProjectionMethod):
    """What admm and slr share: one hard prune onto the sets (N:M included), then masked
    retraining, with the top-1 at the hard prune and after each retrain epoch reported."""

    one_step = True  # N:M's projection is its pattern
    summary_formats = RETRAIN_FORMATS
    headline = ("top1_hard",)  # SLR's claim: accurate at the hard prune, before retraining

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        cls.check_retraining(cfg)


@register
class Admm(HardPruneMethod):
    name = "admm"
    schema = AdmmConfig
    summary = "ADMM (Zhang et al. 2018): the constraint solver on its own, hard prune, retrain"
    quick = ("method.iterations=2", "method.retrain_epochs=1")

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        cls.check_solver(cfg)

    def run(self, ctx: Context) -> None:
        c = self.options
        constraints = admm_constraints(ctx, c)
        log.info("ADMM: %d constraint sets (%s), %d iterations x %d epochs, rho %g",
                 len(constraints), c.granularity, c.iterations, c.epochs_per_iteration, c.rho)
        admm_train(ctx, constraints, c)
        hard_prune_and_retrain(ctx, constraints, c)
