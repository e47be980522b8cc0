"""What a cost target costs the pruner: one prune to a FLOPs target against one to a weight target.

For each model and granularity/scope, the same dense model is pruned (a fresh copy each time) to
`sparsity` S of its weights and to the FLOPs reduction 1 / (1 − S), alternating, `--repeats`
times; the table gives the median seconds of each and their ratio, and the FLOPs factor reached.
A FLOPs target solves the same allocation rule on the exact FLOPs count (`sparsity.cost`), so the
difference is the counting. Weights are random (the solve does not depend on their values).

    python scripts/bench_targets.py [--models resnet18 resnet56] [--sparsity 0.5] [--repeats 5]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from omegaconf import OmegaConf

from prunekit.metrics import effective_flops
from prunekit.models import build_model, prunable_layers, residual_blocks
from prunekit.sparsity.cost import Cost
from prunekit.sparsity.pruner import Pruner, PruneSpec

SPECS = [("filter", "layerwise"), ("filter", "global"), ("unstructured", "layerwise"),
         ("unstructured", "global")]


def prune_once(dense, x, kind: str, granularity: str, scope: str, target: float):
    model = copy.deepcopy(dense)
    layers = prunable_layers(model)
    pruner = Pruner(model, PruneSpec(granularity, "l1", scope), layers, x,
                    blocks=list(residual_blocks(model)), cost=Cost.of(kind, model, x, layers))
    started = time.perf_counter()
    pruner.prune_to(target)
    return time.perf_counter() - started, model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet56"])
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.manual_seed(0)
    factor = 1.0 / (1.0 - a.sparsity)
    print(f"one prune_to: weights at sparsity {a.sparsity} vs FLOPs at {factor:g}x "
          f"(median of {a.repeats}, seconds)")
    print(f"{'model':10} {'granularity':13} {'scope':10} {'weights s':>10} {'flops s':>9} "
          f"{'ratio':>6} {'FLOPs x':>8}")
    for name in a.models:
        cfg = OmegaConf.create({"name": name, "in_channels": 3, "small_input": None})
        dense = build_model(cfg, 10, a.image_size)
        x = torch.randn(1, 3, a.image_size, a.image_size)
        dense_flops = effective_flops(dense, x)["__total__"]
        for granularity, scope in SPECS:
            times = {"sparsity": [], "flops": []}
            for _ in range(a.repeats):  # alternating, so a busier moment weighs on both
                for kind, target in (("sparsity", a.sparsity), ("flops", a.sparsity)):
                    seconds, model = prune_once(dense, x, kind, granularity, scope, target)
                    times[kind].append(seconds)
            reached = dense_flops / effective_flops(model, x)["__total__"]
            w, f = statistics.median(times["sparsity"]), statistics.median(times["flops"])
            print(f"{name:10} {granularity:13} {scope:10} {w:10.3f} {f:9.3f} {f / w:6.2f} "
                  f"{reached:8.3f}")


if __name__ == "__main__":
    main()
