"""The documents: docs/results.md (or results-gpu.md) from results.json, every claim's section with
its settings against the paper's and its verdict, and the README's condensed block; a partial run
(`--only`) spliced into what was written before."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from claims import CLAIMS
from claims.base import Comparison, Tier, fmt, in_regime, runs_of, table
from claims.tiers import gpu_tier
from prunekit.files import atomic_write_text


def comparisons_seconds(results: dict) -> float:
    """Wall seconds of every comparison run recorded (dense models not included)."""
    return sum(r.get("wall_s", 0.0) for k, r in results["runs"].items()
               if not k.startswith("dense_"))


def own_overrides(run: dict, tier: Tier) -> str:
    """The overrides of a run beyond its tier's common settings."""
    return " ".join(o for o in run["overrides"] if o not in tier.common)


def generic_section(c: Comparison, runs: List[dict]) -> List[str]:
    """A comparison's table, with its claim's own columns (SLR's hard-prune top-1)."""
    extra = CLAIMS[c.kind].extra_columns
    header = ["", "test top-1 %", "Δ dense", *(h for h, _ in extra), "sparsity", "params ×",
              "FLOPs ×", "measured ×", "epochs", "pruning time s"]
    rows = [[r["label"], fmt(r["top1"]), f"{r['delta_top1']:+.2f}",
             *(fmt(r.get(k)) for _, k in extra), fmt(r["sparsity"], ".3f"),
             fmt(r["compression_ratio"]), fmt(r["theoretical_speedup"]),
             fmt(r.get("measured_speedup")), str(r.get("finetune_epochs", "—")),
             fmt(r["time_total_s"], ".0f")] for r in runs]
    return table(header, rows)


def render(results: dict, tier: Tier) -> Tuple[str, str]:
    """(the tier's document, the README's condensed block)."""
    lines = header_lines(results, tier)
    summary_rows = []
    for n, c in enumerate(tier.comparisons, 1):
        section, row = comparison_lines(n, c, results, tier)
        lines += section
        summary_rows.append(row)
    for claim in CLAIMS.values():  # what a claim shows after every comparison (ICE by depth)
        lines += claim.after(results, tier) if claim.after else []
    lines += gpu_lines(results, tier)
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
                   [[m, fmt(d["top1_dense"]), fmt(d.get("val_top1_dense")),
                     f"{d['params_dense']:,}", dense_recipe(tier),
                     f"{d['dense_training_s'] / 60:.1f} min"
                     + (" (cached)" if str(d.get("dense_source", "")).startswith("cache") else "")]
                    for m, d in dense.items() if d])
    return lines


def comparison_lines(n: int, c: Comparison, results: dict, tier: Tier) -> Tuple[List[str], list]:
    """A comparison's section, and its row of the README's table."""
    runs = runs_of(results, c.key)
    the = CLAIMS[c.kind]
    paper, claim = the.paper, the.text
    lines = ["", f"## {n}. {c.title} ({c.model})", "", f"**Claim** — {paper}: {claim}.", "",
             f"**Our setting** — {c.model}, {c.why}", ""]
    if len(runs) < len(c.runs):
        return lines + ["Not run in this session."], [paper.split(" (")[0], claim, "not run", "—"]
    lines += (the.section(tier, c, runs, results) if the.section
              else generic_section(c, runs))
    lines += ["", "Runs (on top of the common settings):", "",
              *(f"- {r['label']}: `{own_overrides(r, tier)}`" for r in runs)]
    settings = the.settings(runs)
    lines += ["", "Settings against the paper's (a decisive one that differs keeps the claim "
                  "*not tested in its regime*):", ""]
    lines += table(["setting", "here", "the paper", "matches"],
                   [[x.what, x.here, x.paper, ("yes" if x.matches else "no")
                     + ("" if x.decisive else " (not decisive)")] for x in settings])
    verdict, why, figures = the.judge(runs)
    verdict, why = in_regime(verdict, why, settings)
    figure = the.headline(runs, figures)
    lines += ["", f"**Measured** — {figure}.", "", f"**Verdict: {verdict}** — {why}."]
    return lines, [paper.split(" (")[0] + (f" ({c.model})" if the.row_names_model else ""), claim,
                   figure, f"**{verdict}**"]


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
                   [[job, ", ".join(entries), fmt(gpu.job_minutes.get(job), ".1f"),
                     fmt(measured[job]["wall_s"] / 60, ".1f") if job in measured else "not run"]
                    for job, entries in gpu.jobs.items()])
    return lines


def dense_recipe(tier: Tier) -> str:
    epochs = next((o.split("=", 1)[1] for o in tier.common if o.startswith("pretrain.epochs=")),
                  "the data set's default")
    return f"{epochs} epochs, SGD lr 0.05 cosine, crop + flip"


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
