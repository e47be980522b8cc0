"""FLOPs against measured speedup for filter pruning: does the smaller model run faster?

For each model and target, the dense model and its filter-pruned, compacted copy are measured side
by side in one process with the run's latency protocol (`hardware.measure_latencies`: warm-up,
then rounds that time one forward of each, alternating, median per side). A pair whose measurement
is unreliable (`hardware.latency_doubts`: a busy machine) is marked with `?` and its reasons
printed. Weights are random (speed does not depend on their values).

    python scripts/bench_speedup.py [--models resnet18 vgg16 mobilenet_v2] [--sparsity 0.3 0.5 0.7]
                                    [--image-size 32] [--batch-sizes 1 64] [--device cpu]

`sparsity` is prunekit's: the fraction of the prunable weights removed (a uniform channel ratio
per channel group, solved for the weight count); the table also shows that channel ratio.
"""
from __future__ import annotations

import argparse
import copy
import json

import torch
from omegaconf import OmegaConf

from prunekit.latency_config import LatencyConfig
from prunekit.hardware import Hardware, latency_doubts, measure_latencies
from prunekit.metrics import count_params, layer_flops
from prunekit.models import build_model, prunable_layers, residual_blocks
from prunekit.sparsity.pruner import Pruner, PruneSpec

LATENCY = LatencyConfig()  # a run's default reliability limits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "vgg16", "mobilenet_v2"])
    ap.add_argument("--sparsity", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    hw = Hardware(args.device, device, None, False)
    shape = (3, args.image_size, args.image_size)
    example = torch.randn(1, *shape)
    rows = []
    for name in args.models:
        cfg = OmegaConf.create({"name": name, "in_channels": 3, "small_input": None})
        torch.manual_seed(0)
        dense = build_model(cfg, 10, args.image_size).eval()
        dense_flops = layer_flops(dense.cpu(), example)["__total__"]
        for s in args.sparsity:
            model = copy.deepcopy(dense).cpu()
            p = Pruner(model, PruneSpec("filter"), prunable_layers(model), example,
                       blocks=list(residual_blocks(model)))
            p.prune_to(s)
            ratios = [float(p.groups.masked_channels(g, p.masks).float().mean())
                      for g in p.groups.groups]
            diff = p.compact(check_input=torch.randn(4, *shape))
            dense_lat, lat = measure_latencies([dense.to(device), model.eval().to(device)], shape,
                                               hw, args.batch_sizes, args.warmup, args.repeats)
            row = {"model": name, "sparsity": s,
                   "channel_ratio": sum(ratios) / len(ratios),
                   "params_x": count_params(dense) / count_params(model),
                   "flops_x": dense_flops / layer_flops(model.cpu(), example)["__total__"],
                   "compaction_max_abs_diff": diff}
            for bs in args.batch_sizes:
                row[f"dense_ms_bs{bs}"] = dense_lat[bs]["median_ms"]
                row[f"pruned_ms_bs{bs}"] = lat[bs]["median_ms"]
                row[f"measured_x_bs{bs}"] = dense_lat[bs]["median_ms"] / lat[bs]["median_ms"]
                row[f"doubts_bs{bs}"] = latency_doubts(
                    dense_lat[bs], lat[bs], row["flops_x"], True, LATENCY.max_spread,
                    LATENCY.max_over_flops, LATENCY.max_cpu_wait)
            rows.append(row)
            print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.items() if not k.startswith("doubts")), flush=True)
            for bs in args.batch_sizes:
                if row[f"doubts_bs{bs}"]:
                    print(f"  batch {bs} unreliable: {'; '.join(row[f'doubts_bs{bs}'])}")
    print()
    head = ["model", "sparsity", "channels removed", "params ×", "FLOPs ×"] + [
        f"measured × (batch {bs})" for bs in args.batch_sizes]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["model"], f"{r['sparsity']:.1f}", f"{r['channel_ratio']:.0%}",
                 f"{r['params_x']:.2f}", f"{r['flops_x']:.2f}"] + [
            f"{r[f'measured_x_bs{bs}']:.2f}{'?' if r[f'doubts_bs{bs}'] else ''}"
            for bs in args.batch_sizes]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "threads": torch.get_num_threads(),
                       "image_size": args.image_size, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
