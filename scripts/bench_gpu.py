"""GPU figures: is a filter-pruned resnet56 faster where it runs, and does training use the chip?

Carry and run on the device machine (one H200; it has torch, torchvision, pandas, rich,
scikit-learn, matplotlib, not hydra-core / omegaconf / antlr4 / torch-pruning), from the
checkout's root here:

    echo /.whl/ >> .git/info/exclude                       # once
    rm -rf .whl && pip wheel --no-deps -w .whl . hydra-core==1.3.8 omegaconf==2.3.1 \
        antlr4-python3-runtime==4.9.3 torch-pruning==1.6.1
    # the device tool's run, carry [".whl"], timeout_s 480 (the script takes under 6 minutes):
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 \
      && python3 scripts/bench_gpu.py --json $OUT/bench_gpu.json
    # back here, the figures into docs/benchmarks.md's GPU section:
    python scripts/bench_gpu.py --from-json <files_at>/bench_gpu.json --doc docs/benchmarks.md

`--smoke` runs the same code on CPU in seconds (CI runs it: tests/test_bench_gpu.py).

What it measures, every comparison side by side in one process:
1. Latency of dense resnet56 (28 px, 1 channel, 10 classes: Fashion-MNIST's shape) and of its
   filter-pruned, compacted copies at ratio 0.7 (the standard pipeline's `experiment=ice_baseline`
   shapes: ceil(0.7 C) filters of every block's inner conv removed by L1 norm), with channel
   multiple 1 and 8; eager and CUDA-graphed, at batch 1 and 256 (`hardware.measure_latencies`, the
   run's protocol, the three models in alternating rounds). Weights are random: speed does not
   depend on their values, and the shapes are the pipeline's.
2. Per-layer timings at batch 256: each distinct conv of the dense and the ×8-pruned model timed
   alone, so a missed target shows where the time goes.
3. Training images/s at batch 256: a plain PyTorch loop and prunekit's `Trainer.fit`, eager and
   under each `--compile-modes` mode, on the dense model, and prunekit's on the ×8-pruned one.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import re
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
from benchutil import alternate, plain_epoch
from omegaconf import OmegaConf

from prunekit.config import TrainConfig
from prunekit.files import atomic_write_text
from prunekit.hardware import Hardware, measure_latencies, measure_latency
from prunekit.metrics import count_params, layer_flops
from prunekit.models import build_model, prunable_layers, residual_blocks
from prunekit.sparsity.cost import Cost
from prunekit.sparsity.pruner import Pruner, PruneSpec
from prunekit.train import Trainer

BEGIN, END = "<!-- bench_gpu -->", "<!-- /bench_gpu -->"


class Batches:
    """The same in-memory batches every epoch (both loops see identical data at no data cost),
    with the example input a compiled Trainer compiles ahead on."""

    def __init__(self, batches):
        self.train = batches

    def example_input(self, n: int) -> torch.Tensor:
        return self.train[0][0][:n]


def pruned_copy(dense: nn.Module, example: torch.Tensor, ratio: float, multiple: int,
                flops_x: Optional[float] = None):
    """The standard pipeline's result shapes: block by block, ceil(ratio · C) of each block's
    inner filters removed by L1 norm (a multiple of `multiple` kept), then compacted. With
    `flops_x`, the ratio is the one that reaches that FLOPs reduction (the pipeline's
    `target.kind=flops` solve), so a channel multiple is compared at equal FLOPs too."""
    model = copy.deepcopy(dense).cpu()
    layers = prunable_layers(model, prune_first_conv=False, prune_classifier=False)
    p = Pruner(model, PruneSpec("filter", "l1", channel_multiple=multiple), layers,
               example[:1].cpu(), blocks=list(residual_blocks(model)),
               cost=Cost.of("flops", model, example[:1].cpu(), layers))
    if flops_x is not None:
        ratio = p.planner.block_ratio(p.order.blockwise_groups(), 1.0 - 1.0 / flops_x)
    for _, groups in p.order.steps_in_order():
        p.prune_groups(groups, ratio)
    diff = p.compact(check_input=example.cpu())
    return model, diff, ratio


def conv_shapes(model: nn.Module) -> "OrderedDict[str, tuple]":
    return OrderedDict((n, tuple(m.weight.shape)) for n, m in model.named_modules()
                       if isinstance(m, nn.Conv2d))


def latency_section(models: dict, shape: tuple, hw: Hardware, batch_sizes, warmup: int,
                    repeats: int, modes) -> dict:
    """{mode: {name: {bs: median ms}}} of every model, timed side by side."""
    out = {}
    for mode in modes:
        res = measure_latencies(list(models.values()), shape, hw, batch_sizes, warmup, repeats,
                                graphed=mode == "graphed")
        out[mode] = {name: {str(bs): r[bs]["median_ms"] for bs in batch_sizes}
                     for name, r in zip(models, res)}
        for bs in batch_sizes:
            print(f"latency {mode:7s} bs {bs:4d}: " + "  ".join(
                f"{n} {out[mode][n][str(bs)]:.3f} ms" for n in models), flush=True)
    return out


def layer_section(dense: nn.Module, pruned: nn.Module, example: torch.Tensor, hw: Hardware,
                  batch: int, warmup: int, repeats: int) -> list:
    """Each distinct conv (dense shape, pruned shape, input size) timed alone at `batch`: how
    many there are, and milliseconds each, dense and pruned."""
    inputs = {}

    def grab(model):
        def hook(name):
            def record(module, args, output):
                inputs[(id(model), name)] = tuple(args[0].shape[1:])
            return record
        hooks = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
                 if isinstance(m, nn.Conv2d)]
        with torch.no_grad(), hw.autocast():
            model.eval()(example.to(hw.device))
        for h in hooks:
            h.remove()

    grab(dense), grab(pruned)
    classes = OrderedDict()
    for name, dshape in conv_shapes(dense).items():
        pshape = tuple(pruned.get_submodule(name).weight.shape)
        key = (dshape, pshape, inputs[(id(dense), name)], inputs[(id(pruned), name)])
        classes.setdefault(key, []).append(name)
    rows = []
    for (dshape, pshape, din, pin), names in classes.items():
        d = measure_latency(dense.get_submodule(names[0]), din, hw, [batch], warmup, repeats)
        p = measure_latency(pruned.get_submodule(names[0]), pin, hw, [batch], warmup, repeats)
        rows.append({"example": names[0], "count": len(names), "dense": list(dshape),
                     "pruned": list(pshape), "input": list(din),
                     "dense_ms": d[batch]["median_ms"], "pruned_ms": p[batch]["median_ms"]})
    return rows


def plain_loop(model: nn.Module, batches, hw: Hardware, mode) -> callable:
    """A minimal hand-written loop (benchutil.plain_epoch) under torch.compile's `mode` unless
    None: returns a function timing one epoch, per step."""
    net = model if mode is None else torch.compile(model, mode=mode)
    graphs = mode in ("reduce-overhead", "max-autotune") and hw.is_cuda
    return lambda: plain_epoch(model, net, batches, hw, graphs)


def prunekit_loop(model: nn.Module, data: Batches, hw: Hardware, batch: int) -> callable:
    train_cfg = OmegaConf.structured(TrainConfig(batch_size=batch, lr_schedule="cosine",
                                                 progress=True))
    trainer = Trainer(data, train_cfg, hw, progress=True)

    def epoch() -> float:
        hw.sync()
        t0 = time.perf_counter()
        with trainer:
            trainer.fit(model, 1, 1e-3, desc="bench")
        hw.sync()
        return (time.perf_counter() - t0) / len(data.train)
    return epoch


def train_section(dense: nn.Module, pruned: nn.Module, hw: Hardware, batch: int, size: int,
                  steps: int, rounds: int, compile_modes, deadline: float) -> dict:
    """Images/s of the plain and the prunekit loop, eager and compiled, dense; and prunekit's on
    the pruned model. Compiling is timed apart (`compile_s`); a mode that would pass the
    deadline is skipped and said so."""
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if hw.channels_last else torch.contiguous_format
    batches = [(torch.randn(batch, 1, size, size, generator=gen).to(hw.device, memory_format=fmt),
                torch.randint(0, 10, (batch,), generator=gen).to(hw.device))
               for _ in range(steps)]
    data = Batches(batches)
    out = {}
    for mode in [None, *compile_modes]:
        label = mode or "eager"
        if time.perf_counter() > deadline:
            out[label] = {"skipped": "the time budget was spent"}
            print(f"train {label}: skipped (time budget)", flush=True)
            continue
        mhw = dataclasses.replace(hw, compile=mode is not None, compile_mode=mode or "default")
        torch._dynamo.reset()
        plain_model, kit_model, kit_pruned = (copy.deepcopy(m) for m in (dense, dense, pruned))
        plain = plain_loop(plain_model, batches, mhw, mode)
        kit, kit_small = (prunekit_loop(m, data, mhw, batch) for m in (kit_model, kit_pruned))
        t0 = time.perf_counter()
        plain(), kit(), kit_small()  # warm-up: cuDNN's choices, and the compiles
        compile_s = time.perf_counter() - t0
        t_plain, t_kit = alternate(rounds, plain, kit)
        t_dense, t_small = alternate(rounds, kit, kit_small)
        out[label] = {"plain_images_s": batch / t_plain, "prunekit_images_s": batch / t_kit,
                      "loop_vs_plain": t_plain / t_kit,
                      "pruned_images_s": batch / t_small, "pruned_step_speedup": t_dense / t_small,
                      "warmup_and_compile_s": compile_s}
        print(f"train {label}: " + "  ".join(f"{k} {v:.4g}" for k, v in out[label].items()),
              flush=True)
    return out


def measure(args) -> dict:
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    hw = Hardware(args.device, device, torch.bfloat16 if on_cuda else None, on_cuda)
    if on_cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    started = time.perf_counter()
    deadline = started + args.budget_s
    torch.manual_seed(0)
    cfg = OmegaConf.create({"name": args.model, "in_channels": 1, "small_input": None})
    dense = build_model(cfg, 10, args.image_size)
    example = torch.randn(2, 1, args.image_size, args.image_size)
    flops = layer_flops(dense, example[:1])["__total__"]
    pruned, info = OrderedDict(), {}
    for name, multiple, at_flops in (("pruned_x1", 1, None), ("pruned_x8", 8, None),
                                     ("pruned_x8_same_flops", 8, "pruned_x1")):
        flops_x = info[at_flops]["flops_x"] if at_flops else None
        model, diff, used = pruned_copy(dense, example, args.ratio, multiple, flops_x)
        pruned[name] = model
        info[name] = {
            "multiple": multiple, "ratio": used,
            "flops_x": flops / layer_flops(model, example[:1])["__total__"],
            "params_x": count_params(dense) / count_params(model),
            "kept": sorted({s[0] for n, s in conv_shapes(model).items()
                            if s[0] != conv_shapes(dense)[n][0]}),
            "compaction_max_abs_diff": diff}
    models = OrderedDict(dense=hw.prepare(dense).eval(),
                         **{k: hw.prepare(m).eval() for k, m in pruned.items()})
    out = {"device": torch.cuda.get_device_name(device) if on_cuda else platform.processor()
           or "cpu", "torch": torch.__version__, "model": args.model,
           "image_size": args.image_size, "ratio": args.ratio, "batch": args.batch,
           "precision": "bf16 autocast, channels_last" if on_cuda else "fp32", "smoke": args.smoke,
           "models": info}
    modes = ("eager", "graphed") if on_cuda else ("eager",)
    out["latency"] = latency_section(models, (1, args.image_size, args.image_size), hw,
                                     [1, args.batch], args.warmup, args.repeats, modes)
    out["layers"] = layer_section(models["dense"], models["pruned_x8"], example, hw, args.batch,
                                  args.warmup, args.repeats)
    out["train"] = train_section(models["dense"], models["pruned_x8"], hw, args.batch,
                                 args.image_size, args.steps, args.rounds, args.compile_modes,
                                 deadline)
    out["wall_s"] = time.perf_counter() - started
    return out


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×"


def markdown(r: dict) -> str:
    """docs/benchmarks.md's GPU section from the results."""
    bs = [k for k in r["latency"]["eager"]["dense"]]
    lines = [BEGIN, f"Measured with `python scripts/bench_gpu.py` on {r['device']}, torch "
             f"{r['torch']}, {r['precision']}, in {r['wall_s']:.0f} s"
             + (" (`--smoke`: a CPU smoke run, not a GPU figure)" if r["smoke"] else "") + ".",
             "", f"**Latency**: {r['model']} at {r['image_size']} px, filter ratio {r['ratio']} "
             "(the standard pipeline's shapes), the models side by side; speedup = dense "
             "ms / pruned ms.", "",
             "| model | block ratio | FLOPs × | params × | kept inner widths | "
             + " | ".join(f"{m} bs {b} ms (speedup)" for m in r["latency"] for b in bs) + " |",
             "|---|---|---|---|---|" + "---|" * (len(r["latency"]) * len(bs))]
    for name in r["latency"]["eager"]:
        m = r["models"].get(name, {"ratio": 0.0, "flops_x": 1.0, "params_x": 1.0, "kept": []})
        cells = [name, f"{m['ratio']:.3f}", f"{m['flops_x']:.2f}", f"{m['params_x']:.2f}",
                 ", ".join(map(str, m["kept"])) or "16, 32, 64 (dense)"]
        for mode, table in r["latency"].items():
            for b in bs:
                ms = table[name][b]
                cells.append(f"{ms:.3f}" + ("" if name == "dense" else
                                           f" ({ratio(table['dense'][b], ms)})"))
        lines.append("| " + " | ".join(cells) + " |")
    batch = r["batch"]
    lines += ["", f"**Per layer** (batch {batch}, eager, each conv alone; ×8-pruned model):", "",
              "| conv (first of its kind) | count | input | dense weight | pruned weight "
              "| dense ms | pruned ms | speedup |", "|---|---|---|---|---|---|---|---|"]
    for row in r["layers"]:
        lines.append(f"| `{row['example']}` | {row['count']} | {'×'.join(map(str, row['input']))} "
                     f"| {'×'.join(map(str, row['dense']))} | {'×'.join(map(str, row['pruned']))} "
                     f"| {row['dense_ms']:.3f} | {row['pruned_ms']:.3f} "
                     f"| {ratio(row['dense_ms'], row['pruned_ms'])} |")
    total_d = sum(x["count"] * x["dense_ms"] for x in r["layers"])
    total_p = sum(x["count"] * x["pruned_ms"] for x in r["layers"])
    lines += [f"| all convs | {sum(x['count'] for x in r['layers'])} | | | | {total_d:.3f} | "
              f"{total_p:.3f} | {ratio(total_d, total_p)} |", ""]
    eager = r["train"].get("eager", {})
    lines += [f"**Training** at batch {batch} (images/s; loop_vs_plain = prunekit's Trainer.fit "
              "over a plain loop, target ≥ 0.97; speedup over today's eager loop = prunekit "
              "images/s over the eager prunekit's):", "",
              "| mode | plain images/s | prunekit images/s | loop vs plain | × eager prunekit | "
              "×8-pruned images/s | pruned step speedup | warm-up + compile s |",
              "|---|---|---|---|---|---|---|---|"]
    for mode, t in r["train"].items():
        if "skipped" in t:
            lines.append(f"| {mode} | {t['skipped']} | | | | | | |")
            continue
        lines.append(f"| {mode} | {t['plain_images_s']:.0f} | {t['prunekit_images_s']:.0f} | "
                     f"{t['loop_vs_plain']:.3f} | "
                     f"{t['prunekit_images_s'] / eager['prunekit_images_s']:.2f}× | "
                     f"{t['pruned_images_s']:.0f} | {t['pruned_step_speedup']:.2f}× | "
                     f"{t['warmup_and_compile_s']:.1f} |")
    lines.append(END)
    return "\n".join(lines)


def write_doc(path: Path, section: str) -> None:
    """Replace the section between the markers (appending it, under a heading, if absent)."""
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text,
                      flags=re.S)
    else:
        text = text.rstrip() + "\n\n## On the GPU (`scripts/bench_gpu.py`)\n\n" + section + "\n"
    atomic_write_text(path, text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny: the same code in seconds")
    ap.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--ratio", type=float, default=0.7)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--steps", type=int, default=30, help="training steps per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile-modes", nargs="*", default=["default", "reduce-overhead"])
    ap.add_argument("--budget-s", type=float, default=200.0,
                    help="no compile mode is started after this many seconds")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--from-json", default=None, help="no measuring: these results")
    ap.add_argument("--doc", default=None, help="write the GPU section of this markdown file")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device = args.device or "cpu"
        args.model, args.image_size, args.batch = "resnet20", 8, 8
        args.warmup, args.repeats, args.steps, args.rounds = 1, 3, 2, 1
        args.compile_modes = [] if "--compile-modes" not in (argv or sys.argv) \
            else args.compile_modes
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    else:
        results = measure(args)
        if args.json:
            atomic_write_text(Path(args.json), json.dumps(results, indent=2))
    section = markdown(results)
    print(section)
    if args.doc:
        write_doc(Path(args.doc), section)


if __name__ == "__main__":
    main()
