"""Each seed paper's headline claim measured on Fashion-MNIST, with a verdict: docs/results.md.

The comparisons, each side by side in this process from one cached dense model per architecture
(dense training is timed and reported apart from them):
  1. ICE-Pruning (experiment=ice_paper) vs the paper's standard pipeline as its reference code
     runs it (experiment=ice_baseline, distilling), with the plain pipeline as a second row
     (experiment=ice_baseline_plain), and ICE under the reference's tuning objective where that
     objective would choose another trial: pruning-time ratio, top-1 gap, fine-tunes / steps,
     time by phase, the trials; at several depths in the GPU tier (a table and a plot);
  2. SLR vs ADMM at 0.9 unstructured, same epochs: top-1 at the hard prune and after 1 retrain
     epoch;
  3. AutoCompress vs ADMM and iterative filter pruning at >= 10x fewer parameters;
  4. gradual (AGP) vs one-shot and iterative at 0.9 unstructured, equal epoch budgets, AGP's
     schedule ending halfway (its paper's recipe: then training on at the final sparsity).
Each section lists its settings against the paper's; a claim is "not tested in its regime"
rather than "does not hold" where a decisive one differs.

    python scripts/verdicts.py                  # the CPU tier (make verdicts)
    python scripts/verdicts.py --full --job ice56   # one job of the GPU tier (make verdicts-gpu)
    python scripts/verdicts.py --render         # rewrite the docs from the last results.json

Every run's summary (with its steps / trials tables) lands in OUT/results.json as soon as it
ends, so --render can rebuild the documents anywhere; the figures are only ever those of the
runs recorded there. A GPU job merges into OUT/results.json: on a fresh device machine, carry
the earlier results.json (and the dense cache, $PRUNEKIT_CACHE) in, and bring results.json,
docs/results-gpu.md and docs/img/ice_depth_full.png back.
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
from prunekit.files import atomic_write, atomic_write_text
from prunekit.runner import run

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = Console()


# --------------------------------------------------------------------------- the tiers
@dataclass
class Comparison:
    key: str  # its kind (ice, slr, autocompress, gradual), with the depth for ICE's (ice56)
    title: str
    model: str
    runs: List[Tuple[str, List[str]]]  # (label, overrides); the first is the reference side
    why: str  # what was chosen and why, for the document

    @property
    def kind(self) -> str:
        return kind_of(self.key)


def kind_of(key: str) -> str:
    """ice56 -> ice: the claim a comparison (or a run's name, ice56_2) tests."""
    return re.match(r"[a-z]+", key).group(0)


@dataclass
class Tier:
    name: str
    common: List[str]  # every run: data set, image size, dense recipe, hardware
    comparisons: List[Comparison]
    budget: str  # the time it is sized for
    notes: List[str] = field(default_factory=list)
    # named jobs, each a part that fits one device call: job -> comparisons or runs, and
    # "dense_MODEL" entries; with the minutes estimated for each (None: measured only)
    jobs: Dict[str, List[str]] = field(default_factory=dict)
    job_minutes: Dict[str, float] = field(default_factory=dict)

    @property
    def models(self) -> List[str]:
        return list(dict.fromkeys(c.model for c in self.comparisons))


NO_LATENCY = ["hardware.latency.enabled=false"]  # masked models: dense kernels, no speedup to time
ICE_LABELS = ("standard pipeline (distils, as the reference)", "standard pipeline, plain",
              "ICE-Pruning", "ICE-Pruning, the reference's tuning objective")


@dataclass
class Budget:
    """What one tier spends per comparison; the comparisons are built from it alike."""

    ice_models: Dict[str, str]  # comparison key -> network, e.g. {"ice56": "resnet56"}
    model: str  # SLR, AutoCompress and AGP
    ice_ratio: float = 0.7  # the middle of the paper's 0.6 / 0.7 / 0.8
    slr_epochs: int = 3  # SLR epochs = ADMM iterations (one epoch each), then 1 retrain epoch
    filter_sparsity: float = 0.93  # of the prunable weights: >= 10x fewer parameters
    filter_epochs: int = 4  # even: iterative E x 1; ADMM E-1 + 1 retrain; AC E/2 x (1 + 1)
    agp_epochs: int = 6
    agp_end: float = 0.5  # AGP's schedule ends here (fraction of its steps), then trains on
    ice_extra: List[str] = field(default_factory=list)  # overrides for the ICE side only
    agp_extra: List[str] = field(default_factory=list)  # overrides for the AGP run only


def ice_comparison(key: str, model: str, ratio: float, extra: Sequence[str]) -> Comparison:
    """ICE against the standard pipeline as the reference code runs it (distilling), with the
    plain pipeline as a labelled second baseline."""
    ratio_o = f"sparsity={ratio}"
    return Comparison(
        key, "ICE-Pruning vs the standard pipeline", model,
        [(ICE_LABELS[0], ["experiment=ice_baseline", ratio_o]),
         (ICE_LABELS[1], ["experiment=ice_baseline_plain", ratio_o]),
         (ICE_LABELS[2], ["experiment=ice_paper", ratio_o,
                          "method.autotune.reference_trial=true", *extra])],
        f"ratio {ratio:g} (the paper's ratios are 0.6/0.7/0.8), the paper's trial fraction (2 %"
        " of train, 4 % of val per trial, 6 trials), the whole train split for the final run, "
        "distillation at T = 2 on both sides (the reference's baseline distils too), SGD with "
        "momentum 0.9 without Nesterov on both sides, one validation a step for the baseline; "
        "the plain pipeline (no distillation) is a second row.")


def comparisons(b: Budget) -> List[Comparison]:
    e, sp = b.filter_epochs, b.filter_sparsity
    return [
        *(ice_comparison(key, model, b.ice_ratio, b.ice_extra)
          for key, model in b.ice_models.items()),
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
                                f"method.epochs={b.agp_epochs}",
                                f"method.end_fraction={b.agp_end}", *NO_LATENCY,
                                *b.agp_extra])],
            f"{b.agp_epochs} training epochs each: one-shot prune + {b.agp_epochs} epochs, "
            f"iterative {b.agp_epochs} steps x 1 epoch, AGP's cubic schedule over the first "
            f"{b.agp_end:.0%} of its steps, then training on at 90 % (the paper's recipe: the "
            "schedule ends well before training does)."),
    ]


def cpu_tier() -> Tier:
    return Tier(
        name="cpu",
        common=["dataset=fashion_mnist", "dataset.image_size=16", "pretrain.epochs=15",
                "seed=0", "hardware=cpu", "hardware.latency.max_seconds=10",
                "hardware.channel_multiple=1"],
        budget="under 2 hours of comparisons on 2 CPU cores",
        notes=["Images are shrunk to 16x16 (`dataset.image_size=16`): a ResNet step costs about "
               "3x less than at 28x28, which is what lets the whole set fit.",
               "resnet32 (15 residual blocks) for ICE: the standard pipeline fine-tunes one full "
               "epoch per block, 15 epochs, three times over (two baselines and ICE's final "
               "run). The paper prunes 27 to 75 blocks: the GPU tier's jobs.",
               "resnet20 for the other three: their claims do not depend on depth, and its "
               "epoch costs about 0.6 of resnet32's.",
               "`hardware.channel_multiple=1`: the papers' kept channel counts (the CPU default "
               "is 8 since issue 44)."],
        comparisons=comparisons(Budget({"ice": "resnet32"}, "resnet20", agp_epochs=4)))


# The GPU tier's jobs on one H200, estimated from what the first GPU runs measured (dense
# resnet56 5.2 s an epoch at 28 px; the standard pipeline 4.7 s a block; ICE's trials 3.4-4.1 s):
# a deeper network's epoch scales with its blocks (resnet110 2x, resnet152_cifar 2.8x).
# `-objective`: ICE under the reference's tuning objective, run only where it would choose another
# trial than ours did (then as long as the ICE run).
GPU_JOBS = {
    "dense": ["dense_resnet56"],
    "ice56": ["ice56_0", "ice56_1", "ice56_2"], "ice56-objective": ["ice56_3"],
    "dense110": ["dense_resnet110"],
    "ice110-base": ["ice110_0"], "ice110-plain": ["ice110_1"], "ice110-ice": ["ice110_2"],
    "ice110-objective": ["ice110_3"],
    "dense152": ["dense_resnet152_cifar"],
    "ice152-base": ["ice152_0"], "ice152-plain": ["ice152_1"], "ice152-ice": ["ice152_2"],
    "ice152-objective": ["ice152_3"],
    "slr": ["slr"], "autocompress": ["autocompress"], "gradual": ["gradual"],
}
GPU_JOB_MINUTES = {"dense": 2.6, "ice56": 7.5, "ice56-objective": 3.5, "dense110": 5.2,
                   "ice110-base": 9.5, "ice110-plain": 8.5, "ice110-ice": 6.5,
                   "ice110-objective": 6.5, "dense152": 7.3, "ice152-base": 18.5,
                   "ice152-plain": 16.5, "ice152-ice": 11.0, "ice152-objective": 11.0,
                   "slr": 2.5, "autocompress": 3.0, "gradual": 4.5}


def gpu_tier() -> Tier:
    """The paper-scale settings, in jobs that each fit one device call (estimated, see
    GPU_JOB_MINUTES; measured times land in results.json's `jobs`)."""
    return Tier(
        name="full",
        common=["dataset=fashion_mnist", "pretrain.epochs=30", "seed=0", "hardware=cuda",
                "hardware.channel_multiple=1", "dataset.batch_size=256",
                "dataset.in_memory=true"],
        budget="jobs of under 8 minutes each on one H200 (`make verdicts-gpu JOB=...`)",
        notes=["Native 28x28 images; ICE at the paper's depths, resnet56 (27 blocks), resnet110 "
               "(54) and resnet152_cifar (75, the reference's network); resnet56 for the other "
               "three comparisons.",
               "`hardware.channel_multiple=1`: the papers' kept channel counts (ceil(0.7 C) "
               "removed), not the multiples of 8 a GPU deployment would keep."],
        comparisons=comparisons(Budget(
            {"ice56": "resnet56", "ice110": "resnet110", "ice152": "resnet152_cifar"},
            "resnet56", slr_epochs=10, filter_sparsity=0.95, filter_epochs=12, agp_epochs=12)),
        jobs=GPU_JOBS, job_minutes=GPU_JOB_MINUTES)


def smoke_tier() -> Tier:
    """Seconds on digits: exercises every code path of the script (the tests use it), the jobs
    too."""
    return Tier(
        "smoke", ["dataset=digits", "seed=0", "hardware=cpu", "pretrain.epochs=2",
                  "dataset.subset=0.3", "train.progress=false", "hardware.latency.enabled=false",
                  "checkpoint.enabled=false"],
        comparisons(Budget({"ice": "lenet5"}, "lenet5", slr_epochs=1, filter_epochs=2,
                           agp_epochs=2, ice_extra=["method.autotune.trials=2"],
                           agp_extra=["method.frequency=1"])),
        "seconds (a test of the script, not evidence)",
        jobs={"dense": ["dense_lenet5"], "ice": ["ice_0", "ice_1", "ice_2"],
              "ice-objective": ["ice_3"], "slr-admm": ["slr_0"], "slr-slr": ["slr_1"]})


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
NOT_TESTED = "not tested in its regime"  # what NOT reads as when a decisive setting is off
TIME_NOISE = 0.1  # wall times of the same run differ by about this much (docs/benchmarks.md)


@dataclass
class Setting:
    """One setting of a comparison against the paper's: a claim judged where a decisive one
    does not match is not tested, whatever the figures say."""

    what: str
    here: str
    paper: str
    matches: bool
    decisive: bool = True


def hp(run: dict, key: str, default=None):
    return (run.get("hparams") or {}).get(key, default)


def regime(key: str, runs: Sequence[dict]) -> List[Setting]:
    """Which of a comparison's settings match its paper's, from the runs themselves."""
    kind = kind_of(key)
    data = Setting("data", f"{runs[0].get('dataset')}", "CIFAR-10", False, decisive=False)
    if kind == "ice":
        base, ice = runs[0], runs[2]
        return [Setting("residual blocks pruned", f"{ice['steps']} ({ice.get('model')})",
                        "27 / 54 / 75 (ResNet-56 / 110 / 152)", ice["steps"] >= 27),
                Setting("the baseline distils (KL at T = 2)",
                        "yes" if hp(base, "distill") else "no", "yes", bool(hp(base, "distill"))),
                Setting("tuning trials", f"{ice.get('autotune_trials')} on "
                        f"{ice.get('autotune_train_images')} train images",
                        "6 on 2 % of the train split", ice.get("autotune_trials") == 6,
                        decisive=False), data]
    if kind == "slr":
        epochs = hp(runs[1], "epochs", 0)
        return [Setting("SLR training before the hard prune", f"{epochs} epochs",
                        "100 epochs (ResNet-18)", epochs >= 100), data]
    if kind == "autocompress":
        ac = runs[-1]
        admm = hp(ac, "rounds", 0) * hp(ac, "iterations", 0) * hp(ac, "epochs_per_iteration", 1)
        return [Setting("ADMM training", f"{admm} epochs in {hp(ac, 'rounds')} rounds",
                        "to convergence each round (the NNI port: 30 iterations x 5 epochs a "
                        "round)", admm >= 30 * 5 * max(hp(ac, "rounds", 1), 1)),
                Setting("compression", f"{ac['compression_ratio']:.1f}x", "52-54x",
                        ac["compression_ratio"] >= 40, decisive=False), data]
    agp = runs[-1]
    end, epochs = hp(agp, "end_fraction", 0.75), hp(agp, "epochs", 0)
    after = (1.0 - end) * epochs if hp(agp, "end_step") is None else None
    return [Setting("the schedule ends", f"at {end:.0%} of {epochs} epochs",
                    "well before training ends", end <= 0.75),
            Setting("training at the final sparsity",
                    "—" if after is None else f"{after:.1f} epochs", "the rest of training",
                    after is not None and after >= 1.0), data]


def in_regime(verdict: str, why: str, settings: Sequence[Setting]) -> Tuple[str, str]:
    """"does not hold here" only where every decisive setting is the paper's; otherwise "not
    tested in its regime", with what is missing."""
    missing = [s for s in settings if s.decisive and not s.matches]
    if not missing:
        return verdict, why
    off = "; ".join(f"{s.what}: {s.here} here, {s.paper} in the paper" for s in missing)
    if verdict != NOT:
        return verdict, why + f" (outside its paper's regime: {off})"
    return NOT_TESTED, why + "; missing: " + off


def _f(v: Optional[float], fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def verdict_ice(base: dict, ice: dict, plain: Optional[dict] = None,
                ice_ref: Optional[dict] = None) -> Tuple[str, str, dict]:
    """ICE's claim holds here when its whole pruning time is at least 2x lower at no more than
    1 point of test top-1 below the standard pipeline's (the reference's, distilling); the
    plain pipeline's ratio and the run under the reference's tuning objective are reported."""
    t_ice = ice_time(ice)
    ratio = base["time_total_s"] / t_ice
    gap = ice["top1"] - base["top1"]
    figures = {"time_ratio": ratio, "top1_gap": gap,
               "finetuned": ice["finetune_count"] / max(ice["steps"], 1)}
    fast, close = ratio >= 2.0, gap >= -1.0
    # faster at all only beyond the run-to-run noise of wall times on a machine (about 10 %)
    faster = ratio >= 1.0 + TIME_NOISE
    verdict = HOLDS if fast and close else PART if (faster and close) or fast else NOT
    why = (f"ICE fine-tuned after {ice['finetune_count']} of {ice['steps']} blocks; the "
           f"standard pipeline after {base['finetune_count']} of {base['steps']}")
    drops = step_drops(ice)
    if drops:
        why += (f"; a block's prune cost {min(drops):.1f}–{max(drops):.1f} val points, against "
                f"a threshold of {_f((ice.get('ice_knobs') or {}).get('threshold'), 'g')}")
    if not fast:
        why += (f"; ICE spent {_f(ice.get('time_search_s'), '.0f')} s tuning, "
                f"{_f(ice.get('time_probe_s'), '.0f')} s on the freezing probe and "
                f"{_f(ice.get('time_finetune_s'), '.0f')} s fine-tuning")
    if not close:
        why += f"; its top-1 is {-gap:.2f} points below the standard pipeline's"
    if plain is not None:
        figures["time_ratio_plain"] = plain["time_total_s"] / t_ice
        why += (f"; against the plain pipeline (no distillation) ICE is "
                f"{figures['time_ratio_plain']:.2f}x as fast, {ice['top1'] - plain['top1']:+.2f} "
                "points")
    if ice_ref is not None:
        figures["time_ratio_reference_objective"] = base["time_total_s"] / ice_time(ice_ref)
        why += (f"; under the reference's tuning objective ICE is "
                f"{figures['time_ratio_reference_objective']:.2f}x as fast, "
                f"{ice_ref['top1'] - base['top1']:+.2f} points")
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
    kind = kind_of(key)
    if kind == "ice":
        base, plain, ice, *ref = runs
        return verdict_ice(base, ice, plain, ref[0] if ref else None)
    if kind == "slr":
        return verdict_slr(*runs)
    if kind == "autocompress":
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
    s.update(label=label, overrides=overrides, wall_s=time.perf_counter() - started,
             tables={t: csv_rows(s.get("run_dir", str(out / name)), t)
                     for t in ("steps", "trials")})
    results.add_run(name, s)
    CONSOLE.print(f"  top-1 {s['top1']:.2f} % · sparsity {s['sparsity']:.3f} · "
                  f"{s['time_total_s']:.0f} s pruning")
    return s


def selected(tier: Tier, entries: Sequence[str]) -> Tuple[List[str], List[Tuple[Comparison, int]]]:
    """The dense models and the (comparison, run index) pairs that `entries` (comparison keys,
    run names such as ice56_2, dense_MODEL) name, in the tier's order; an ICE comparison's
    index 3 is its run under the reference's tuning objective."""
    runs = []
    for c in tier.comparisons:
        indices = range(len(c.runs) + (c.kind == "ice"))
        runs += [(c, i) for i in indices if c.key in entries or f"{c.key}_{i}" in entries]
    models = [m for m in tier.models if f"dense_{m}" in entries]
    models += [c.model for c, _ in runs if c.model not in models]
    return list(dict.fromkeys(models)), runs


def open_results(tier: Tier, path: Path, merge: bool, partial: Sequence[str]) -> Results:
    """results.json: merged into (a rerun, a job), or started anew."""
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    command = " ".join(["python", "scripts/verdicts.py", *sys.argv[1:]])
    if merge and path.is_file():
        results = Results.load(path)
        if results.data.get("tier") != tier.name:
            raise SystemExit(f"{path} holds the {results.data.get('tier')} tier, not "
                             f"{tier.name}: pass another --out")
        results.data.setdefault("reruns", []).append(
            {"only": list(partial), "started": now, "command": command, "machine": machine()})
        results.save()
        return results
    results = Results(path)
    for key, value in (("tier", tier.name), ("started", now), ("command", command),
                       ("machine", machine())):
        results.put(key, value)
    if partial:
        results.put("partial", list(partial))
    return results


def run_tier(tier: Tier, out: Path, only: Sequence[str], job: Optional[str] = None) -> Results:
    """Run the tier (or `only` its named comparisons / runs, or one of its `job`s) into
    OUT/results.json. A rerun or a job merges into an existing results.json (a job's dense
    models come from the cache when it holds them) and records its wall time under `jobs`."""
    out.mkdir(parents=True, exist_ok=True)
    entries = tier.jobs[job] if job else list(only)
    results = open_results(tier, out / "results.json", bool(entries), entries)
    started = time.perf_counter()
    if entries:
        models, runs = selected(tier, entries)
    else:
        models, runs = selected(tier, [c.key for c in tier.comparisons])
    dense_started = time.perf_counter()
    for model in models:  # the dense models first, timed apart from the comparisons
        if entries and f"dense_{model}" in results.data["runs"] \
                and f"dense_{model}" not in entries:
            continue  # a rerun or job reuses the dense model recorded before
        run_one(f"dense_{model}", "dense", [*tier.common, f"model={model}", "method=dense",
                                             *NO_LATENCY], out, results)
    if not entries:
        results.put("dense_wall_s", time.perf_counter() - dense_started)
    for c, i in runs:
        if i == len(c.runs):  # ICE under the reference's objective, where it chooses otherwise
            reference_objective_run(tier, c, out, results)
        else:
            label, overrides = c.runs[i]
            run_one(f"{c.key}_{i}", label, [*tier.common, f"model={c.model}", *overrides], out,
                    results)
    if job:
        results.data.setdefault("jobs", {})[job] = {
            "wall_s": time.perf_counter() - started, "machine": machine(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    results.put("finished", time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    return results


def reference_objective_run(tier: Tier, c: Comparison, out: Path, results: Results) -> None:
    """ICE once more under the reference code's tuning objective, where that objective would
    choose another trial than ours did (the trials are the same grid points on the same
    subsets); where it chooses the same, the run would be the same run: recorded, not rerun."""
    from prunekit.methods.ice_autotune import choose_trial

    ice = results.data["runs"].get(f"{c.key}_2")
    trials = [t for t in run_table(ice, "trials")
              if t.get("drop") and t.get("chosen") != "reference"] if ice else []
    if not trials:
        CONSOLE.print(f"{c.key}: no ICE trials recorded; the reference-objective run needs them")
        return
    ours = next(i for i, t in enumerate(trials) if t.get("chosen") == "True")
    theirs = choose_trial([float(t["drop"]) for t in trials], [float(t["time_s"]) for t in trials],
                          0.5, "reference")
    record = {"ours": trials[ours]["trial"], "reference": trials[theirs]["trial"]}
    results.data.setdefault("reference_objective", {})[c.key] = record
    results.save()
    if theirs != ours:
        label, overrides = c.runs[2]
        run_one(f"{c.key}_3", ICE_LABELS[3], [*tier.common, f"model={c.model}", *overrides,
                                               "method.autotune.objective=reference"], out,
                results)


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


def run_table(run: dict, name: str) -> List[dict]:
    """A run's steps.csv / trials.csv rows: kept in results.json (`tables`), so a document can be
    rendered where the run directories are not (a GPU job's machine is given back)."""
    kept = (run.get("tables") or {}).get(name)
    if kept is not None:
        return kept
    return csv_rows(run["run_dir"], name) if run.get("run_dir") else []


def csv_rows(run_dir: str, name: str) -> List[dict]:
    path = Path(run_dir) / f"{name}.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def step_drops(run: dict) -> List[float]:
    """Val points below dense right after each block's prune (before its fine-tune)."""
    return [run["val_top1_dense"] - float(r["val_top1_pruned"])
            for r in run_table(run, "steps") if r.get("val_top1_pruned")]


def own_overrides(run: dict, tier: Tier) -> str:
    """The overrides of a run beyond its tier's common settings."""
    return " ".join(o for o in run["overrides"] if o not in tier.common)


def ice_section(tier: Tier, c: Comparison, runs: List[dict], results: dict) -> List[str]:
    base, plain, ice, *ref = runs
    lines = table(
        ["", "test top-1 %", "Δ dense", "params ×", "FLOPs ×", "fine-tunes / steps",
         "tuning s", "probe s", "prune s", "validations s", "fine-tunes s", "pruning time s",
         "speedup vs the reference's baseline"],
        [[r["label"], _f(r["top1"]), f"{r['delta_top1']:+.2f}", _f(r["compression_ratio"]),
          _f(r["theoretical_speedup"]), f"{r['finetune_count']} / {r['steps']}",
          _f(r.get("time_search_s"), ".0f"), _f(r.get("time_probe_s"), ".0f"),
          _f(r.get("time_prune_s"), ".0f"), _f(r.get("time_eval_s"), ".0f"),
          _f(r.get("time_finetune_s"), ".0f"), _f(ice_time(r), ".0f"),
          f"{base['time_total_s'] / ice_time(r):.2f}x"]
         for r in runs])
    choice = (results.get("reference_objective") or {}).get(c.key)
    if choice and not ref:
        lines += ["", f"Under the reference code's tuning objective (T/max(D,T) + D/max(D,T)) "
                      f"the tuning chooses the same trial ({choice['reference']}) as ours: the "
                      "run is the ICE run above, so the verdict does not hang on the objective."]
    elif ref:
        lines += ["", f"Under the reference code's tuning objective the tuning chooses trial "
                      f"{choice['reference'] if choice else '?'} where ours chose "
                      f"{choice['ours'] if choice else '?'}: its run is the last row."]
    if ice.get("probe_images"):
        lines += ["", f"ICE's freezing probe trained on {ice['probe_images']:,} images"
                      + (" (the tuning trials' probe, `method.probe_data=trials`)."
                         if ice.get("probe_images") == ice.get("autotune_train_images") else ".")]
    if ice.get("time_reference_trial_s"):
        lines += ["", f"ICE's pruning time leaves out the {ice['time_reference_trial_s']:.0f} s "
                      "reference trial below (run for this report only)."]
    per_epoch = {r["label"]: r["time_finetune_s"] / r["finetune_epochs"]
                 for r in (base, plain, ice) if r.get("finetune_epochs")}
    if len(per_epoch) == 3:
        lines += ["", "A fine-tune epoch cost " + ", ".join(
            f"{label} {sec:.1f} s" for label, sec in per_epoch.items())
            + ": both ICE and the reference's baseline run the dense teacher's forward pass "
              "(under no_grad) on every step, and ICE's frozen "
              f"{len(ice.get('frozen_layers') or [])} layers save their weight gradients."]
    drops = step_drops(ice)
    if drops:
        threshold = (ice.get("ice_knobs") or {}).get("threshold")
        lines += ["", f"Right after each block's prune ICE's model was {min(drops):.1f}–"
                      f"{max(drops):.1f} val points below dense (median "
                      f"{sorted(drops)[len(drops) // 2]:.1f}); with the chosen threshold of "
                      f"{_f(threshold, 'g')} points, rule i fine-tuned at "
                      f"{ice['finetune_count']} of {ice['steps']} steps."]
    trials = run_table(ice, "trials")
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
    """(the tier's document, the README's condensed block)."""
    lines = header_lines(results, tier)
    summary_rows = []
    for n, c in enumerate(tier.comparisons, 1):
        section, row = comparison_lines(n, c, results, tier)
        lines += section
        summary_rows.append(row)
    lines += depth_lines(results, tier) + gpu_lines(results, tier)
    readme = [f"Measured by `make verdicts` ({tier.name} tier, Fashion-MNIST at "
              f"{'16x16' if tier.name == 'cpu' else 'native size'}, "
              f"{comparisons_seconds(results) / 60:.0f} min on "
              f"{results.get('machine', '').split(', torch')[0]}); details, settings and the "
              "reasons in [docs/results.md](docs/results.md).", ""]
    readme += table(["paper", "claim", "measured here", "verdict"], summary_rows)
    return "\n".join(lines) + "\n", "\n".join(readme) + "\n"


def header_lines(results: dict, tier: Tier) -> List[str]:
    dense = {m: results["runs"].get(f"dense_{m}") for m in tier.models}
    lines = ["# Does it reproduce the papers? Verdicts on Fashion-MNIST"
             + (" (GPU tier)" if tier.name == "full" else ""), "",
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
             "differences under ~0.5 points are within seed noise. A claim is said not to hold "
             "only where every decisive setting is its paper's; elsewhere it is *not tested "
             "in its regime*, with what is missing.", "",
             "## The dense models", ""]
    lines += table(["model", "test top-1 %", "val top-1 %", "params", "training",
                    "training time"],
                   [[m, _f(d["top1_dense"]), _f(d.get("val_top1_dense")), f"{d['params_dense']:,}",
                     dense_recipe(tier),
                     f"{d['dense_training_s'] / 60:.1f} min"
                     + (" (cached)" if str(d.get("dense_source", "")).startswith("cache") else "")]
                    for m, d in dense.items() if d])
    return lines


def comparison_lines(n: int, c: Comparison, results: dict, tier: Tier) -> Tuple[List[str], list]:
    """A comparison's section, and its row of the README's table."""
    runs = runs_of(results, c.key)
    paper, claim = CLAIMS[c.kind]
    lines = ["", f"## {n}. {c.title} ({c.model})", "", f"**Claim** — {paper}: {claim}.", "",
             f"**Our setting** — {c.model}, {c.why}", ""]
    if len(runs) < len(c.runs):
        return lines + ["Not run in this session."], [paper.split(" (")[0], claim, "not run", "—"]
    lines += (ice_section(tier, c, runs, results) if c.kind == "ice"
              else generic_section(c, runs))
    lines += ["", "Runs (on top of the common settings):", "",
              *(f"- {r['label']}: `{own_overrides(r, tier)}`" for r in runs)]
    settings = regime(c.key, runs)
    lines += ["", "Settings against the paper's (a decisive one that differs keeps the claim "
                  "*not tested in its regime*):", ""]
    lines += table(["setting", "here", "the paper", "matches"],
                   [[x.what, x.here, x.paper, ("yes" if x.matches else "no")
                     + ("" if x.decisive else " (not decisive)")] for x in settings])
    verdict, why, figures = judge(c.key, runs)
    verdict, why = in_regime(verdict, why, settings)
    figure = headline(c.key, runs, figures)
    lines += ["", f"**Measured** — {figure}.", "", f"**Verdict: {verdict}** — {why}."]
    return lines, [paper.split(" (")[0] + (f" ({c.model})" if c.kind == "ice" else ""), claim,
                   figure, f"**{verdict}**"]


def ice_depths(results: dict, tier: Tier) -> List[dict]:
    """Per ICE comparison run in full: its depth, speedup, accuracy gap, fraction fine-tuned."""
    points = []
    for c in tier.comparisons:
        runs = runs_of(results, c.key)
        if c.kind != "ice" or len(runs) < len(c.runs):
            continue
        base, plain, ice = runs[:3]
        points.append({"model": c.model, "blocks": ice["steps"],
                       "speedup": base["time_total_s"] / ice_time(ice),
                       "speedup_plain": plain["time_total_s"] / ice_time(ice),
                       "gap": ice["top1"] - base["top1"],
                       "finetuned": ice["finetune_count"] / max(ice["steps"], 1)})
    return sorted(points, key=lambda p: p["blocks"])


def depth_lines(results: dict, tier: Tier) -> List[str]:
    points = ice_depths(results, tier)
    if not points:
        return []
    lines = ["", "## ICE against depth", "",
             "The paper's claim is about deep networks, where one block is a small part of "
             "the whole: its speedup, accuracy gap and the fraction of blocks it fine-tuned "
             "after, per depth measured here.", ""]
    lines += table(["network", "blocks", "speedup vs the reference's baseline",
                    "speedup vs the plain pipeline", "top-1 gap (points)",
                    "blocks fine-tuned"],
                   [[p["model"], str(p["blocks"]), f"{p['speedup']:.2f}x",
                     f"{p['speedup_plain']:.2f}x", f"{p['gap']:+.2f}",
                     f"{p['finetuned']:.0%}"] for p in points])
    if len(points) >= 2:
        lines += ["", f"![ICE against depth](img/ice_depth_{tier.name}.png)"]
    return lines


def depth_plot(results: dict, tier: Tier, path: Path) -> bool:
    """The depth table as a picture (speedup and fraction fine-tuned against blocks); False
    when fewer than two depths were measured."""
    points = ice_depths(results, tier)
    if len(points) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = [p["blocks"] for p in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(blocks, [p["speedup"] for p in points], "o-", label="vs the reference's baseline")
    a.plot(blocks, [p["speedup_plain"] for p in points], "s--", label="vs the plain pipeline")
    a.axhline(1.0, color="grey", lw=0.8)
    a.set(xlabel="residual blocks pruned", ylabel="ICE speedup (x)", title="pruning time")
    a.legend(fontsize=8)
    b.plot(blocks, [100 * p["finetuned"] for p in points], "o-")
    b.set(xlabel="residual blocks pruned", ylabel="% of blocks fine-tuned after",
          title="rule i", ylim=(0, 105))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
    plt.close(fig)
    return True


def gpu_lines(results: dict, tier: Tier) -> List[str]:
    """The GPU tier: its jobs, each with its estimated and (where run) measured minutes."""
    gpu = gpu_tier()
    measured = results.get("jobs", {}) if tier.name == "full" else {}
    lines = ["", "## GPU tier", ""]
    if tier.name != "full":
        lines += ["The GPU tier (ICE at resnet56, resnet110 and resnet152_cifar at 28x28, the "
                  "other claims on resnet56 with more epochs) is split into jobs that each fit "
                  "one device call, merging into one results.json; its figures are in "
                  "`docs/results-gpu.md` once run. None of its figures is here: they "
                  "were not measured on this machine.", ""]
    lines += ["`make verdicts-gpu JOB=<job>` (`python scripts/verdicts.py --full --job <job>`); "
              "a job trains the dense models it needs unless results.json records them (from "
              "the cache when it holds them). Estimated minutes on one H200 from the first GPU "
              "run's per-epoch and per-block times (eager loop); over 8 means the job needs a "
              "faster loop than that run's to fit one call:", ""]
    lines += table(["job", "runs", "estimated min", "measured min"],
                   [[job, ", ".join(entries), _f(gpu.job_minutes.get(job), ".1f"),
                     _f(measured[job]["wall_s"] / 60, ".1f") if job in measured else "not run"]
                    for job, entries in gpu.jobs.items()])
    return lines


def dense_recipe(tier: Tier) -> str:
    epochs = next((o.split("=", 1)[1] for o in tier.common if o.startswith("pretrain.epochs=")),
                  "the data set's default")
    return f"{epochs} epochs, SGD lr 0.05 cosine, crop + flip"


def headline(key: str, runs: List[dict], f: dict) -> str:
    key = kind_of(key)
    if key == "ice":
        return (f"ICE {f['time_ratio']:.2f}x as fast as the reference's standard pipeline, "
                f"top-1 {f['top1_gap']:+.2f} points ({runs[2]['top1']:.2f} % vs "
                f"{runs[0]['top1']:.2f} %), fine-tuned after {f['finetuned']:.0%} of its blocks")
    if key == "slr":
        return (f"hard-prune top-1 SLR {f['slr_hard']:.2f} % vs ADMM {f['admm_hard']:.2f} %; "
                f"after 1 retrain epoch {f['slr_retrain1']:.2f} % vs {f['admm_retrain1']:.2f} %")
    if key == "autocompress":
        ac = runs[-1]
        rounds = hp(ac, "rounds", 0)
        epochs = rounds * (hp(ac, "iterations", 0) * hp(ac, "epochs_per_iteration", 1)
                           + hp(ac, "finetune_epochs", 0))
        return (f"{f['compression']:.1f}x fewer parameters, {f['flops']:.1f}x fewer FLOPs, "
                f"{-f['top1_loss']:+.2f} points vs dense, in {epochs} training epochs "
                f"({rounds} rounds)")
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
                         "(ice_2: the third run of ice), replacing them in OUT/results.json")
    ap.add_argument("--job", default=None,
                    help="run one of the tier's jobs (the GPU tier's fit one device call each), "
                         "merging into OUT/results.json")
    ap.add_argument("--out", default=None, help="run directories and results.json "
                                                "(default outputs/verdicts-TIER)")
    ap.add_argument("--doc", default=None, help="default docs/results.md; the GPU tier's "
                                                "docs/results-gpu.md")
    ap.add_argument("--readme", default=None,
                    help="update its block between the verdict markers ('' to leave it; "
                         "default README.md, none for the GPU tier)")
    ap.add_argument("--render", action="store_true",
                    help="rewrite the documents from OUT/results.json without running")
    args = ap.parse_args(argv)
    tier = TIERS[args.tier or ("full" if args.full else "cpu")]()
    names = {c.key for c in tier.comparisons} | {f"dense_{m}" for m in tier.models} | {
        f"{c.key}_{i}" for c in tier.comparisons
        for i in range(len(c.runs) + (c.kind == "ice"))}
    if set(args.only) - names:
        ap.error(f"--only {' '.join(sorted(set(args.only) - names))}: not a comparison or run; "
                 f"choose from {', '.join(sorted(names))}")
    if args.job is not None and args.job not in tier.jobs:
        ap.error(f"--job {args.job}: the {tier.name} tier's jobs are "
                 f"{', '.join(tier.jobs) or 'none'}")
    full = tier.name == "full"
    doc_path = Path(args.doc or ROOT / "docs" / ("results-gpu.md" if full else "results.md"))
    readme = args.readme if args.readme is not None else ("" if full else str(ROOT / "README.md"))
    out = Path(args.out or ROOT / "outputs" / f"verdicts-{tier.name}")
    if args.render:
        results = Results.load(out / "results.json")
    else:
        results = run_tier(tier, out, args.only, args.job)
    doc, block = render(results.data, tier)
    if results.data.get("partial") and doc_path.is_file():
        doc = splice(doc_path.read_text(), doc, results.data)
        old_block = readme_block(Path(readme)) if readme else None
        block = splice_readme(old_block, block) if old_block else block
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(doc_path, doc)
    if depth_plot(results.data, tier, doc_path.parent / "img" / f"ice_depth_{tier.name}.png"):
        CONSOLE.print(f"wrote {doc_path.parent / 'img'}/ice_depth_{tier.name}.png")
    CONSOLE.print(f"wrote {doc_path}")
    if readme and update_readme(Path(readme), block):
        CONSOLE.print(f"updated the verdicts in {readme}")
    CONSOLE.print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
