"""What a logger costs a run: the same run with logger=none, tensorboard, mlflow and wandb.

One configuration (default: oneshot LeNet-5 on Fashion-MNIST, 3 fine-tune epochs, from one cached
dense model) is run with each logger in turn, `--repeats` rounds, alternating, in one process.
The table gives the median wall-clock seconds of the whole run, the run's own pruning time
(`time_total_s`, which leaves the per-epoch evaluation of a tracked run out) and both against
logger=none; the extra wall-clock is the tracker's start (imports, MLflow's database), its
per-epoch val top-1, and the uploads at the end.

    python scripts/bench_loggers.py [--repeats 3] [--out /tmp/bench_loggers] [overrides ...]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_module

import prunekit  # noqa: F401  (registers the schemas)
from prunekit.runner import run

LOGGERS = ["none", "tensorboard", "mlflow", "wandb"]
DEFAULT = ["method=oneshot", "method.finetune_epochs=3", "model=lenet5",
           "dataset=fashion_mnist", "pretrain.epochs=10", "train.progress=false",
           "hardware.latency.enabled=false", "checkpoint.enabled=false"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="where the runs go (default: a temp folder)")
    p.add_argument("overrides", nargs="*", help="prune-run overrides replacing the defaults")
    a = p.parse_args()
    overrides = a.overrides or DEFAULT
    out = Path(a.out or tempfile.mkdtemp(prefix="bench_loggers_"))
    with initialize_config_module(version_base="1.3", config_module="prunekit.conf"):
        cfgs = {name: compose("config", overrides=[*overrides, f"logger={name}"])
                for name in LOGGERS}
    run(cfgs["none"], out / "warmup", show=False)  # the dense model, trained once and cached
    wall = {name: [] for name in LOGGERS}
    pruning = {name: [] for name in LOGGERS}
    for r in range(a.repeats):
        for name in LOGGERS:  # alternating, so a busier moment weighs on every logger
            run_dir = out / f"{name}-{r}"
            shutil.rmtree(run_dir, ignore_errors=True)
            started = time.perf_counter()
            summary = run(cfgs[name], run_dir, show=False)
            wall[name].append(time.perf_counter() - started)
            pruning[name].append(summary["time_total_s"])
    print(" ".join(overrides))
    print(f"median of {a.repeats}; runs in {out}")
    print(f"{'logger':12} {'wall s':>8} {'× none':>7} {'pruning s':>10} {'× none':>7}")
    base_wall = statistics.median(wall["none"])
    base_pruning = statistics.median(pruning["none"])
    for name in LOGGERS:
        w, t = statistics.median(wall[name]), statistics.median(pruning[name])
        print(f"{name:12} {w:8.2f} {w / base_wall:7.2f} {t:10.2f} {t / base_pruning:7.2f}")


if __name__ == "__main__":
    main()
