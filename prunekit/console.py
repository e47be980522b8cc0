"""What a user sees in the terminal: log lines, progress bars and the final summary table."""
from __future__ import annotations

import logging
import math
from typing import Sequence, Tuple

from rich.console import Console
from rich.logging import RichHandler
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from prunekit.clock import PHASES
from prunekit.targets import TARGET_KINDS

CONSOLE = Console()


class ConsoleLogHandler(RichHandler):
    """Log records on the shared console, so they print cleanly above live progress bars; off a
    terminal (nohup, a SLURM log, a pipe) as plain lines, never wrapped at a guessed width."""

    def __init__(self, level: int = logging.NOTSET, stream=None):  # stream: Hydra's default config
        super().__init__(level=level, console=CONSOLE, show_time=False, show_path=False,
                         show_level=False, markup=False, rich_tracebacks=False)

    def emit(self, record: logging.LogRecord) -> None:
        if CONSOLE.is_terminal:
            return super().emit(record)
        try:
            CONSOLE.file.write(self.format(record) + "\n")
            CONSOLE.file.flush()
        except Exception:
            self.handleError(record)


def print_table(renderable) -> None:
    """Print a table: on a terminal at its width; off one (a file or pipe has no width, and rich
    would cut the table at 80 columns) as wide as the table needs."""
    if CONSOLE.is_terminal:
        CONSOLE.print(renderable)
        return
    needed = Measurement.get(CONSOLE, CONSOLE.options.update_width(10_000), renderable).maximum
    Console(file=CONSOLE.file, width=max(needed, CONSOLE.width), color_system=None,
            soft_wrap=False).print(renderable)


def make_progress(enabled: bool = True) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=CONSOLE, transient=True,  # leaves no blank line behind
                    disable=not enabled or not CONSOLE.is_terminal)  # bars are for terminals


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


def target_rows(t: Table, s: dict) -> None:
    """The sparsity row, and a factor target's row: what it aimed at and what it reached."""
    target_kind = s.get("target_kind", "sparsity")
    factor = getattr(TARGET_KINDS.get(target_kind), "factor", True)
    t.add_row("sparsity (prunable weights)", "0", _fmt(s.get("sparsity"), ".4f"),
              "" if factor else f"target {_fmt(s.get('target_sparsity'), '.4f')}")
    if factor and s.get("speedup_kind") != "none":  # a dense row aims at none
        solve = s.get("latency_solve_measurements")
        t.add_row(f"target: {target_kind} × (achieved)", "1", _fmt(s.get("target_achieved"), ".3f"),
                  f"target {_fmt(s.get('target_value'), 'g')}× "
                  f"({_fmt(s.get('target_error'), '+.1%')})"
                  + (f", solved in {plural(solve, 'measurement')}" if solve else ""))


def latency_rows(t: Table, s: dict) -> None:
    """One row per runtime and timing mode (torch eager; CUDA-graphed and ONNX Runtime where
    measured) and batch size, with the precision it ran in: dense and pruned latency, and what
    the ratio is; then how ONNX Runtime's outputs agree with torch's."""
    for mode, title in (("", "latency"), ("graphed_", "latency graphed"),
                        ("onnxruntime_", "latency onnxruntime"),
                        ("onnxruntime_int8_", "latency onnxruntime")):
        prefix = f"latency_{mode}ms_bs"
        batches = sorted(int(k[len(prefix):]) for k in s if k.startswith(prefix))
        if mode and not batches:
            continue
        precision = RUNTIME_PRECISIONS.get(mode) or s.get("latency_precision", "fp32")
        for bs in batches or [s.get("latency_batch_size", 1)]:
            dense, pruned = s.get(f"latency_{mode}ms_dense_bs{bs}"), s.get(f"{prefix}{bs}")
            if not batches:
                dense, pruned = s.get("latency_ms_dense"), s.get("latency_ms")
            speedup = s.get(f"measured_speedup_{mode}bs{bs}", s.get("measured_speedup"))
            t.add_row(f"{title} (ms, batch {bs}, {precision})", _fmt(dense, ".3f"),
                      _fmt(pruned, ".3f"),
                      latency_ratio(s, speedup, s.get(f"latency_{mode}reliable_bs{bs}")))
    for mode, what in (("onnxruntime", "onnxruntime"), ("onnxruntime_int8", "int8")):
        if s.get(f"{mode}_top1_agreement") is None:
            continue
        images = s.get(f"{mode}_check_images")
        t.add_row(f"{what} = torch (top-1 of {images} images)",
                  _fmt(100 * s[f"{mode}_top1_agreement_dense"], ".2f") + "%",
                  _fmt(100 * s[f"{mode}_top1_agreement"], ".2f") + "%",
                  f"max |Δ| {s[f'{mode}_max_abs_diff']:.1e}")
        t.add_row(f"top-1 {what} ({images} test images, %)",
                  _fmt(s.get(f"{mode}_top1_dense"), ".2f"), _fmt(s.get(f"{mode}_top1"), ".2f"),
                  _fmt(s[f"{mode}_top1"] - s[f"{mode}_top1_dense"], "+.2f"))


RUNTIME_PRECISIONS = {"onnxruntime_": "fp32", "onnxruntime_int8_": "int8"}


def latency_ratio(s: dict, speedup, reliable) -> str:
    """What a latency row's ratio is: measured, unreliable, slower, or none (dense kernels)."""
    kind = s.get("speedup_kind")
    if reliable is False:
        return "unreliable (busy machine)"
    if kind == "theoretical":
        return "– (dense kernels)"
    ratio = _ratio(speedup, "(2:4 kernels)" if kind == "sparse_kernels" else "(measured)")
    return ratio + (": slower" if speedup is not None and speedup < 1.0 else "")


def summary_table(s: dict, headline: Sequence[Tuple[str, object, str]] = ()) -> Table:
    """Dense vs pruned, side by side, with what each number means in the caption; `headline`:
    the method's own figures, (title, value, format) each (Method.headline_rows)."""
    title = (f"{s.get('method')} · {s.get('model')} · {s.get('dataset')} · seed {s.get('seed')} · "
             f"{s.get('granularity')}")
    t = Table(title=title, title_style="bold", show_lines=False)
    t.add_column("metric")
    t.add_column("dense", justify="right")
    t.add_column("pruned", justify="right")
    t.add_column("ratio / Δ", justify="right")
    t.add_row("top-1 (test, %)", _fmt(s.get("top1_dense"), ".2f"), _fmt(s.get("top1"), ".2f"),
              _fmt(s.get("delta_top1"), "+.2f"))
    for title, value, fmt in headline:
        t.add_row(title.replace(" %", " (test, %)"), "", _fmt(value, fmt),
                  _fmt(value - s["top1_dense"], "+.2f")
                  if isinstance(value, float) and s.get("top1_dense") is not None else "")
    t.add_row("top-5 (test, %)", _fmt(s.get("top5_dense"), ".2f"), _fmt(s.get("top5"), ".2f"), "")
    target_rows(t, s)
    t.add_row("sparsity (all parameters)", "0", _fmt(s.get("sparsity_total"), ".4f"), "")
    t.add_row("parameters", _si(s.get("params_dense")), _si(s.get("params")), "")
    t.add_row("non-zero parameters", _si(s.get("params_dense")), _si(s.get("params_nonzero")),
              _ratio(s.get("compression_ratio"), "smaller"))
    kind = s.get("speedup_kind")
    # a compacted model has its FLOPs removed for real; masked weights only in theory (the dense
    # kernels still multiply the zeros)
    t.add_row("FLOPs (1 image)", _si(s.get("flops_dense")), _si(s.get("flops")),
              _ratio(s.get("theoretical_speedup"),
                     "fewer" if kind == "compacted" else "(theoretical)"))
    latency_rows(t, s)
    phases = " · ".join(f"{p} {_fmt(s.get(f'time_{p}_s'), '.1f')}s" for p in PHASES)
    t.caption = (f"pruning time {_fmt(s.get('time_total_s'), '.1f')} s ({phases}); dense training "
                 f"{_fmt(s.get('time_pretrain_s'), '.1f')} s, not counted. "
                 f"{plural(s.get('steps'), 'step')}, "
                 f"{plural(s.get('finetune_count'), 'fine-tune')} "
                 f"({plural(s.get('finetune_epochs'), 'epoch')}).")
    if s.get("latency_warning"):
        t.caption += (f"\nLatency unreliable, no speedup claimed ({s['latency_warning']}): "
                      "measure on an idle machine.")
    return t


def plural(n, noun: str) -> str:
    """'1 step', '3 steps', '– steps'."""
    return f"{_fmt(n)} {noun}{'' if n == 1 else 's'}"


def print_summary(summary: dict, headline: Sequence[Tuple[str, object, str]] = ()) -> None:
    print_table(summary_table(summary, headline))
    if summary.get("latency_slower"):
        CONSOLE.print(f"[bold yellow]{summary['latency_slower']}[/]", soft_wrap=True)
    if summary.get("status") != "ok":
        CONSOLE.print(f"[bold red]status: {summary.get('status')}[/] {summary.get('error') or ''}")
