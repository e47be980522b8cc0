"""admm: structured or unstructured pruning by ADMM (Zhang et al. 2018), the solver on its own.

Pruning is posed as min f(W) s.t. W_i ∈ S_i per layer and split with Z_i = W_i. Each ADMM
iteration:

1. W-step: train `epochs_per_iteration` epochs on f(W) + Σ ρ/2‖W_i − Z_i + U_i‖²_F (the squared
   Frobenius norm, in the loss);
2. Z-step: Z_i ← Π_{S_i}(W_i + U_i), the exact Euclidean projection (`sparsity.projection`);
3. U-step: U_i ← U_i + W_i − Z_i.

Z⁰ = Π(W⁰), U⁰ = 0. ρ may grow by `rho_growth` per iteration up to `rho_max`; U is the scaled
dual Λ/ρ, so it is rescaled by ρ_old/ρ_new when ρ changes (Boyd et al. 2011, §3.4.1), which keeps
the multipliers Λ unchanged. After `iterations`, W is hard-pruned onto the sets (mask from W,
exact top-k, as both reference codes do; Z differs from W), `top1_hard` is measured, and the
model is retrained with its masks for `retrain_epochs` with a fresh optimiser.

One `fit` covers all W-steps, so the optimiser's momentum and LR schedule run across the ADMM
iterations as in a single training run; Z/U are updated between epochs (`on_epoch_end`).

Sets, per `granularity` (groups always ranked by L2 norm, which is what makes Π exact):
`unstructured`, `channel`, `column`, `nm` per layer; `filter` per channel group (coupled filters
across residual adds are one structure), with per-group counts from the pruner's filter plan so
`sparsity` means what it means for every other method. `layer_rates` ("layer or glob:rate" items)
overrides the rate of the layers (filter: groups, by root layer) it names:
`method.layer_rates=[layer4.*:0.95]`.

Not copied from NNI (see the reference notes): v2's square-root norm penalty, v1's fixed direct
step without the loss term, Z⁰ aliasing W, and the L1 ranking that is not the exact projection.
"""
from __future__ import annotations

import fnmatch
import logging
import math
import time
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
from omegaconf import DictConfig

from prunekit.config import ConfigError, parse_layer_rates
from prunekit.methods.base import Context, Method, register
from prunekit.sparsity.projection import (FilterConstraint, LayerConstraint, Tensors, hard_prune,
                                          project_all)

log = logging.getLogger(__name__)


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


def admm_train(ctx: Context, constraints: Sequence, cfg: DictConfig, desc: str = "ADMM",
               **row) -> AdmmState:
    """`cfg.iterations` ADMM iterations of `cfg.epochs_per_iteration` epochs each toward the
    constraint sets; one steps.csv row (event=admm) per iteration."""
    state = AdmmState(ctx.model, constraints, cfg.rho)
    ctx.stateful["admm"] = state  # checkpointed with the run, so a resumed ADMM goes on from it
    per = cfg.epochs_per_iteration

    def on_epoch_end(epoch: int, loss: float) -> None:
        if (epoch + 1) % per:
            return
        k = (epoch + 1) // per
        residuals = state.update()
        ctx.record_step(event="admm", **row, iteration=k, rho=state.rho, loss=loss, **residuals,
                        val_top1=ctx.validate())
        state.set_rho(min(state.rho * cfg.rho_growth, cfg.rho_max))

    ctx.finetune(cfg.iterations * per, cfg.lr, desc=desc,
                 loss_fn=ctx.trainer.penalised_loss(state.penalty), on_epoch_end=on_epoch_end)
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


def admm_constraints(ctx: Context, cfg: DictConfig) -> List:
    """The constraint set of every layer (filter: every channel group) for `method=admm`."""
    pruner, g = ctx.pruner, cfg.granularity
    if g == "filter":
        groups = pruner.groups.groups
        rates = layer_rate_patterns(parse_layer_rates(cfg.layer_rates),
                                    [grp.root for grp in groups])
        plan = pruner.filter_plan(ctx.target)
        return [FilterConstraint(grp, min(round(rates[grp.root] * grp.dense_size), grp.size - 1)
                                 if grp.root in rates else len(plan[gi]))
                for gi, grp in enumerate(groups)]
    names = pruner.unit_layers(g)
    rates = layer_rate_patterns(parse_layer_rates(cfg.layer_rates), names)
    return [LayerConstraint.for_rate(pruner.weight(n), n, g, rates.get(n, ctx.target),
                                     pruner.dense_numel[n], tuple(cfg.nm)) for n in names]


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


def hard_prune_and_retrain(ctx: Context, constraints: Sequence, cfg: DictConfig) -> None:
    """What ADMM and SLR do after their training: hard-prune W onto the sets (mask from W, exact
    top-k), compact filters, measure `top1_hard` (test, for reporting) and `val_top1_hard`, then
    retrain with the masks for `cfg.retrain_epochs` with a fresh optimiser; after every retrain
    epoch its val top-1 and, for reporting, its test top-1 (`top1_retrain{e}`)."""
    started = time.perf_counter()

    def prune() -> None:
        with ctx.clock.phase("prune"):
            hard_prune(constraints, ctx.pruner)

    ctx.op(prune)
    ctx.compact()
    val_hard = ctx.validate()
    top1_hard = ctx.test_top1()
    ctx.steps += 1
    ctx.record_step(event="hard_prune", step=1, target=ctx.target, sparsity=ctx.sparsity(),
                    val_top1=val_hard, top1_hard=top1_hard, time_s=time.perf_counter() - started)
    ctx.results.update(top1_hard=top1_hard, val_top1_hard=val_hard)
    ctx.layer_info = constraint_rows(constraints)

    def on_epoch_end(epoch: int, loss: float) -> None:
        top1 = ctx.test_top1()
        ctx.results[f"top1_retrain{epoch + 1}"] = top1
        ctx.record_step(event="retrain", step=1, epoch=epoch + 1, loss=loss,
                        sparsity=ctx.sparsity(), val_top1=ctx.validate(), top1=top1)

    if cfg.retrain_epochs > 0:
        ctx.finetune(cfg.retrain_epochs, cfg.retrain_lr or cfg.lr, desc="masked retraining",
                     on_epoch_end=on_epoch_end)


@register
class Admm(Method):
    name = "admm"

    def run(self, ctx: Context) -> None:
        c = self.cfg
        constraints = admm_constraints(ctx, c)
        log.info("ADMM: %d constraint sets (%s), %d iterations x %d epochs, rho %g",
                 len(constraints), c.granularity, c.iterations, c.epochs_per_iteration, c.rho)
        admm_train(ctx, constraints, c)
        hard_prune_and_retrain(ctx, constraints, c)
