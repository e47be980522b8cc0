"""The exact cost of a model as masks leave it, in the measure a target counts (`targets`):
`weights` (sparsity), `flops`, `params`.

`Cost` counts a model the way the final measurement does, so the pruner's solvers can aim at the
reported figure: per conv/linear layer what one of its weights costs (FLOPs: 2 × its output
positions, which pruning channels never changes), whether biases and norm parameters count
(params), and what costs the same whatever is pruned (FLOPs outside conv/linear layers). Those
"other" FLOPs are taken as fixed: exact for CNNs; in a transformer, pruning heads also shrinks the
attention matmuls, which the solve does not see (the reported FLOPs are measured, not solved).
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import torch
import torch.nn as nn

from prunekit.metrics import count_params, layer_flops

LAYER_TYPES = (nn.Conv2d, nn.Linear)


class Cost:
    """One measure's exact count of a model (see the module docstring). Built on the dense model:
    `dense_total` is the reference every removed fraction is against."""

    def __init__(self, measure: str, per_weight: Dict[str, float], dense_total: float,
                 counts_params: bool = False, other: float = 0.0):
        self.measure = measure
        self.per_weight = per_weight  # conv/linear layer -> cost of one of its weights
        self.dense_total = float(dense_total)
        self.counts_params = counts_params  # biases and norm parameters count too
        self.other = float(other)  # the FLOPs outside conv/linear layers, taken as fixed

    @property
    def uniform(self) -> bool:
        """Every prunable weight costs the same (the sparsity measure): a unit count is exact."""
        return self.measure == "weights"

    @classmethod
    def weights(cls, layers: Dict[str, nn.Module]) -> "Cost":
        """The prunable layers' weights (what `sparsity` counts)."""
        return cls("weights", {n: 1.0 for n in layers},
                   sum(m.weight.numel() for m in layers.values()))

    @classmethod
    def of(cls, measure: str, model: nn.Module, example: Optional[torch.Tensor],
           prunable: Iterable[str]) -> "Cost":
        """The cost in `measure` (a target kind's: weights, flops, params) of the dense `model`;
        `example` (one input) is needed for FLOPs."""
        layers = {n: m for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)}
        return getattr(cls, f"_{measure}")(model, example, layers, prunable)

    @classmethod
    def _weights(cls, model, example, layers, prunable) -> "Cost":
        return cls.weights({n: layers[n] for n in prunable})

    @classmethod
    def _params(cls, model, example, layers, prunable) -> "Cost":
        return cls("params", {n: 1.0 for n in layers}, count_params(model), counts_params=True)

    @classmethod
    def _flops(cls, model, example, layers, prunable) -> "Cost":
        raw = layer_flops(model, example)
        per_weight = {n: raw.get(n, 0) / m.weight.numel() for n, m in layers.items()}
        other = raw["__total__"] - sum(raw.get(n, 0) for n in layers)
        return cls("flops", per_weight, raw["__total__"], other=other)

    # ------------------------------------------------------------------ counting
    @torch.no_grad()
    def total(self, model: nn.Module) -> float:
        """The model's cost now (masked weights are zero, removed ones are gone)."""
        if self.counts_params:
            return float(sum(int(torch.count_nonzero(p)) for p in model.parameters()))
        total = self.other
        for name, w in self.per_weight.items():
            total += int(torch.count_nonzero(model.get_submodule(name).weight)) * w
        return total

    def removed(self, model: nn.Module) -> float:
        """The fraction of the dense cost the model has shed."""
        return 1.0 - self.total(model) / self.dense_total

    def counts(self, name: str, norm: bool = False) -> bool:
        """Whether the layer `name` (a norm layer: `norm`) costs anything in this measure."""
        return self.counts_params or (not norm and name in self.per_weight)

    def module_cost(self, name: str, module: nn.Module, out_alive: int,
                    in_alive: Optional[int], cap: Optional[float] = None) -> float:
        """What `module` costs with `out_alive` output rows (a norm's channels) and `in_alive`
        input columns of its weight alive (None: a norm layer), and at most `cap` weights left
        (what a per-layer constraint leaves, e.g. column pruning)."""
        if in_alive is None:  # a norm layer: its affine parameters per channel
            if not self.counts_params:
                return 0.0
            per_channel = sum(p.numel() for p in module.parameters(recurse=False))
            return out_alive * per_channel / module.weight.shape[0]
        w = module.weight
        k = w[0, 0].numel()
        weights = out_alive * in_alive * k
        cost = (weights if cap is None else min(weights, cap)) * self.per_weight.get(name, 0.0)
        if self.counts_params and getattr(module, "bias", None) is not None:
            cost += out_alive
        return cost
