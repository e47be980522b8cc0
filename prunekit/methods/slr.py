"""slr: pruning by surrogate Lagrangian relaxation (Gurevin et al. 2020), accurate at hard prune.

ADMM's split (`methods.admm`) with multipliers that move by a surrogate step size, and only when a
surrogate optimality condition (SOC1 after the W-step, SOC2 after the Z-step) says the Lagrangian
went down. The update rules, the defaults and the deliberate deviations from the reference code:
docs/methods/slr.md.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from prunekit import distributed
from prunekit.errors import at_least, positive
from prunekit.methods.admm import (
    HardPruneConfig,
    HardPruneMethod,
    PenaltySplit,
    admm_constraints,
    hard_prune_and_retrain,
    to_device,
)
from prunekit.methods.base import register
from prunekit.methods.context import Context
from prunekit.sparsity.projection import Tensors, project_all
from prunekit.train import FitHooks

log = logging.getLogger(__name__)


@dataclass
class SlrConfig(HardPruneConfig):
    """SLR's keys (Gurevin et al. 2020; defaults from the reference code); ρ stays fixed."""

    epochs: int = 10  # SLR training epochs, one multiplier update round after each
    M: float = 300.0  # α_k = 1 − 1/(M·k^(1 − 1/k^r))
    r: float = 0.1
    initial_step: float = 0.01  # s₀, the multipliers' first step size


def slr_alpha(k: int, M: float, r: float) -> float:
    """α_k = 1 − 1/(M·k^(1 − 1/k^r)): just below 1, approaching 1 − 1/(M·k) as k grows."""
    return 1.0 - 1.0 / (M * k ** (1.0 - 1.0 / k ** r))


def slr_step(s: float, alpha: float, n1: float, n2: float) -> float:
    """s_k = α_k·s_{k−1}·n1/n2; unchanged when either violation norm is 0."""
    return alpha * s * n1 / n2 if n1 > 0 and n2 > 0 else s


def _norm_sum(a: Tensors, b: Tensors) -> float:
    """Σ_i ‖a_i − b_i‖_F: per-layer Frobenius norms, summed (not one global norm)."""
    return sum(float((a[n] - b[n]).norm()) for n in a)


class SlrState(PenaltySplit):
    """ADMM's split and penalty, with SLR's conditional multiplier updates."""

    def __init__(self, model: nn.Module, constraints: Sequence, rho: float, M: float, r: float,
                 initial_step: float):
        super().__init__(model, constraints, rho)
        self.M, self.r, self.s, self.k = float(M), float(r), float(initial_step), 1
        self.W_prev: Tensors = {n: w.clone() for n, w in self._w().items()}
        self.Z_prev: Tensors = {n: z.clone() for n, z in self.Z.items()}
        self.ce_prev = math.nan  # f(W_p); the first check is forced (k = 1)
        self._ce_sum: Optional[torch.Tensor] = None
        self._batches = 0

    # ------------------------------------------------------------------ the surrogate f(W)
    def add_ce(self, ce: torch.Tensor) -> None:
        """One batch's CE, summed on the device (no host sync per step)."""
        self._ce_sum = ce.float() if self._ce_sum is None else self._ce_sum + ce.float()
        self._batches += 1

    def epoch_ce(self) -> float:
        """The mean CE of the epoch just trained, and a fresh sum for the next."""
        # the mean over every rank's batches: the surrogate checks decide alike on all ranks
        ce = (float(distributed.sum_(self._ce_sum)) / self._batches / distributed.current().size
              if self._batches else math.nan)
        self._ce_sum, self._batches = None, 0
        return ce

    # ------------------------------------------------------------------ the checks
    def lagrangian(self, ce: float, w: Tensors, z: Tensors) -> float:
        """f(W) + Σ ρ/2‖W − Z + U‖² with the current U (the −ρ/2‖U‖² term left out)."""
        return ce + 0.5 * self.rho * sum(float((w[n] - z[n] + self.U[n]).pow(2).sum())
                                         for n in w)

    def _accept(self, w: Tensors, z_step: Tensors, z_new: Tensors, ce: float) -> float:
        """An accepted check: the step size, Λ ← Λ + s(W − z_step), (W, z_new) accepted.
        Returns the α used."""
        alpha = slr_alpha(self.k, self.M, self.r)
        self.s = slr_step(self.s, alpha, _norm_sum(self.W_prev, self.Z_prev),
                          _norm_sum(w, z_step))
        self.k += 1
        for n in w:
            self.U[n] += (self.s / self.rho) * (w[n] - z_step[n])  # Λ += s(W − Z), U = Λ/ρ
        self.W_prev = {n: t.clone() for n, t in w.items()}
        self.Z_prev = {n: t.clone() for n, t in z_new.items()}
        self.ce_prev = ce
        return alpha

    @torch.no_grad()
    def update(self, ce: float) -> Dict[str, object]:
        """The end-of-epoch round: SOC1, the Z-step, SOC2. `ce` is f(W), the epoch's mean CE."""
        w = self._w()
        alpha = slr_alpha(self.k, self.M, self.r)
        soc1 = self.k == 1 or (self.lagrangian(ce, w, self.Z_prev)
                               < self.lagrangian(self.ce_prev, self.W_prev, self.Z_prev))
        if soc1:
            alpha = self._accept(w, self.Z_prev, self.Z, ce)
        z = project_all(self.constraints, {n: w[n] + self.U[n] for n in w})
        soc2 = self.lagrangian(ce, w, z) < self.lagrangian(ce, w, self.Z_prev)
        self.Z = z
        if soc2:
            alpha = self._accept(w, z, z, ce)
        self._anchor()
        return {"soc1": soc1, "soc2": soc2, "alpha": alpha, "step_size": self.s, "k": self.k,
                "primal_residual": self.primal_residual(w, z)}

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {**super().state_dict(), "W_prev": to_device(self.W_prev, "cpu"),
                "Z_prev": to_device(self.Z_prev, "cpu"), "ce_prev": self.ce_prev, "s": self.s,
                "k": self.k, "batches": self._batches,  # (a run stopped mid-epoch: its sum so far)
                "ce_sum": None if self._ce_sum is None else self._ce_sum.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.W_prev = to_device(state["W_prev"], self.device)
        self.Z_prev = to_device(state["Z_prev"], self.device)
        self.ce_prev, self.s, self.k = state["ce_prev"], state["s"], state["k"]
        ce_sum = state.get("ce_sum")
        self._ce_sum = None if ce_sum is None else ce_sum.to(self.device)
        self._batches = state.get("batches", 0)


def slr_train(ctx: Context, constraints: Sequence, options) -> SlrState:
    """`options.epochs` epochs of SLR training; one steps.csv row (event=slr) per epoch."""
    state = ctx.keep_state("slr", SlrState(ctx.model, constraints, options.rho, options.M,
                                           options.r, options.initial_step))

    def after_epoch(epoch: int, loss: float) -> None:
        ce = state.epoch_ce()
        checks = state.update(ce)
        ctx.record_step(event="slr", epoch=epoch + 1, **checks, rho=state.rho, loss=loss, ce=ce,
                        penalty=loss - ce, val_top1=ctx.validate())

    ctx.finetune(options.epochs, options.lr, desc="SLR",
                 hooks=FitHooks(loss=ctx.trainer.penalised_loss(state.penalty, on_ce=state.add_ce),
                                after_epoch=after_epoch))
    return state


@register
class Slr(HardPruneMethod):
    name = "slr"
    schema = SlrConfig
    summary = "SLR (Gurevin et al. 2020): ADMM's split, surrogate multiplier steps"
    quick = ("method.epochs=2", "method.retrain_epochs=1")

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        at_least(cfg, "method.epochs", 1, " (SLR prunes by training)")
        for key in ("M", "initial_step"):
            positive(cfg, f"method.{key}")
        at_least(cfg, "method.r", 0)

    def run(self, ctx: Context) -> None:
        c = self.options
        constraints = admm_constraints(ctx, c)
        log.info("SLR: %d constraint sets (%s), %d epochs, rho %g, s0 %g, M %g, r %g",
                 len(constraints), c.granularity, c.epochs, c.rho, c.initial_step, c.M, c.r)
        slr_train(ctx, constraints, c)
        hard_prune_and_retrain(ctx, constraints, c)
