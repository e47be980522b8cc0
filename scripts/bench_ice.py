"""ICE-Pruning against the standard pipeline, side by side in one process, from one dense model.

For every ratio it runs on the same cached dense model and the same data, in two settings:
  - `paper`: experiment=ice_baseline (one block per step, L1 filters at the ratio, one fine-tune
    epoch at a constant 1e-3 after every block) against experiment=ice_paper (ICE with auto-tuning
    and distillation, the same training settings);
  - `defaults`: method=iterative against method=ice, both with their defaults (what
    `prune-run -m method=ice,iterative` compares);
and prints accuracy, size, pruning time and the ratios: baseline time / ICE time and the top-1
gap. Pruning time is the whole method (tuning, probe, validations, fine-tunes); dense training
is done once, cached, and never counted.

    python scripts/bench_ice.py                                   # resnet18, digits, ratio 0.5
    python scripts/bench_ice.py --setting paper --model resnet56 --dataset cifar10 \
        --ratios 0.6 0.7 0.8 -- pretrain.epochs=160
    python scripts/bench_ice.py --json out.json --ice method.autotune.trials=3
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict

from hydra import compose, initialize_config_module
from rich.console import Console
from rich.table import Table

import prunekit  # noqa: F401  (registers the config schemas)
from prunekit.runner import run

KEYS = ("top1_dense", "top1", "delta_top1", "sparsity", "params", "params_dense",
        "theoretical_speedup", "measured_speedup", "time_total_s", "time_search_s",
        "time_prune_s", "time_finetune_s", "time_eval_s", "steps", "finetune_count",
        "finetune_epochs", "ice_knobs")


SETTINGS = {  # setting -> (baseline overrides, ICE overrides)
    "paper": (["experiment=ice_baseline"], ["experiment=ice_paper"]),
    "defaults": (["method=iterative"], ["method=ice"]),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setting", choices=["paper", "defaults", "both"], default="both")
    ap.add_argument("--ice", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides for the ICE runs only")
    ap.add_argument("--out", default="outputs/bench_ice", help="run directories go here")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("overrides", nargs="*", help="prune-run overrides for every run (after --)")
    args = ap.parse_args(argv)

    console = Console(width=max(150, Console().width))  # the table is wide; keep it whole in logs
    common = [f"model={args.model}", f"dataset={args.dataset}", f"seed={args.seed}",
              "train.progress=false", *args.overrides]
    settings = list(SETTINGS) if args.setting == "both" else [args.setting]
    results = []
    for ratio in args.ratios:
        for setting in settings:
            for role, extra in zip(("baseline", "ice"), SETTINGS[setting]):
                overrides = [*extra, *common, f"sparsity={ratio}"]
                if role == "ice":
                    overrides += args.ice
                with initialize_config_module("prunekit.conf", version_base="1.3"):
                    cfg = compose("config", overrides=overrides)
                out_dir = Path(args.out) / f"{setting}_{role}_{ratio}"
                console.print(f"[bold]{setting} · {role}[/] ratio {ratio}: {' '.join(overrides)}")
                s = run(cfg, out_dir, show=False)
                results.append({"setting": setting, "role": role, "ratio": ratio,
                                "run_dir": str(out_dir), **{k: s.get(k) for k in KEYS}})

    table = Table(title=f"ICE vs the standard pipeline · {args.model} · {args.dataset}")
    for col in ("ratio", "setting", "method", "top-1", "Δ dense", "sparsity", "FLOPs ×",
                "time s", "search s", "fine-tunes", "baseline time / time", "top-1 − baseline"):
        table.add_column(col, justify="right")
    ratios: Dict[str, dict] = {}
    for r in results:
        base = next(b for b in results if b["ratio"] == r["ratio"]
                    and b["setting"] == r["setting"] and b["role"] == "baseline")
        speed = base["time_total_s"] / r["time_total_s"]
        gap = r["top1"] - base["top1"]
        if r["role"] == "ice":
            ratios[f"{r['setting']}_{r['ratio']:g}"] = {"time_ratio": speed, "top1_gap": gap}
        table.add_row(f"{r['ratio']:g}", r["setting"],
                      "ice" if r["role"] == "ice" else "iterative", f"{r['top1']:.2f}",
                      f"{r['delta_top1']:+.2f}", f"{r['sparsity']:.3f}",
                      f"{r['theoretical_speedup']:.2f}", f"{r['time_total_s']:.1f}",
                      f"{r['time_search_s']:.1f}", f"{r['finetune_count']}/{r['steps']}",
                      f"{speed:.2f}×", f"{gap:+.2f}")
    console.print(table)
    for key, v in ratios.items():
        console.print(f"{key}: ICE {v['time_ratio']:.2f}× faster than the standard pipeline, "
                      f"top-1 {v['top1_gap']:+.2f} points")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
