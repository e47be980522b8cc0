"""What every claim shares: the comparisons and tiers it is run in, its settings against its
paper's, the verdict words, the Claim each module declares, and the table helpers."""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HOLDS, PART, NOT = "holds", "holds in part", "does not hold here"
NOT_TESTED = "not tested in its regime"  # what NOT reads as when a decisive setting is off
TIME_NOISE = 0.1  # wall times of the same run differ by about this much (docs/benchmarks.md)
NO_LATENCY = ["hardware.latency.enabled=false"]  # masked models: dense kernels, no speedup to time


@dataclass
class Comparison:
    key: str  # its claim's kind (ice, slr, autocompress, gradual), with the depth for ICE's
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


@dataclass
class Budget:
    """What one tier spends per comparison; every claim builds its comparisons from it."""

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


@dataclass
class Setting:
    """One setting of a comparison against the paper's: a claim judged where a decisive one
    does not match is not tested, whatever the figures say."""

    what: str
    here: str
    paper: str
    matches: bool
    decisive: bool = True


Verdict = Tuple[str, str, dict]  # (verdict, why, the figures it rests on)


@dataclass(frozen=True)
class Claim:
    """One paper's claim: its words, its runs per tier (from the tier's Budget), its settings
    against the paper's, its verdict rule and headline; optionally its own document section,
    runs beyond its comparison's (ICE's under the reference's objective), and document lines
    and a plot after every comparison (ICE against depth)."""

    kind: str
    paper: str
    text: str
    comparisons: Callable[[Budget], List[Comparison]]
    settings: Callable[[Sequence[dict]], List[Setting]]
    judge: Callable[[Sequence[dict]], Verdict]
    headline: Callable[[Sequence[dict], dict], str]
    section: Optional[Callable] = None  # (tier, comparison, runs, results) -> lines
    extra_columns: Tuple[Tuple[str, str], ...] = ()  # the generic section's (title, key)
    extra_runs: int = 0  # runs after the comparison's own that a rerun may name
    extra_run: Optional[Callable] = None  # (tier, comparison, out, results, run_one) -> None
    after: Optional[Callable] = None  # (results, tier) -> document lines after every section
    plot: Optional[Callable] = None  # (results, tier, path) -> whether it drew one
    row_names_model: bool = False  # its README row names the network (several depths)


def data_setting(runs: Sequence[dict]) -> Setting:
    return Setting("data", f"{runs[0].get('dataset')}", "CIFAR-10", False, decisive=False)


def hp(run: dict, key: str, default=None):
    return (run.get("hparams") or {}).get(key, default)


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


def fmt(v: Optional[float], spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def runs_of(results: dict, key: str) -> List[dict]:
    """A comparison's recorded runs (key_0, key_1, ...), in order."""
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
