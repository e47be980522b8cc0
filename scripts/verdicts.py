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
rather than "does not hold" where a decisive one differs. Each claim is one module of
scripts/claims/ (its words, runs, settings and verdict rule); this file is the entry point.

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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # claims/, beside this file

from claims import CLAIMS  # noqa: E402
from claims.document import (  # noqa: E402
    readme_block,
    render,
    splice,
    splice_readme,
    update_readme,
)
from claims.running import CONSOLE, Results, run_tier  # noqa: E402
from claims.tiers import TIERS  # noqa: E402
from prunekit.files import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


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
        for i in range(len(c.runs) + CLAIMS[c.kind].extra_runs)}
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
    for claim in CLAIMS.values():  # a claim's picture (ICE against depth)
        plot = doc_path.parent / "img" / f"{claim.kind}_depth_{tier.name}.png"
        if claim.plot and claim.plot(results.data, tier, plot):
            CONSOLE.print(f"wrote {plot}")
    CONSOLE.print(f"wrote {doc_path}")
    if readme and update_readme(Path(readme), block):
        CONSOLE.print(f"updated the verdicts in {readme}")
    CONSOLE.print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
