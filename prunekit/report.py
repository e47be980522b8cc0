"""prune-report: every run under some directories -> one comparison table, its files and plots.

`prune-report DIR...` finds every summary.json under the given run or sweep directories and
groups the finished runs by (dataset, model, method, target) (`--group-by`; the target is
`sparsity 0.5`, `flops 2×`, ...: runs at a matched FLOPs, params or latency target share a row
group whatever their sparsity). Each metric
is shown as its mean ± std, with n, over the seeds. The report goes into the first directory (or
`--out`) as:

- report.md, report.csv and report.tex;
- plots (PNG):
  - accuracy against achieved sparsity, one line per method with error bars;
  - accuracy against pruning time, the cost/quality frontier;
  - pruning time split by phase, stacked bars;
- a rich table on the console.

Failed and interrupted runs are listed in a section of their own, each with its error.

`ReportCallback` is the Hydra callback that writes the report into the sweep directory at the end
of every multirun (conf/config.yaml registers it). It reads the jobs' files, so it works with any
launcher. It also remembers whether a job failed, which sets prune-run's exit code.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd
from hydra.experimental.callback import Callback
from rich.table import Table

from prunekit.clock import PHASES
from prunekit.config import METHODS
from prunekit.console import CONSOLE, print_table
from prunekit.errors import ConfigError, did_you_mean, first_line
from prunekit.files import atomic_write, atomic_write_text, write_failure
from prunekit.html_report import config_text, page
from prunekit.targets import describe

log = logging.getLogger(__name__)

# the method whose pruning time the others are measured against (its unit declares it)
REFERENCE = next(name for name, unit in METHODS.items() if unit.time_reference)
RELATIVE_TIME = f"time_vs_{REFERENCE}"
GROUP_BY = ["dataset", "model", "method", "target"]
# (summary key, column title, format); the default metrics of the table, in order
METRICS = [
    ("top1", "top-1 %", ".2f"),
    ("delta_top1", "Δ top-1", "+.2f"),
    ("sparsity", "sparsity", ".3f"),
    ("target_error", "target error", "+.2%"),
    ("params", "params", ",.0f"),
    ("params_nonzero", "non-zeros", ",.0f"),
    ("compression_ratio", "compression ×", ".2f"),
    ("theoretical_speedup", "FLOPs ×", ".2f"),
    ("measured_speedup", "measured ×", ".2f"),
    ("measured_speedup_onnxruntime", "onnxruntime ×", ".2f"),
    ("time_total_s", "pruning time s", ".1f"),
    (RELATIVE_TIME, f"time / {REFERENCE}", ".2f"),
]
METRIC_TITLES = {title for _, title, _ in METRICS}
FORMATS = ("md", "csv", "tex", "html")
REPORT_NOTE = ("Accuracies are test top-1 in %; sparsity counts the prunable weights; FLOPs × is "
               "theoretical; measured × is a real speedup (compacted or sparse kernels) at the "
               "first latency batch size, in torch (onnxruntime ×: in ONNX Runtime); pruning "
               "time excludes dense training.")


# --------------------------------------------------------------------------- collecting
def collect(dirs: Sequence[Path]) -> Tuple[pd.DataFrame, List[dict]]:
    """(finished runs, one row each; failed or interrupted runs) under `dirs`."""
    ok, failed = [], []
    seen = set()
    for d in dirs:
        for path in sorted(Path(d).rglob("summary.json")):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                s = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                failed.append({"run_dir": str(path.parent), "status": "unreadable",
                               "error": f"summary.json: {e}"})
                continue
            row = {k: v for k, v in s.items() if not isinstance(v, (dict, list))}
            row["run_dir"] = str(path.parent)  # where it is now: a copied or moved run's own
            row["target"] = target_label(row)
            (ok if s.get("status") == "ok" else failed).append(row)
    return pd.DataFrame(ok), failed


def check_metrics(metrics: Sequence[str], runs: pd.DataFrame) -> None:
    """A ConfigError naming the first metric that no run's summary has (with the nearest key)."""
    keys = [k for k in runs.columns if k not in GROUP_BY]
    for metric in metrics:
        if not runs.empty and metric not in runs.columns:
            raise ConfigError(f"--metric {metric} is not a key of these runs' summary.json"
                              f"{did_you_mean(metric, keys)}: a run's summary.json lists them")


def target_label(summary: dict) -> str:
    """What a run aimed at, as the table groups it: `sparsity 0.5`, `flops 2×` (summaries written
    before target.kind existed aimed at their target sparsity)."""
    kind = summary.get("target_kind") or "sparsity"
    value = summary.get("target_value", summary.get("target_sparsity"))
    return describe(kind, value) if value is not None else kind


def add_relative_time(runs: pd.DataFrame) -> pd.DataFrame:
    """time_vs_<reference>: each run's pruning time over the mean of the reference method's runs
    (the standard pipeline) of its (dataset, model, target); absent where none ran."""
    runs = runs.copy()
    runs[RELATIVE_TIME] = math.nan
    if runs.empty or "time_total_s" not in runs or not (runs["method"] == REFERENCE).any():
        return runs
    keys = ["dataset", "model", "target"]
    base = runs[runs["method"] == REFERENCE].groupby(keys)["time_total_s"].mean()
    for i, r in runs.iterrows():
        b = base.get(tuple(r[k] for k in keys))
        if b is not None and b > 0:
            runs.at[i, RELATIVE_TIME] = r["time_total_s"] / b
    return runs


def aggregate(runs: pd.DataFrame, group_by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per group: n, and `<metric>_mean`, `<metric>_std` (sample std; 0 for one run)."""
    if runs.empty:
        return pd.DataFrame(columns=[*group_by, "n"])
    runs = runs.copy()
    for k in group_by:
        if k not in runs:
            runs[k] = None
    cols = [m for m in metrics if m in runs]
    numeric = runs[cols].apply(pd.to_numeric, errors="coerce")
    numeric[list(group_by)] = runs[list(group_by)].astype(str)
    g = numeric.groupby(list(group_by), sort=True, dropna=False)
    out = g.size().rename("n").to_frame()
    for m in cols:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1).fillna(0.0)
    return out.reset_index()


# --------------------------------------------------------------------------- writing
def _cell(mean, std, fmt: str, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = format(mean, fmt)
    if n > 1 and std is not None and not math.isnan(std):
        text += f" ± {format(std, fmt.lstrip('+'))}"
    return text


def metric_format(key: str) -> Tuple[str, str]:
    """(column title, number format) of a summary key: the standard metrics', a method's own keys
    (as its unit declares them), or the key itself."""
    for k, title, fmt in METRICS:
        if k == key:
            return title, fmt
    for unit in METHODS.values():  # a method's own summary keys
        known = unit.summary_format(key)
        if known:
            return known
    return key, ".4g"


def display_table(agg: pd.DataFrame, group_by: Sequence[str],
                  metrics: Sequence[str]) -> pd.DataFrame:
    """The aggregated table as text cells (mean ± std), for markdown, LaTeX and the console."""
    rows = []
    for _, r in agg.iterrows():
        row = {k: r[k] for k in group_by}
        row["n"] = int(r["n"])
        for m in metrics:
            if f"{m}_mean" in agg:
                title, fmt = metric_format(m)
                row[title] = _cell(r[f"{m}_mean"], r[f"{m}_std"], fmt, int(r["n"]))
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    cells = [[str(c) for c in table.columns]] + [[str(v) for v in r] for r in table.values]
    rows = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    rows.insert(1, "|" + "---|" * len(table.columns))
    return "\n".join(rows)


def failed_lines(failed: List[dict]) -> List[str]:
    return [f"- `{f.get('run_dir')}` ({f.get('method', '?')}, {f.get('model', '?')}, "
            f"{f.get('dataset', '?')}, seed {f.get('seed', '?')}): **{f.get('status')}** — "
            f"{f.get('error') or 'no error recorded'}" for f in failed]


def write_report(out: Path, runs: pd.DataFrame, agg: pd.DataFrame, failed: List[dict],
                 group_by: Sequence[str], metrics: Sequence[str],
                 formats: Sequence[str] = FORMATS, plots: bool = True) -> List[Path]:
    """The report files in `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    table = display_table(agg, group_by, metrics)
    written = []
    n_runs = len(runs)
    if "md" in formats:
        lines = ["# prunekit report", "",
                 f"{n_runs} finished run(s) in {len(agg)} group(s) (mean ± std over seeds), "
                 f"{len(failed)} failed or interrupted.", ""]
        lines += [markdown(table) if not table.empty else "No finished runs.", ""]
        lines += [REPORT_NOTE, ""]
        lines += ["## Failed and interrupted runs", ""]
        lines += failed_lines(failed) or ["None."]
        written.append(out / "report.md")
        atomic_write_text(written[-1], "\n".join(lines) + "\n")
    if "csv" in formats:
        written.append(out / "report.csv")
        atomic_write_text(written[-1], agg.to_csv(index=False))
    if "tex" in formats:
        written.append(out / "report.tex")
        tex = table.to_latex(index=False, escape=True) if not table.empty else "% no runs\n"
        atomic_write_text(written[-1], tex)
    images = write_plots(out, runs, agg) if plots and not runs.empty else []
    if "html" in formats:
        written.append(out / "report.html")
        atomic_write_text(written[-1], html_page(runs, agg, table, failed, group_by, metrics,
                                                 images))
    return written + images


def html_page(runs: pd.DataFrame, agg: pd.DataFrame, table: pd.DataFrame, failed: List[dict],
              group_by: Sequence[str], metrics: Sequence[str], images: List[Path]) -> str:
    """report.html (`html_report.page`): the table with every cell's mean to sort by, the plots,
    the failed runs and each run's config."""
    shown = [m for m in metrics if f"{m}_mean" in agg]
    sort_values = [[r[k] for k in group_by] + [r["n"]] + [r[f"{m}_mean"] for m in shown]
                   for _, r in agg.iterrows()]
    cells = [[str(v) for v in row] for row in table.values] if not table.empty else []
    run_list = []
    for _, r in (runs.sort_values([k for k in ("method", "seed") if k in runs])
                 if not runs.empty else runs).iterrows():
        label = " · ".join(str(r.get(k)) for k in ("method", "model", "dataset", "target"))
        run_list.append({"label": f"{label} · seed {r.get('seed')}", "run_dir": r["run_dir"],
                         "config": config_text(Path(r["run_dir"]))})
    return page(f"prunekit report: {len(runs)} finished run(s), {len(failed)} failed",
                list(table.columns) if not table.empty else [], list(group_by), cells,
                sort_values, images, failed, run_list, REPORT_NOTE)


def write_plots(out: Path, runs: pd.DataFrame, agg: pd.DataFrame) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    by_method = agg.groupby("method") if "method" in agg else []
    if "top1_mean" in agg and "sparsity_mean" in agg:
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, g in by_method:
            g = g.sort_values("sparsity_mean")
            ax.errorbar(g["sparsity_mean"], g["top1_mean"], yerr=g["top1_std"],
                        xerr=g["sparsity_std"], marker="o", capsize=3, label=method)
        ax.set(xlabel="sparsity (prunable weights, achieved)", ylabel="test top-1 (%)",
               title="accuracy vs sparsity")
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(_save(fig, out / "accuracy_vs_sparsity.png"))
    if "top1_mean" in agg and "time_total_s_mean" in agg:
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, g in by_method:
            ax.errorbar(g["time_total_s_mean"], g["top1_mean"], yerr=g["top1_std"],
                        xerr=g["time_total_s_std"], marker="o", linestyle="none", capsize=3,
                        label=method)
        ax.set(xlabel="pruning time (s)", ylabel="test top-1 (%)",
               title="accuracy vs pruning time")
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(_save(fig, out / "accuracy_vs_time.png"))
    phase_cols = [f"time_{p}_s" for p in PHASES if f"time_{p}_s" in runs]
    if phase_cols:
        keys = [k for k in ("method", "target") if k in runs]
        phases = runs[keys + phase_cols].copy()
        phases[phase_cols] = phases[phase_cols].apply(pd.to_numeric, errors="coerce")
        means = phases.groupby(keys)[phase_cols].mean()
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(means)), 4))
        bottom = [0.0] * len(means)
        labels = [" ".join(str(x) for x in (k if isinstance(k, tuple) else (k,)))
                  for k in means.index]
        for col in phase_cols:
            values = means[col].fillna(0.0).tolist()
            ax.bar(labels, values, bottom=bottom, label=col[len("time_"):-len("_s")])
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set(ylabel="seconds (mean over seeds)", title="pruning time by phase")
        ax.tick_params(axis="x", rotation=45)
        ax.legend()
        paths.append(_save(fig, out / "time_by_phase.png"))
    return paths + layer_heatmaps(out, runs)


def layer_heatmaps(out: Path, runs: pd.DataFrame) -> List[Path]:
    """Per model: each method's per-layer sparsity (mean over its runs, from their layers.csv),
    one row per method, one column per prunable layer: where each method spent its budget."""
    import matplotlib.pyplot as plt

    if "run_dir" not in runs or "model" not in runs:
        return []
    paths = []
    for model, of_model in runs.groupby("model"):
        rows: Dict[str, List[pd.Series]] = {}
        for _, r in of_model.iterrows():
            path = Path(r["run_dir"]) / "layers.csv"
            try:
                layers = pd.read_csv(path)
                layers = layers[layers["prunable"].astype(str) == "True"]
                density = pd.to_numeric(layers.set_index("layer")["density"], errors="raise")
            except (OSError, ValueError, KeyError, pd.errors.ParserError) as e:
                if path.is_file():  # a missing one is a run that wrote none: nothing to say
                    log.warning("%s is unreadable (%s): left out of the heatmap", path,
                                first_line(e))
                continue
            rows.setdefault(str(r["method"]), []).append(
                (1.0 - density).rename(str(r["method"])))
        if not rows:
            continue
        matrix = pd.DataFrame({m: pd.concat(v, axis=1).mean(axis=1) for m, v in rows.items()}).T
        fig, ax = plt.subplots(figsize=(max(6, 0.28 * matrix.shape[1] + 2),
                                        1.0 + 0.45 * matrix.shape[0]))
        im = ax.imshow(matrix.values, aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_yticks(range(len(matrix.index)), labels=list(matrix.index))
        ax.set_xticks(range(matrix.shape[1]), labels=list(matrix.columns), rotation=90,
                      fontsize=6)
        ax.set_title(f"per-layer sparsity, {model} (mean over runs)")
        fig.colorbar(im, ax=ax, label="sparsity")
        paths.append(_save(fig, out / f"layer_sparsity_{model}.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=120, format="png"), binary=True)
    finally:
        plt.close(fig)
    return path


CONSOLE_COLUMNS = ("n", "top-1 %", "Δ top-1", "sparsity", "target error", "compression ×",
                   "FLOPs ×", "measured ×", "onnxruntime ×", "pruning time s",
                   "time / iterative")


def console_table(table: pd.DataFrame, failed: List[dict]) -> Table:
    """The report for a terminal: grouping keys that are the same in every row go to the title,
    columns that are empty everywhere are left out."""
    same = [c for c in GROUP_BY if c in table and table[c].nunique() == 1]
    title = " · ".join(str(table[c].iloc[0]) for c in same)
    t = Table(title=f"prunekit report{': ' + title if title else ''} (mean ± std over seeds)",
              title_style="bold")
    cols = [c for c in table.columns if c not in same and (c not in METRIC_TITLES or (
        c in CONSOLE_COLUMNS and (table[c] != "–").any()))]
    for col in cols:
        t.add_column(str(col), justify="left" if col in GROUP_BY else "right")
    for _, r in table.iterrows():
        t.add_row(*[str(r[c]) for c in cols])
    t.caption = "report.md has every column" + (
        f"; {len(failed)} failed or interrupted run(s), listed below" if failed else "")
    return t


# --------------------------------------------------------------------------- entry points
def report(dirs: Sequence[Path], out: Optional[Path] = None, group_by: Sequence[str] = GROUP_BY,
           metrics: Optional[Sequence[str]] = None, formats: Sequence[str] = FORMATS,
           plots: bool = True, show: bool = True) -> Dict[str, object]:
    """Collect, aggregate and write; returns what was found and written."""
    dirs = [Path(d) for d in dirs]
    runs, failed = collect(dirs)
    runs = add_relative_time(runs)
    if metrics:  # the user's: each must be a number some run has
        check_metrics(metrics, runs)
    metrics = list(metrics or [k for k, _, _ in METRICS])
    agg = aggregate(runs, group_by, metrics)
    if runs.empty and not failed:  # nothing to report: write nothing (main says so)
        return {"runs": runs, "aggregate": agg, "failed": failed, "written": []}
    out = Path(out) if out is not None else dirs[0]
    written = write_report(out, runs, agg, failed, group_by, metrics, formats, plots)
    if show:
        print_table(console_table(display_table(agg, group_by, metrics), failed))
        for line in failed_lines(failed):
            CONSOLE.print(line, markup=False, soft_wrap=True)
        CONSOLE.print(f"report: {', '.join(str(p) for p in written)}", markup=False, soft_wrap=True)
    return {"runs": runs, "aggregate": agg, "failed": failed, "written": written}


class ReportCallback(Callback):
    """Writes the report into the sweep directory when a multirun ends."""

    failed_jobs = 0  # of the last multirun, for prune-run's exit code

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            got = report([sweep_dir], show=True)
        except Exception as e:  # the sweep's results are on disk whatever the report does
            log.error("prune-report %s failed: %s: %s", sweep_dir, type(e).__name__, e)
            return
        ReportCallback.failed_jobs = len(got["failed"])


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(
        prog="prune-report",
        description="Compare every run under the given run or sweep directories: a table (mean ± "
                    "std over seeds) in report.md/.csv/.tex, plots, and the failed runs.")
    ap.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    ap.add_argument("--out", type=Path, help="where the report goes (default: the first DIR)")
    ap.add_argument("--format", default=",".join(FORMATS),
                    help=f"comma-separated file formats from {', '.join(FORMATS)} (default: all)")
    ap.add_argument("--group-by", default=",".join(GROUP_BY),
                    help="comma-separated summary keys to group by "
                         f"(default: {','.join(GROUP_BY)})")
    ap.add_argument("--metric", action="append",
                    help="a summary key to show (repeat for several; default: the standard set)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = ap.parse_args(argv)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        ap.error(f"--format {','.join(bad)}: choose from {', '.join(FORMATS)}")
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        ap.error(f"not a directory: {', '.join(missing)}")
    group_by = [k.strip() for k in args.group_by.split(",") if k.strip()]
    try:
        got = report(args.dirs, args.out, group_by, args.metric, formats, not args.no_plots)
    except ConfigError as e:
        ap.exit(2, f"prune-report: error: {e}\n")
    except OSError as e:  # a full or read-only disk: what was written before stays whole
        ap.exit(1, f"prune-report: error: cannot write {e.filename or 'the report'} "
                   f"({write_failure(e)})\n")
    if not got["written"]:
        print(f"prune-report: error: no summary.json under {', '.join(map(str, args.dirs))}: "
              "nothing written", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
