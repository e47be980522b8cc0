"""FLOPs against measured speedup for filter pruning: does the smaller model run faster, in torch
and where it is deployed (ONNX Runtime)?

For each model, the dense model and its filter-pruned, compacted copies (every sparsity × channel
multiple) are measured side by side in one process with the run's latency protocol
(`hardware.measure_latencies`: warm-up, then rounds that time one forward of each, alternating,
median per side), in torch eager and, with `--runtimes torch onnxruntime`, exported to ONNX Runtime
(`prunekit.deploy`, the CPU provider, torch's threads). A pair whose measurement is unreliable
(`hardware.latency_doubts`: a busy machine) is marked with `?` and its reasons printed. Weights are
random (speed does not depend on their values).

    python scripts/bench_speedup.py [--models resnet18 vgg16 mobilenet_v2] [--sparsity 0.3 0.5 0.7]
                                    [--multiples 1] [--runtimes torch] [--image-size 32]
                                    [--batch-sizes 1 64] [--device cpu] [--json FILE]

`sparsity` is prunekit's: the fraction of the prunable weights removed (a uniform channel ratio
per channel group, solved for the weight count; each group keeps a multiple of `multiple` of its
channels, `hardware.channel_multiple`); the table also shows that channel ratio.
"""
from __future__ import annotations

import argparse
import copy
import json
from typing import Dict, List

import torch
from omegaconf import OmegaConf

from prunekit.deploy import deployed, measure_runtime_latencies
from prunekit.hardware import Hardware, latency_doubts, measure_latencies
from prunekit.latency_config import LatencyConfig
from prunekit.metrics import count_params, layer_flops
from prunekit.models import build_model, prunable_layers, residual_blocks
from prunekit.sparsity.pruner import Pruner, PruneSpec

LATENCY = LatencyConfig()  # a run's default reliability limits


def pruned_copy(dense, shape, sparsity: float, multiple: int):
    """(compacted filter-pruned copy, its mean removed-channel ratio, compaction's max abs
    difference)."""
    example = torch.randn(1, *shape)
    model = copy.deepcopy(dense).cpu()
    p = Pruner(model, PruneSpec("filter", channel_multiple=multiple), prunable_layers(model),
               example, blocks=list(residual_blocks(model)))
    p.prune_to(sparsity)
    ratios = [float(p.groups.masked_channels(g, p.masks).float().mean()) for g in p.groups.groups]
    diff = p.compact(check_input=torch.randn(4, *shape))
    return model.eval(), sum(ratios) / len(ratios), diff


def timed(runtime: str, models: List[torch.nn.Module], shape, hw, args) -> List[Dict]:
    """Per model, {batch size: latency_stats}, all measured side by side."""
    if runtime == "torch":
        return measure_latencies(models, shape, hw, args.batch_sizes, args.warmup, args.repeats)
    calls = [deployed(m, shape, hw) for m in models]
    return measure_runtime_latencies(calls, shape, args.batch_sizes, args.warmup, args.repeats)


def measure_model(name: str, args, hw, shape) -> List[dict]:
    cfg = OmegaConf.create({"name": name, "in_channels": 3, "small_input": None})
    torch.manual_seed(0)
    dense = build_model(cfg, 10, args.image_size).eval()
    example = torch.randn(1, *shape)
    dense_flops = layer_flops(dense.cpu(), example)["__total__"]
    rows, models = [], [dense]
    for s in args.sparsity:
        for multiple in args.multiples:
            model, ratio, diff = pruned_copy(dense, shape, s, multiple)
            models.append(model)
            rows.append({"model": name, "sparsity": s, "multiple": multiple,
                         "channel_ratio": ratio, "params_x": count_params(dense) /
                         count_params(model), "compaction_max_abs_diff": diff,
                         "flops_x": dense_flops / layer_flops(model, example)["__total__"]})
    for runtime in args.runtimes:
        lat = timed(runtime, [m.to(hw.device) for m in models], shape, hw, args)
        for row, pruned in zip(rows, lat[1:]):
            for bs in args.batch_sizes:
                d, p = lat[0][bs], pruned[bs]
                row[f"{runtime}_dense_ms_bs{bs}"] = d["median_ms"]
                row[f"{runtime}_pruned_ms_bs{bs}"] = p["median_ms"]
                row[f"{runtime}_x_bs{bs}"] = d["median_ms"] / p["median_ms"]
                row[f"{runtime}_doubts_bs{bs}"] = latency_doubts(
                    d, p, row["flops_x"], True, LATENCY.max_spread, LATENCY.max_over_flops,
                    LATENCY.max_cpu_wait)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "vgg16", "mobilenet_v2"])
    ap.add_argument("--sparsity", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--multiples", nargs="+", type=int, default=[1])
    ap.add_argument("--runtimes", nargs="+", default=["torch"], choices=["torch", "onnxruntime"])
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    hw = Hardware(args.device, torch.device(args.device), None, False)
    shape = (3, args.image_size, args.image_size)
    rows = []
    for name in args.models:
        for row in measure_model(name, args, hw, shape):
            rows.append(row)
            print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.items() if "doubts" not in k), flush=True)
            for k, v in row.items():
                if "doubts" in k and v:
                    print(f"  {k.replace('_doubts_', ' ')} unreliable: {'; '.join(v)}")
    print()
    head = ["model", "sparsity", "multiple", "channels removed", "params ×", "FLOPs ×"] + [
        f"{rt} × (batch {bs})" for rt in args.runtimes for bs in args.batch_sizes]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["model"], f"{r['sparsity']:.1f}", str(r["multiple"]),
                 f"{r['channel_ratio']:.0%}", f"{r['params_x']:.2f}", f"{r['flops_x']:.2f}"] + [
            f"{r[f'{rt}_x_bs{bs}']:.2f}{'?' if r[f'{rt}_doubts_bs{bs}'] else ''}"
            + (" **slower**" if r[f"{rt}_x_bs{bs}"] < 1 else "")
            for rt in args.runtimes for bs in args.batch_sizes]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "threads": torch.get_num_threads(),
                       "image_size": args.image_size, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
