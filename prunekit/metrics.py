"""Size, sparsity and FLOPs of a model, measured on the model itself (masked or compacted).

- `sparsity` (prunable): 1 - sum of non-zero weights of the prunable layers / their dense count.
  Zeroed and physically removed weights both count as removed.
- `sparsity_total`: the same over every parameter of the model.
- FLOPs come from `torch.utils.flop_counter` on one image: real for a compacted model; for masked
  weights each layer's FLOPs are scaled by its weight density (a theoretical figure, since dense
  kernels still multiply the zeros).
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


@torch.no_grad()
def prunable_sparsity(model: nn.Module, dense_numel: Dict[str, int]) -> float:
    kept = sum(int(torch.count_nonzero(model.get_submodule(n).weight)) for n in dense_numel)
    return 1.0 - kept / sum(dense_numel.values())


@torch.no_grad()
def layer_flops(model: nn.Module, example: torch.Tensor) -> Dict[str, int]:
    """FLOPs of every module for one forward of `example` (batch 1), keyed by module name."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(example)
    model.train(was_training)
    prefix = type(model).__name__
    flops = {}
    for key, ops in counter.get_flop_counts().items():
        if key == prefix:
            flops[""] = sum(ops.values())
        elif key.startswith(prefix + "."):
            flops[key[len(prefix) + 1:]] = sum(ops.values())
    flops["__total__"] = counter.get_total_flops()
    return flops


@torch.no_grad()
def effective_flops(model: nn.Module, example: torch.Tensor) -> Dict[str, float]:
    """Per conv/linear layer FLOPs scaled by weight density, and the model total ('__total__')."""
    raw = layer_flops(model, example)
    out: Dict[str, float] = {}
    layer_raw = 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and name in raw:
            density = float(torch.count_nonzero(m.weight)) / m.weight.numel()
            out[name] = raw[name] * density
            layer_raw += raw[name]
    out["__total__"] = sum(out.values()) + (raw["__total__"] - layer_raw)
    return out


def layer_rows(model: nn.Module, dense_shapes: Dict[str, tuple], dense_flops: Dict[str, float],
               flops: Dict[str, float], prunable: List[str]) -> List[dict]:
    """One row per conv/linear layer for layers.csv: dense vs now, size, density, FLOPs
    (`dense_flops` and `flops` as `effective_flops` gives them), and the ratios kept of its output
    channels and FLOPs: how a method spread its budget over the layers."""
    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        dense_numel = 1
        for s in dense_shapes[name]:
            dense_numel *= s
        nonzero = int(torch.count_nonzero(m.weight))
        rows.append({
            "layer": name,
            "type": type(m).__name__,
            "prunable": name in prunable,
            "shape_dense": "x".join(map(str, dense_shapes[name])),
            "shape": "x".join(map(str, m.weight.shape)),
            "params_dense": dense_numel,
            "params": m.weight.numel(),
            "nonzero": nonzero,
            "density": nonzero / dense_numel,
            "flops_dense": int(dense_flops.get(name, 0)),
            "flops": int(flops.get(name, 0)),
            # what the allocation left of this layer: output channels, FLOPs (density: weights)
            "channels_ratio": m.weight.shape[0] / dense_shapes[name][0],
            "flops_ratio": flops.get(name, 0) / max(dense_flops.get(name, 0), 1),
        })
    return rows
