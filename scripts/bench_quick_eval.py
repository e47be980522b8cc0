"""Does AutoCompress's quick evaluation predict? The rank correlation between each candidate's
quick score and its val top-1 after the round's ADMM, hard prune and fine-tune.

At round `--round` of `method=autocompress` (the rounds before it run as the method runs them),
the search's uniform start and `--candidates` - 1 of its neighbours (moves of the size of the
search's first ones, `--heat` = T/T0) are each scored by the quick evaluation: one-shot hard prune,
then val top-1 on the search's val split, with BatchNorm statistics re-estimated on 0 (the
paper's raw score) and on each of `--calibration` train images (adaptive BN). Each candidate is
then trained as the round trains the action it chose (ADMM, hard prune, fine-tune; purification
left out) on a copy of the model, and scored on the whole val split. Prints every candidate's
figures and, per quick score, Spearman's rho against the trained accuracy, how many candidates it
scores at chance, and its seconds per evaluation.

    python scripts/bench_quick_eval.py [--round 3] [--candidates 8] [--calibration 256 1024]
        [-- override ...]   # default: method=autocompress model=resnet18 dataset=digits
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from typing import Dict, List

import pandas as pd
from benchutil import emit
from hydra import compose, initialize_config_module
from rich.console import Console
from rich.table import Table

from prunekit.methods.admm import admm_train
from prunekit.methods.autocompress import (
    Autocompress,
    action_measure,
    constraints_for,
    round_targets,
    search_space,
)
from prunekit.methods.autocompress_search import initial_action, neighbour
from prunekit.runner import run
from prunekit.sparsity.projection import hard_prune

DEFAULTS = ["method=autocompress", "model=resnet18", "dataset=digits", "sparsity=0.8", "seed=0",
            "train.progress=false", "hardware.latency.enabled=false", "checkpoint.enabled=false"]


def candidates(ctx, method: Autocompress, space, target, n, heat, seed):
    """The uniform start and n - 1 of its neighbours at T/T0 = heat."""
    s = method.options.search
    measure = action_measure(ctx.pruner, space.units)
    start = initial_action(space, target, s.max_rate, measure)
    rng = random.Random(seed)
    return [start] + [neighbour(start, space, target, s.max_rate, s.perturbation * heat,
                                s.scheme_flip * heat, rng, measure) for _ in range(n - 1)]


def trained_accuracy(ctx, method: Autocompress, units, action, label: str) -> float:
    """Val top-1 of the action after the round's ADMM, hard prune and fine-tune, on a copy."""
    c = method.options
    fork = ctx.fork(quiet=True)
    fork.masks.restore(ctx.masks.state())  # the earlier rounds' masks come along
    constraints = constraints_for(fork.pruner, units, action)
    admm_train(fork, constraints, c, desc=f"{label} ADMM")
    hard_prune(constraints, fork.pruner)
    fork.finetune(c.finetune_epochs, c.lr, desc=f"{label} fine-tune")
    return fork.validate()


def probe(args, rows: List[Dict]):
    """Autocompress.run replaced: the rounds before args.round, then the measurement."""

    def method_run(self: Autocompress, ctx) -> None:
        c = self.cfg
        targets = round_targets(ctx.target, c.rounds)
        search, check = self.quick_evaluations(ctx)
        rng = random.Random(ctx.plan.seed)
        for i in range(1, args.round):
            self.round(ctx, i, targets[i - 1], search, check, rng)
        target = targets[args.round - 1]
        space = search_space(ctx.pruner, tuple(c.granularity.split("+")))
        units = space.units
        scorers = {n: self.quick_evaluations(ctx, n)[0] for n in [0, *args.calibration]}
        actions = candidates(ctx, self, space, target, args.candidates,
                             args.heat, ctx.plan.seed + args.round)
        for k, action in enumerate(actions):
            row = {"candidate": k, "filter_units": sum(x == "filter" for x in action.schemes),
                   "classes": ctx.data.num_classes}
            for n, score in scorers.items():
                started = time.perf_counter()
                got = score.of_action(units, action)
                row[f"seconds_{n}"] = time.perf_counter() - started
                row[f"quick_{n}"], row[f"loss_{n}"] = got.top1, got.loss
            row["trained"] = trained_accuracy(ctx, self, units, action, f"candidate {k}")
            rows.append(row)
            print(f"candidate {k}: " + ", ".join(f"{key} {v:.2f}" for key, v in row.items()
                                                 if key.startswith(("quick", "trained"))),
                  flush=True)

    return method_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round", type=int, default=3, help="the round measured (1 = from dense)")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--heat", type=float, default=1.0, help="T/T0 of the moves (1: the first)")
    ap.add_argument("--calibration", type=int, nargs="+", default=[256, 1024],
                    help="train images BatchNorm is re-estimated on (0, raw, is always scored)")
    ap.add_argument("--json", default=None)
    ap.add_argument("overrides", nargs="*", help="prune-run overrides on top of the defaults")
    args = ap.parse_args()
    with initialize_config_module("prunekit.conf", version_base="1.3"):
        given = {o.split("=")[0] for o in args.overrides}
        cfg = compose("config", overrides=[*(d for d in DEFAULTS if d.split("=")[0] not in given),
                                           *args.overrides])
    if not 1 <= args.round <= cfg.method.rounds:
        ap.error(f"--round {args.round}: the run has rounds 1..{cfg.method.rounds}")
    rows: List[Dict] = []
    Autocompress.run = probe(args, rows)
    with tempfile.TemporaryDirectory() as out:
        run(cfg, out, show=False)

    frame = pd.DataFrame(rows)
    chance = 100.0 / frame["classes"][0] + 2.5  # at or near chance: within 2.5 points of it
    table = Table(title=f"quick score vs trained val top-1 · {cfg.model.name} · "
                        f"{cfg.dataset.name} · sparsity {cfg.sparsity} · round {args.round}")
    for col in ("quick score", "Spearman rho", "at chance", "s / evaluation"):
        table.add_column(col, justify="right")
    out = {"round": args.round, "candidates": len(frame)}
    for n in [0, *args.calibration]:
        name = "raw (no BN re-estimate)" if n == 0 else f"adaptive BN, {n} images"
        at_chance = int((frame[f"quick_{n}"] <= chance).sum())
        seconds = frame[f"seconds_{n}"].mean()
        for what, score in (("top-1", frame[f"quick_{n}"]), ("-loss", -frame[f"loss_{n}"])):
            # all candidates tied (e.g. all at chance): no ranking at all, rho 0
            rho = score.corr(frame["trained"], method="spearman") if score.nunique() > 1 else 0.0
            table.add_row(f"{name}: val {what}", f"{rho:+.2f}", f"{at_chance}/{len(frame)}",
                          f"{seconds:.2f}")
            out[f"spearman_{'top1' if what == 'top-1' else 'loss'}_{n}"] = rho
        out.update({f"at_chance_{n}": at_chance, f"seconds_per_evaluation_{n}": seconds})
    Console().print(table)
    out["trained_val_top1"] = [round(v, 2) for v in frame["trained"]]
    emit(out, args.json)


if __name__ == "__main__":
    main()
