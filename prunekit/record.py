"""What a run leaves behind and shows: the phase clock, steps.csv, layers.csv, summary.json, and the
rich console view (progress bars, the final summary table).

summary.json is written atomically (temp file + rename) so a reader never sees half a file;
steps.csv is appended and flushed row by row so an interrupted run keeps every finished step.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

CONSOLE = Console()
PHASES = ("search", "probe", "prune", "finetune", "eval")


class ConsoleLogHandler(RichHandler):
    """Log records on the shared console, so they print cleanly above live progress bars."""

    def __init__(self, level: int = logging.NOTSET, stream=None):  # stream: Hydra's default config
        super().__init__(level=level, console=CONSOLE, show_time=False, show_path=False,
                         show_level=False, markup=False, rich_tracebacks=False)


def make_progress(enabled: bool = True) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=CONSOLE, transient=True,  # leaves no blank line behind
                    disable=not enabled or not CONSOLE.is_terminal)  # bars are for terminals


# --------------------------------------------------------------------------- phase clock
class PhaseClock:
    """Wall-clock seconds per phase (search / probe / prune / finetune / eval).

    Phases nest with exclusive accounting, like a profiler: time inside an inner phase is the inner
    phase's, not the outer's, so the phases never double count. `sync` (the device synchronise) is
    called at every boundary so queued GPU work lands in the phase that issued it.
    """

    def __init__(self, sync: Optional[Callable[[], None]] = None):
        self.totals: Dict[str, float] = {p: 0.0 for p in PHASES}
        self._stack: List[List] = []  # [phase, started_at]
        self._sync = sync or (lambda: None)

    @contextlib.contextmanager
    def phase(self, name: str):
        if name not in self.totals:
            raise ValueError(f"unknown phase {name!r}")
        self._sync()
        now = time.perf_counter()
        if self._stack:  # pause the enclosing phase
            outer = self._stack[-1]
            self.totals[outer[0]] += now - outer[1]
        self._stack.append([name, now])
        try:
            yield
        finally:
            self._sync()
            now = time.perf_counter()
            phase, started = self._stack.pop()
            self.totals[phase] += now - started
            if self._stack:
                self._stack[-1][1] = now  # resume the enclosing phase

    def exclude(self, seconds: float) -> None:
        """Leave the last `seconds` out of the phase running now (reporting-only work)."""
        if self._stack:
            self._stack[-1][1] += seconds

    def as_summary(self) -> Dict[str, float]:
        return {f"time_{p}_s": round(self.totals[p], 4) for p in PHASES}


# --------------------------------------------------------------------------- files
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: Path) -> str:
    """A temp file next to `path` (same filesystem, so os.replace is atomic), with the permissions
    a plain open() would give it (mkstemp makes files private)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return tmp


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = temp_beside(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, rows: List[dict]) -> None:
    fields: List[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with tempfile.SpooledTemporaryFile(mode="w+", newline="") as buf:
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        buf.seek(0)
        atomic_write_text(path, buf.read())


class Recorder:
    """steps.csv row by row, plus layers.csv, summary.json and the method's own tables.
    `out_dir=None` keeps the rows in memory only (side work such as tuning trials)."""

    def __init__(self, out_dir: Optional[Path]):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.steps: List[dict] = []
        self._fields: List[str] = []

    @property
    def steps_path(self) -> Path:
        return self.out_dir / "steps.csv"

    def step(self, **row) -> None:
        row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        self.steps.append(row)
        if self.out_dir is None:
            return
        new_fields = [k for k in row if k not in self._fields]
        if new_fields and self._fields:  # a new column: rewrite the file with the wider header
            self._fields += new_fields
            write_csv(self.steps_path, self.steps)
            return
        if not self._fields:
            self._fields = list(row)
            with open(self.steps_path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self._fields).writeheader()
        with open(self.steps_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fields).writerow(row)
            f.flush()

    def reset(self, rows: List[dict]) -> None:
        """Continue from these rows (a resumed run): steps.csv is rewritten to hold just them."""
        self.steps = list(rows)
        self._fields = []
        for row in self.steps:
            self._fields += [k for k in row if k not in self._fields]
        if self.out_dir is not None:
            write_csv(self.steps_path, self.steps)

    def table(self, name: str, rows: List[dict]) -> None:
        """Write (atomically, whole) `name`.csv: layers, tuning trials, search moves."""
        if self.out_dir is not None:
            write_csv(self.out_dir / f"{name}.csv", rows)

    def layers(self, rows: List[dict]) -> None:
        self.table("layers", rows)

    def summary(self, data: dict) -> None:
        if self.out_dir is not None:
            write_json(self.out_dir / "summary.json", data)


def summary_identity(cfg: DictConfig) -> dict:
    """The keys a summary has even when the run fails before doing anything."""
    method = cfg.get("method") or {}
    hparams = OmegaConf.to_container(method, resolve=False) if isinstance(method, DictConfig) else {}
    return {
        "status": "running",
        "method": method.get("name"), "model": (cfg.get("model") or {}).get("name"),
        "dataset": (cfg.get("dataset") or {}).get("name"),
        "hardware": (cfg.get("hardware") or {}).get("name"), "seed": cfg.get("seed"),
        "granularity": method.get("granularity"),
        "target_sparsity": 0.0 if method.get("name") == "dense" else cfg.get("sparsity"),
        # the contract's "params dict" of hyperparameters: `params` itself is the parameter count
        "hparams": hparams, "error": None,
    }


def write_failed_summary(out_dir: Path, cfg: DictConfig, error: str) -> None:
    """A run that stopped before doing anything still says so, in its own summary.json."""
    write_json(Path(out_dir) / "summary.json", {**summary_identity(cfg), "status": "failed",
                                                "error": error})


# --------------------------------------------------------------------------- console view
def _fmt(value, spec: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec) if spec else str(value)


def _ratio(value, what: str) -> str:
    return "–" if value is None else f"{value:.2f}× {what}"


def _si(n) -> str:
    if n is None:
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def summary_table(s: dict) -> Table:
    """Dense vs pruned, side by side, with what each number means in the caption."""
    title = (f"{s.get('method')} · {s.get('model')} · {s.get('dataset')} · seed {s.get('seed')} · "
             f"{s.get('granularity')}")
    t = Table(title=title, title_style="bold", show_lines=False)
    t.add_column("metric")
    t.add_column("dense", justify="right")
    t.add_column("pruned", justify="right")
    t.add_column("ratio / Δ", justify="right")
    t.add_row("top-1 (test, %)", _fmt(s.get("top1_dense"), ".2f"), _fmt(s.get("top1"), ".2f"),
              _fmt(s.get("delta_top1"), "+.2f"))
    t.add_row("top-5 (test, %)", _fmt(s.get("top5_dense"), ".2f"), _fmt(s.get("top5"), ".2f"), "")
    t.add_row("sparsity (prunable weights)", "0", _fmt(s.get("sparsity"), ".4f"),
              f"target {_fmt(s.get('target_sparsity'), '.4f')}")
    t.add_row("sparsity (all parameters)", "0", _fmt(s.get("sparsity_total"), ".4f"), "")
    t.add_row("parameters", _si(s.get("params_dense")), _si(s.get("params")), "")
    t.add_row("non-zero parameters", _si(s.get("params_dense")), _si(s.get("params_nonzero")),
              _ratio(s.get("compression_ratio"), "smaller"))
    t.add_row("FLOPs (1 image)", _si(s.get("flops_dense")), _si(s.get("flops")),
              _ratio(s.get("theoretical_speedup"), "(theoretical)"))
    kind = s.get("speedup_kind")
    batches = sorted(int(k[len("latency_ms_bs"):]) for k in s if k.startswith("latency_ms_bs"))
    for bs in batches or [s.get("latency_batch_size", 1)]:
        dense, pruned = s.get(f"latency_ms_dense_bs{bs}"), s.get(f"latency_ms_bs{bs}")
        if not batches:
            dense, pruned = s.get("latency_ms_dense"), s.get("latency_ms")
        speedup = s.get(f"measured_speedup_bs{bs}", s.get("measured_speedup"))
        if s.get(f"latency_reliable_bs{bs}") is False:
            ratio = "unreliable (busy machine)"
        elif kind == "theoretical":
            ratio = "– (dense kernels)"
        else:
            ratio = _ratio(speedup, "(2:4 kernels)" if kind == "sparse_kernels" else "(measured)")
        t.add_row(f"latency (ms, batch {bs})", _fmt(dense, ".3f"), _fmt(pruned, ".3f"), ratio)
    phases = " · ".join(f"{p} {_fmt(s.get(f'time_{p}_s'), '.1f')}s" for p in PHASES)
    t.caption = (f"pruning time {_fmt(s.get('time_total_s'), '.1f')} s ({phases}); dense training "
                 f"{_fmt(s.get('time_pretrain_s'), '.1f')} s, not counted. "
                 f"{plural(s.get('steps'), 'step')}, {plural(s.get('finetune_count'), 'fine-tune')} "
                 f"({plural(s.get('finetune_epochs'), 'epoch')}).")
    if s.get("latency_warning"):
        t.caption += (f"\nLatency unreliable, no speedup claimed ({s['latency_warning']}): "
                      "measure on an idle machine.")
    return t


def plural(n, noun: str) -> str:
    """'1 step', '3 steps', '– steps'."""
    return f"{_fmt(n)} {noun}{'' if n == 1 else 's'}"


def print_summary(summary: dict) -> None:
    CONSOLE.print(summary_table(summary))
    if summary.get("status") != "ok":
        CONSOLE.print(f"[bold red]status: {summary.get('status')}[/] {summary.get('error') or ''}")
