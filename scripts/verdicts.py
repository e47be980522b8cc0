"""Each seed paper's headline claim measured on Fashion-MNIST, with a verdict: docs/results.md.

Four comparisons, each side by side in this process from one cached dense model per architecture
(dense training is timed and reported apart from them):
  1. ICE-Pruning (experiment=ice_paper) vs the paper's standard pipeline (experiment=ice_baseline):
     pruning-time ratio, top-1 gap, fine-tunes / steps, time by phase, the tuning trials' spread;
  2. SLR vs ADMM at 0.9 unstructured, same epochs: top-1 at the hard prune and after 1 retrain
     epoch;
  3. AutoCompress vs ADMM and iterative filter pruning at >= 10x fewer parameters;
  4. gradual (AGP) vs one-shot and iterative at 0.9 unstructured, equal epoch budgets.

    python scripts/verdicts.py                  # the CPU tier (make verdicts): under 1 h on 2 cores
    python scripts/verdicts.py --full           # the GPU tier: paper-scale networks and epochs
    python scripts/verdicts.py --render         # rewrite the docs from the last results.json

Every run's summary lands in OUT/results.json as soon as it ends, so --render can rebuild the
documents; the figures are only ever those of the runs recorded there.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from hydra import compose, initialize_config_module
from rich.console import Console

import prunekit  # noqa: F401  (registers the config schemas)
from prunekit.files import atomic_write_text
from prunekit.runner import run

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = Console()


# --------------------------------------------------------------------------- the tiers
@dataclass
class Comparison:
    key: str
    title: str
    model: str
    runs: List[Tuple[str, List[str]]]  # (label, overrides); the first is the reference side
    why: str  # what was chosen and why, for the document


@dataclass
class Tier:
    name: str
    common: List[str]  # every run: data set, image size, dense recipe, hardware
    comparisons: List[Comparison]
    budget: str  # the time it is sized for
    notes: List[str] = field(default_factory=list)

    @property
    def models(self) -> List[str]:
        return list(dict.fromkeys(c.model for c in self.comparisons))


NO_LATENCY = ["hardware.latency.enabled=false"]  # masked models: dense kernels, no speedup to time


@dataclass
class Budget:
    """What one tier spends per comparison; the four comparisons are built from it alike."""

    ice_model: str
    model: str  # SLR, AutoCompress and AGP
    ice_ratio: float = 0.7  # the middle of the paper's 0.6 / 0.7 / 0.8
    slr_epochs: int = 3  # SLR epochs = ADMM iterations (one epoch each), then 1 retrain epoch
    filter_sparsity: float = 0.93  # of the prunable weights: >= 10x fewer parameters
    filter_epochs: int = 4  # even: iterative E x 1; ADMM E-1 + 1 retrain; AC E/2 x (1 + 1)
    agp_epochs: int = 2
    ice_extra: List[str] = field(default_factory=list)  # overrides for the ICE side only
    agp_extra: List[str] = field(default_factory=list)  # overrides for the AGP run only


def comparisons(b: Budget) -> List[Comparison]:
    ratio, e, sp = b.ice_ratio, b.filter_epochs, b.filter_sparsity
    return [
        Comparison(
            "ice", "ICE-Pruning vs the standard pipeline", b.ice_model,
            [("standard pipeline", ["experiment=ice_baseline", f"sparsity={ratio}"]),
             ("ICE-Pruning", ["experiment=ice_paper", f"sparsity={ratio}",
                              "method.autotune.reference_trial=true", *b.ice_extra])],
            f"ratio {ratio:g} (the paper's ratios are 0.6/0.7/0.8), the paper's trial fraction (2 %"
            " of train, 4 % of val per trial, 6 trials), the whole train split for the final "
            "run, distillation at T = 2 as in its ResNet runs."),
        Comparison(
            "slr", "SLR vs ADMM at 0.9 unstructured", b.model,
            [("ADMM", ["method=admm", "sparsity=0.9", f"method.iterations={b.slr_epochs}",
                       "method.retrain_epochs=1", *NO_LATENCY]),
             ("SLR", ["method=slr", "sparsity=0.9", f"method.epochs={b.slr_epochs}",
                      "method.retrain_epochs=1", *NO_LATENCY])],
            f"{b.slr_epochs} epochs of ADMM (one Z/U update per epoch) against {b.slr_epochs} "
            "epochs of SLR, each then hard-pruned and retrained 1 epoch with the mask fixed."),
        Comparison(
            "autocompress", "AutoCompress vs ADMM and iterative filter pruning", b.model,
            [("iterative (filter)", ["method=iterative", "method.granularity=filter",
                                     f"sparsity={sp}", f"method.steps={e}",
                                     "method.finetune_epochs=1"]),
             ("ADMM (filter)", ["method=admm", "method.granularity=filter", f"sparsity={sp}",
                                f"method.iterations={e - 1}", "method.retrain_epochs=1"]),
             ("AutoCompress", ["method=autocompress", f"sparsity={sp}",
                               f"method.rounds={e // 2}", "method.iterations=1",
                               "method.finetune_epochs=1"])],
            f"{sp:.0%} of the prunable weights (>= 10x fewer parameters), {e} training epochs "
            f"each: iterative {e} steps x 1 epoch, ADMM {e - 1} iterations + 1 retrain epoch, "
            f"AutoCompress {e // 2} rounds x (1 ADMM epoch + 1 fine-tune epoch) plus its "
            "search's quick evaluations."),
        Comparison(
            "gradual", "Gradual (AGP) vs one-shot and iterative at 0.9", b.model,
            [("one-shot", ["method=oneshot", "sparsity=0.9",
                           f"method.finetune_epochs={b.agp_epochs}", *NO_LATENCY]),
             ("iterative", ["method=iterative", "sparsity=0.9", f"method.steps={b.agp_epochs}",
                            "method.finetune_epochs=1", *NO_LATENCY]),
             ("gradual (AGP)", ["method=gradual", "sparsity=0.9",
                                f"method.epochs={b.agp_epochs}", *NO_LATENCY, *b.agp_extra])],
            f"{b.agp_epochs} training epochs each: one-shot prune + {b.agp_epochs} epochs, "
            f"iterative {b.agp_epochs} steps x 1 epoch, AGP's cubic schedule over "
            f"{b.agp_epochs} epochs (to 75 % of its steps)."),
    ]


def cpu_tier() -> Tier:
    return Tier(
        name="cpu",
        common=["dataset=fashion_mnist", "dataset.image_size=16", "pretrain.epochs=15",
                "seed=0", "hardware=cpu", "hardware.latency.max_seconds=10"],
        budget="under 1 hour of comparisons on 2 CPU cores",
        notes=["Images are shrunk to 16x16 (`dataset.image_size=16`): a ResNet step costs about "
               "3x less than at 28x28, which is what lets the whole set fit the hour.",
               "resnet32 (15 residual blocks) for ICE, the smallest network the issue allows: "
               "the standard pipeline fine-tunes one full epoch per block, 15 epochs.",
               "resnet20 for the other three: their claims do not depend on depth, and its "
               "epoch costs about 0.6 of resnet32's."],
        comparisons=comparisons(Budget("resnet32", "resnet20")))


def gpu_tier() -> Tier:
    """The paper-scale settings, sized by estimate (not yet run) for ~8 minutes on one GPU."""
    return Tier(
        name="full",
        common=["dataset=fashion_mnist", "pretrain.epochs=30", "seed=0", "hardware=cuda",
                "dataset.batch_size=256", "dataset.in_memory=true"],
        budget="about 8 minutes of comparisons on one current GPU",
        notes=["Native 28x28 images; resnet56 (27 blocks), one of the paper's networks, for "
               "every comparison."],
        comparisons=comparisons(Budget("resnet56", "resnet56", slr_epochs=10,
                                       filter_sparsity=0.95, filter_epochs=12, agp_epochs=6)))


def smoke_tier() -> Tier:
    """Seconds on digits: exercises every code path of the script (the tests use it)."""
    return Tier(
        "smoke", ["dataset=digits", "seed=0", "hardware=cpu", "pretrain.epochs=2",
                  "dataset.subset=0.3", "train.progress=false", "hardware.latency.enabled=false",
                  "checkpoint.enabled=false"],
        comparisons(Budget("lenet5", "lenet5", slr_epochs=1, filter_epochs=2, agp_epochs=1,
                           ice_extra=["method.autotune.trials=2"],
                           agp_extra=["method.frequency=1"])),
        "seconds (a test of the script, not evidence)")


TIERS: Dict[str, Callable[[], Tier]] = {"cpu": cpu_tier, "full": gpu_tier, "smoke": smoke_tier}


# --------------------------------------------------------------------------- the claims
CLAIMS = {
    "ice": ("ICE-Pruning (Hu, Henderson, Cano 2025)",
            "up to 9.61x faster pruning than the standard prune-then-fine-tune-every-block "
            "pipeline at similar accuracy (ResNet-56/110/152, CIFAR-10, ratios 0.6-0.8)"),
    "slr": ("SLR (Gurevin et al. 2020, 2023)",
            "high accuracy at the hard prune without retraining, where ADMM's hard-pruned "
            "model is not (ResNet-18, CIFAR-10)"),
    "autocompress": ("AutoCompress (Liu, Ma et al., AAAI 2020)",
                     "~52-54x fewer parameters at no accuracy loss (VGG-16 / ResNet-18, CIFAR-10), "
                     "ahead of hand-set structured pruning"),
    "gradual": ("Gradual pruning, AGP (Zhu & Gupta 2017)",
                "the cubic schedule during training reaches high sparsity (90 %) with a small "
                "loss, at least as well as pruning at once"),
}

HOLDS, PART, NOT = "holds", "holds in part", "does not hold here"


def _f(v: Optional[float], fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def verdict_ice(base: dict, ice: dict) -> Tuple[str, str, dict]:
    """ICE's claim holds here when its whole pruning time is at least 2x lower at no more than
    1 point of test top-1 below the standard pipeline's."""
    t_ice = ice_time(ice)
    ratio = base["time_total_s"] / t_ice
    gap = ice["top1"] - base["top1"]
    figures = {"time_ratio": ratio, "top1_gap": gap}
    fast, close = ratio >= 2.0, gap >= -1.0
    verdict = HOLDS if fast and close else PART if (ratio > 1.0 and close) or fast else NOT
    why = (f"ICE fine-tuned after {ice['finetune_count']} of {ice['steps']} blocks; the "
           f"standard pipeline after {base['finetune_count']} of {base['steps']}")
    drops = step_drops(ice) if ice.get("run_dir") else []
    if drops:
        why += (f"; a block's prune cost {min(drops):.1f}–{max(drops):.1f} val points, against "
                f"a threshold of {_f((ice.get('ice_knobs') or {}).get('threshold'), 'g')}")
    if not fast:
        why += (f"; ICE spent {_f(ice.get('time_search_s'), '.0f')} s tuning, "
                f"{_f(ice.get('time_probe_s'), '.0f')} s on the freezing probe and "
                f"{_f(ice.get('time_finetune_s'), '.0f')} s fine-tuning")
    if not close:
        why += f"; its top-1 is {-gap:.2f} points below the standard pipeline's"
    return verdict, why, figures


def ice_time(s: dict) -> float:
    """ICE's pruning time, without the reference trial (run for this report, not by ICE)."""
    return s["time_total_s"] - (s.get("time_reference_trial_s") or 0.0)


def verdict_slr(admm: dict, slr: dict) -> Tuple[str, str, dict]:
    """SLR's claim holds when its hard-pruned top-1 is within 2 points of its retrained top-1
    (accurate without retraining) and above ADMM's hard-pruned top-1."""
    hard, retrained = slr["top1_hard"], slr["top1_retrain1"]
    figures = {"slr_hard": hard, "admm_hard": admm["top1_hard"], "slr_retrain1": retrained,
               "admm_retrain1": admm["top1_retrain1"]}
    accurate = hard >= retrained - 2.0
    better = hard > admm["top1_hard"]
    verdict = HOLDS if accurate and better else PART if accurate or better else NOT
    why = (f"SLR's hard-pruned model is {hard - admm['top1_hard']:+.2f} points against ADMM's, "
           f"and {retrained - hard:.2f} points below its own accuracy after one retrain epoch"
           + ("" if accurate else " (within 2 counts as accurate without retraining here)")
           + f"; one retrain epoch brings SLR to {retrained:.2f} % and ADMM to "
           f"{admm['top1_retrain1']:.2f} %")
    return verdict, why, figures


def verdict_autocompress(runs: Sequence[dict]) -> Tuple[str, str, dict]:
    """AutoCompress's claim holds when it reaches >= 10x fewer parameters within 1 point of the
    dense model and beats both hand-set baselines' top-1 at that compression."""
    *baselines, ac = runs
    loss = ac["top1_dense"] - ac["top1"]
    figures = {"compression": ac["compression_ratio"], "flops": ac["theoretical_speedup"],
               "top1_loss": loss}
    compressed = ac["compression_ratio"] >= 10.0
    lossless = loss <= 1.0
    best = all(ac["top1"] >= b["top1"] for b in baselines)
    verdict = (HOLDS if compressed and lossless and best
               else PART if compressed and (lossless or best) else NOT)
    why = (f"{ac['compression_ratio']:.1f}x fewer parameters, {loss:.2f} points below dense; "
           + ", ".join(f"{b['label']} {b['top1']:.2f} % at {b['compression_ratio']:.1f}x"
                       for b in baselines))
    return verdict, why, figures


def verdict_gradual(runs: Sequence[dict]) -> Tuple[str, str, dict]:
    """AGP's claim holds when it is within 2 points of dense at 90 % and no worse than one-shot
    or iterative pruning with the same epochs (0.5-point tolerance: one seed)."""
    *others, agp = runs
    loss = agp["top1_dense"] - agp["top1"]
    best_other = max(o["top1"] for o in others)
    figures = {"top1_loss": loss, "vs_best_other": agp["top1"] - best_other}
    small, as_good = loss <= 2.0, agp["top1"] >= best_other - 0.5
    verdict = HOLDS if small and as_good else PART if small or as_good else NOT
    why = (f"AGP {agp['top1']:.2f} % ({loss:.2f} points below dense); "
           + ", ".join(f"{o['label']} {o['top1']:.2f} %" for o in others))
    epochs = agp.get("finetune_epochs")
    if not as_good and epochs and (agp.get("hparams") or {}).get("end_step") is None:
        why += (f"; AGP's schedule reaches 90 % at 75 % of its steps, so of its {epochs} epochs "
                f"it trains {0.25 * epochs:.1f} at the final sparsity, where one-shot pruning "
                f"trains all {epochs}")
    return verdict, why, figures


def judge(key: str, runs: Sequence[dict]) -> Tuple[str, str, dict]:
    if key == "ice":
        return verdict_ice(*runs)
    if key == "slr":
        return verdict_slr(*runs)
    if key == "autocompress":
        return verdict_autocompress(runs)
    return verdict_gradual(runs)


# --------------------------------------------------------------------------- running
def compose_cfg(overrides: Sequence[str]):
    with initialize_config_module("prunekit.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


class Results:
    """results.json: every run's summary, written atomically as soon as the run ends."""

    def __init__(self, path: Path, data: Optional[dict] = None):
        self.path = path
        self.data = data or {"runs": {}}

    @classmethod
    def load(cls, path: Path) -> "Results":
        return cls(path, json.loads(path.read_text()))

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.save()

    def add_run(self, name: str, summary: dict) -> None:
        self.data["runs"][name] = summary
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1, default=str))


def run_one(name: str, label: str, overrides: List[str], out: Path, results: Results) -> dict:
    CONSOLE.print(f"[bold]{name}[/] · {label}: {' '.join(overrides)}")
    started = time.perf_counter()
    s = run(compose_cfg(overrides), out / name, show=False)
    s.update(label=label, overrides=overrides, wall_s=time.perf_counter() - started)
    results.add_run(name, s)
    CONSOLE.print(f"  top-1 {s['top1']:.2f} % · sparsity {s['sparsity']:.3f} · "
                  f"{s['time_total_s']:.0f} s pruning")
    return s


def run_tier(tier: Tier, out: Path, only: Sequence[str]) -> Results:
    """Run the tier into OUT/results.json. With `only`, run just those comparisons and replace
    their runs in an existing results.json (the document then says which were rerun, when)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    now = lambda: time.strftime("%Y-%m-%d %H:%M:%S %Z")  # noqa: E731
    command = " ".join(["python", "scripts/verdicts.py", *sys.argv[1:]])
    merge = bool(only) and path.is_file()
    if merge:
        results = Results.load(path)
        if results.data.get("tier") != tier.name:
            raise SystemExit(f"{path} holds the {results.data.get('tier')} tier, not "
                             f"{tier.name}: pass another --out")
        results.data.setdefault("reruns", []).append(
            {"only": list(only), "started": now(), "command": command, "machine": machine()})
        results.save()
    else:
        results = Results(path)
        for key, value in (("tier", tier.name), ("started", now()), ("command", command),
                           ("machine", machine())):
            results.put(key, value)
        # --only without the earlier results: a partial run, spliced into the written document
        models = tier.models if not only else list(dict.fromkeys(
            c.model for c in tier.comparisons if c.key in only
            or any(f"{c.key}_{i}" in only for i in range(len(c.runs)))))
        if only:
            results.put("partial", list(only))
        started = time.perf_counter()
        for model in models:  # the dense models first, timed apart from the comparisons
            run_one(f"dense_{model}", "dense", [*tier.common, f"model={model}", "method=dense",
                                                 *NO_LATENCY], out, results)
        results.put("dense_wall_s", time.perf_counter() - started)
    for c in tier.comparisons:
        for i, (label, overrides) in enumerate(c.runs):
            if only and c.key not in only and f"{c.key}_{i}" not in only:
                continue
            run_one(f"{c.key}_{i}", label, [*tier.common, f"model={c.model}", *overrides], out,
                    results)
    results.put("finished", now())
    return results


def comparisons_seconds(results: dict) -> float:
    """Wall seconds of every comparison run recorded (dense models not included)."""
    return sum(r.get("wall_s", 0.0) for k, r in results["runs"].items()
               if not k.startswith("dense_"))


def machine() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return (f"{gpu}, " if gpu else "") + f"{cpu}, {torch.get_num_threads()} threads, torch " \
        f"{torch.__version__}"


# --------------------------------------------------------------------------- the document
def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def runs_of(results: dict, key: str) -> List[dict]:
    runs = results["runs"]
    return [runs[k] for k in sorted((k for k in runs if re.fullmatch(rf"{key}_\d+", k)),
                                    key=lambda k: int(k.rsplit("_", 1)[1]))]


def csv_rows(run_dir: str, name: str) -> List[dict]:
    path = Path(run_dir) / f"{name}.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def step_drops(run: dict) -> List[float]:
    """Val points below dense right after each block's prune (before its fine-tune)."""
    return [run["val_top1_dense"] - float(r["val_top1_pruned"])
            for r in csv_rows(run["run_dir"], "steps")]


def own_overrides(run: dict, tier: Tier) -> str:
    """The overrides of a run beyond its tier's common settings."""
    return " ".join(o for o in run["overrides"] if o not in tier.common)


def ice_section(tier: Tier, c: Comparison, runs: List[dict]) -> List[str]:
    base, ice = runs
    lines = table(
        ["", "test top-1 %", "Δ dense", "params ×", "FLOPs ×", "fine-tunes / steps",
         "tuning s", "probe s", "prune s", "validations s", "fine-tunes s", "pruning time s"],
        [[r["label"], _f(r["top1"]), f"{r['delta_top1']:+.2f}", _f(r["compression_ratio"]),
          _f(r["theoretical_speedup"]), f"{r['finetune_count']} / {r['steps']}",
          _f(r.get("time_search_s"), ".0f"), _f(r.get("time_probe_s"), ".0f"),
          _f(r.get("time_prune_s"), ".0f"), _f(r.get("time_eval_s"), ".0f"),
          _f(r.get("time_finetune_s"), ".0f"), _f(ice_time(r), ".0f")]
         for r in (base, ice)])
    if ice.get("probe_images"):
        lines += ["", f"ICE's freezing probe trained on {ice['probe_images']:,} images"
                      + (" (the tuning trials' probe, `method.probe_data=trials`)."
                         if ice.get("probe_images") == ice.get("autotune_train_images") else ".")]
    if ice.get("time_reference_trial_s"):
        lines += ["", f"ICE's pruning time leaves out the {ice['time_reference_trial_s']:.0f} s "
                      "reference trial below (run for this report only)."]
    per_epoch = [r["time_finetune_s"] / r["finetune_epochs"] for r in (base, ice)
                 if r.get("finetune_epochs")]
    if len(per_epoch) == 2:
        lines += ["", f"A fine-tune epoch cost ICE {per_epoch[1]:.1f} s on average against the "
                      f"standard pipeline's {per_epoch[0]:.1f} s ({per_epoch[1] / per_epoch[0]:.2f}"
                      "x): ICE's distillation adds a forward pass of the unpruned teacher to every "
                      f"step, and freezing {len(ice.get('frozen_layers') or [])} layers saves "
                      "their weight gradients."]
    drops = step_drops(ice)
    if drops:
        threshold = (ice.get("ice_knobs") or {}).get("threshold")
        lines += ["", f"Right after each block's prune ICE's model was {min(drops):.1f}–"
                      f"{max(drops):.1f} val points below dense (median "
                      f"{sorted(drops)[len(drops) // 2]:.1f}); with the chosen threshold of "
                      f"{_f(threshold, 'g')} points, rule i fine-tuned at "
                      f"{ice['finetune_count']} of {ice['steps']} steps."]
    trials = csv_rows(ice["run_dir"], "trials")
    if trials:
        knobs = ["threshold", "freeze_ratio", "lr", "lr_p", "lr_beta", "lr_delta"]
        lines += ["", f"The tuning trials ({ice.get('autotune_train_images')} train / "
                      f"{ice.get('autotune_val_images')} val images each; dense val top-1 on "
                      f"them {_f(ice.get('autotune_dense_val_top1'))} %):", ""]
        lines += table(["trial", *knobs, "val drop (points)", "time s", "fine-tunes", "chosen"],
                       [[t["trial"], *(f"{float(t[k]):g}" for k in knobs),
                         _f(float(t["drop"])) if t.get("drop") else t.get("status", ""),
                         _f(float(t["time_s"]), ".1f") if t.get("time_s") else "—",
                         f"{t.get('finetunes', '')} / {t.get('steps', '')}",
                         "reference (the paper's defaults)" if t.get("chosen") == "reference"
                         else "yes" if t.get("chosen") == "True" else ""]
                        for t in trials])
        ok = [t for t in trials if t.get("drop") and t.get("chosen") != "reference"]
        if ok:
            drops = [float(t["drop"]) for t in ok]
            times = [float(t["time_s"]) for t in ok]
            lines += ["", f"Spread over the grid trials: val drop {min(drops):.2f}–"
                          f"{max(drops):.2f} points, time {min(times):.1f}–{max(times):.1f} s."]
    return lines


def generic_section(c: Comparison, runs: List[dict]) -> List[str]:
    extra = {"slr": [("hard prune top-1 %", "top1_hard"), ("after 1 retrain epoch %",
                                                          "top1_retrain1")]}.get(c.key, [])
    header = ["", "test top-1 %", "Δ dense", *(h for h, _ in extra), "sparsity", "params ×",
              "FLOPs ×", "measured ×", "epochs", "pruning time s"]
    rows = [[r["label"], _f(r["top1"]), f"{r['delta_top1']:+.2f}",
             *(_f(r.get(k)) for _, k in extra), _f(r["sparsity"], ".3f"),
             _f(r["compression_ratio"]), _f(r["theoretical_speedup"]),
             _f(r.get("measured_speedup")), str(r.get("finetune_epochs", "—")),
             _f(r["time_total_s"], ".0f")] for r in runs]
    return table(header, rows)


def render(results: dict, tier: Tier) -> Tuple[str, str]:
    """(docs/results.md, the README's condensed block)."""
    dense = {m: results["runs"].get(f"dense_{m}") for m in tier.models}
    lines = ["# Does it reproduce the papers? Verdicts on Fashion-MNIST", "",
             "Written by `scripts/verdicts.py` "
             f"(`{results.get('command', 'python scripts/verdicts.py')}`"
             + (" and the reruns listed below" if results.get("reruns") else "")
             + "); every figure below is from those runs, on this machine. Do not edit by "
             "hand: rerun `make verdicts`.", "",
             f"- Tier: **{tier.name}**, sized for {tier.budget}.",
             f"- Machine: {results.get('machine')}.",
             f"- Run: {results.get('started')} to {results.get('finished')}; the comparisons "
             f"took **{comparisons_seconds(results) / 60:.1f} min** (the runs' wall time), the "
             f"dense models {results.get('dense_wall_s', 0) / 60:.1f} min more (below).",
             *(f"- Rerun of {', '.join(r['only'])} at {r['started']} (`{r['command']}`): "
               "those figures are from the rerun."
               for r in results.get("reruns", [])),
             f"- Settings common to every run: `{' '.join(tier.common)}`.", *(
                 f"- {n}" for n in tier.notes), "",
             "Test top-1 is on the data set's test split, used only for reporting; every "
             "decision (ICE's fine-tune rule and tuning, AutoCompress's search, ADMM's and "
             "SLR's validation) uses the validation split held out of train. One seed: "
             "differences under ~0.5 points are within seed noise.", "",
             "## The dense models", ""]
    lines += table(["model", "test top-1 %", "val top-1 %", "params", "training",
                    "training time"],
                   [[m, _f(d["top1_dense"]), _f(d.get("val_top1_dense")), f"{d['params_dense']:,}",
                     dense_recipe(tier),
                     f"{d['dense_training_s'] / 60:.1f} min"
                     + (" (cached)" if str(d.get("dense_source", "")).startswith("cache") else "")]
                    for m, d in dense.items() if d])
    summary_rows = []
    for n, c in enumerate(tier.comparisons, 1):
        runs = runs_of(results, c.key)
        paper, claim = CLAIMS[c.key]
        lines += ["", f"## {n}. {c.title} ({c.model})", "", f"**Claim** — {paper}: {claim}.", "",
                  f"**Our setting** — {c.model}, {c.why}", ""]
        if len(runs) < len(c.runs):
            lines += ["Not run in this session."]
            summary_rows.append([paper.split(" (")[0], claim, "not run", "—"])
            continue
        lines += ice_section(tier, c, runs) if c.key == "ice" else generic_section(c, runs)
        lines += ["", "Runs (on top of the common settings):", "",
                  *(f"- {r['label']}: `{own_overrides(r, tier)}`" for r in runs)]
        verdict, why, figures = judge(c.key, runs)
        figure = headline(c.key, runs, figures)
        lines += ["", f"**Measured** — {figure}.", "", f"**Verdict: {verdict}** — {why}."]
        summary_rows.append([paper.split(" (")[0], claim, figure, f"**{verdict}**"])
    lines += ["", "## GPU tier", ""]
    if tier.name == "full":
        lines += ["This is the GPU tier."]
    else:
        lines += ["The GPU tier (paper-scale networks and epochs: resnet56 for ICE at 28x28, 30 "
                  "dense epochs) has **not been run**: no GPU was available to this project "
                  "when these figures were taken. Its command, sized for about 8 minutes of "
                  "comparisons on one current GPU:", "", "```",
                  "make data && make verdicts-full   # python scripts/verdicts.py --full", "```"]
    readme = [f"Measured by `make verdicts` ({tier.name} tier, Fashion-MNIST at "
              f"{'16x16' if tier.name == 'cpu' else 'native size'}, "
              f"{comparisons_seconds(results) / 60:.0f} min on "
              f"{results.get('machine', '').split(', torch')[0]}); details, settings and the "
              "reasons in [docs/results.md](docs/results.md).", ""]
    readme += table(["paper", "claim", "measured here", "verdict"], summary_rows)
    return "\n".join(lines) + "\n", "\n".join(readme) + "\n"


def dense_recipe(tier: Tier) -> str:
    epochs = next((o.split("=", 1)[1] for o in tier.common if o.startswith("pretrain.epochs=")),
                  "the data set's default")
    return f"{epochs} epochs, SGD lr 0.05 cosine, crop + flip"


def headline(key: str, runs: List[dict], f: dict) -> str:
    if key == "ice":
        return (f"ICE {f['time_ratio']:.2f}x faster than the standard pipeline, top-1 "
                f"{f['top1_gap']:+.2f} points ({runs[1]['top1']:.2f} % vs {runs[0]['top1']:.2f} %)")
    if key == "slr":
        return (f"hard-prune top-1 SLR {f['slr_hard']:.2f} % vs ADMM {f['admm_hard']:.2f} %; "
                f"after 1 retrain epoch {f['slr_retrain1']:.2f} % vs {f['admm_retrain1']:.2f} %")
    if key == "autocompress":
        return (f"{f['compression']:.1f}x fewer parameters, {f['flops']:.1f}x fewer FLOPs, "
                f"{-f['top1_loss']:+.2f} points vs dense")
    return (f"AGP {-f['top1_loss']:+.2f} points vs dense at 90 %, {f['vs_best_other']:+.2f} vs "
            "the better of one-shot and iterative")


def blocks(text: str) -> List[Tuple[str, str]]:
    """A document as (heading, text) blocks: the text before the first `## ` heading (heading
    ""), then one block per heading."""
    out: List[Tuple[str, str]] = [("", "")]
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            out.append((line.strip(), ""))
        out[-1] = (out[-1][0], out[-1][1] + line)
    return out


def splice(old: str, new: str, results: dict) -> str:
    """A partial run's document (`--only` where the earlier results.json is not at hand) spliced
    into the one written before: the comparisons it ran and their dense models' rows replace
    theirs, a header line says so, and everything else stays as written."""
    fresh = dict(blocks(new))
    out = []
    for heading, text in blocks(old):
        if heading == "":
            rerun = (f"- Rerun of {', '.join(results['partial'])} at {results['started']} "
                     f"(`{results['command']}`, {results['machine']}) without the earlier "
                     "results.json: those sections and their dense models' rows are from the "
                     "rerun, on their own dense models; the rest is as written before.\n")
            lines = text.splitlines(keepends=True)
            at = max(i for i, line in enumerate(lines) if line.startswith("- Rerun")
                     or line.startswith("- Run:")) + 1
            text = "".join(lines[:at] + [rerun] + lines[at:])
        elif heading == "## The dense models":  # the others' dense rows stay: they used them
            rows = [line.replace("| ", "| rerun: ", 1) for line in fresh[heading].splitlines(True)
                    if line.startswith("| ") and not line.startswith("| model")]
            lines = text.splitlines(keepends=True)
            last = max(i for i, line in enumerate(lines) if line.startswith("| "))
            text = "".join(lines[:last + 1] + rows + lines[last + 1:])
        elif heading in fresh and "Not run in this session." not in fresh[heading]:
            text = fresh[heading]
        out.append(text)
    return "".join(out)


def splice_readme(old_block: str, new_block: str) -> str:
    """The README's verdict rows of the comparisons a partial run ran, in the block before."""
    fresh = {line.split("|")[1]: line for line in new_block.splitlines(True)
             if line.startswith("| ") and "| not run |" not in line}
    return "".join(fresh.get(line.split("|")[1], line) if line.startswith("| ") else line
                   for line in old_block.splitlines(True))


README_BEGIN, README_END = "<!-- verdicts:begin -->", "<!-- verdicts:end -->"


def readme_block(path: Path) -> Optional[str]:
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        return None
    return text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].lstrip("\n")


def update_readme(path: Path, block: str) -> bool:
    """Replace the text between the verdict markers of the README; False if it has none."""
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(path, f"{head}{README_BEGIN}\n{block}{README_END}{tail}")
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the GPU tier (paper-scale)")
    ap.add_argument("--tier", choices=sorted(TIERS), help="cpu (default), full, smoke")
    ap.add_argument("--only", nargs="+", default=[], metavar="NAME",
                    help="run only these comparisons (ice, slr, autocompress, gradual) or runs "
                         "(ice_1: the second run of ice), replacing them in OUT/results.json")
    ap.add_argument("--out", default=None, help="run directories and results.json "
                                                "(default outputs/verdicts-TIER)")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "results.md"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"),
                    help="update its block between the verdict markers ('' to leave it)")
    ap.add_argument("--render", action="store_true",
                    help="rewrite the documents from OUT/results.json without running")
    args = ap.parse_args(argv)
    tier = TIERS[args.tier or ("full" if args.full else "cpu")]()
    names = {c.key for c in tier.comparisons} | {
        f"{c.key}_{i}" for c in tier.comparisons for i in range(len(c.runs))}
    if set(args.only) - names:
        ap.error(f"--only {' '.join(sorted(set(args.only) - names))}: not a comparison or run; "
                 f"choose from {', '.join(sorted(names))}")
    out = Path(args.out or ROOT / "outputs" / f"verdicts-{tier.name}")
    if args.render:
        results = Results.load(out / "results.json")
    else:
        results = run_tier(tier, out, args.only)
    doc, block = render(results.data, tier)
    if results.data.get("partial") and Path(args.doc).is_file():
        doc = splice(Path(args.doc).read_text(), doc, results.data)
        old_block = readme_block(Path(args.readme)) if args.readme else None
        block = splice_readme(old_block, block) if old_block else block
    Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.doc), doc)
    CONSOLE.print(f"wrote {args.doc}")
    if args.readme and update_readme(Path(args.readme), block):
        CONSOLE.print(f"updated the verdicts in {args.readme}")
    CONSOLE.print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
