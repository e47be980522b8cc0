"""Running a tier: its dense models first (timed apart), then its comparisons' runs, each
summary landing in OUT/results.json as soon as the run ends (a rerun or a GPU job merges into
it)."""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from hydra import compose, initialize_config_module
from rich.console import Console

import prunekit  # noqa: F401  (registers the config schemas)
from claims import CLAIMS
from claims.base import NO_LATENCY, Comparison, Tier, csv_rows
from prunekit.files import atomic_write_text
from prunekit.runner import run

CONSOLE = Console()


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
    index 3 is its run under the reference's tuning objective (Claim.extra_runs)."""
    runs = []
    for c in tier.comparisons:
        indices = range(len(c.runs) + CLAIMS[c.kind].extra_runs)
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
        if i >= len(c.runs):  # a claim's own further run (ICE's under the reference's objective)
            CLAIMS[c.kind].extra_run(tier, c, out, results, run_one)
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
