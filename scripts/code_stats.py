"""The sizes docs/architecture.md quotes: the largest modules and the longest functions.

    python scripts/code_stats.py [ROOT] [--top N]
    python scripts/code_stats.py --check docs/architecture.md   # CI: fails when the map drifts
    python scripts/code_stats.py --write docs/architecture.md   # refresh the quoted figures

ROOT is a checkout (default: this one); its `prunekit/` is measured. Lines are physical lines;
a function's length runs from its `def` to its last line (nested functions count in their parent
and on their own). `--check` compares the figures between the document's `<!-- code_stats -->`
and `<!-- /code_stats -->` markers with today's, and exits 1 naming the figures that differ."""
from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from pathlib import Path
from typing import List, Tuple

BEGIN, END = "<!-- code_stats -->", "<!-- /code_stats -->"
LONG = 50  # a function longer than this is reported (the rule: none in prunekit/)


def modules(package: Path) -> List[Tuple[int, str]]:
    return sorted(((len(p.read_text().splitlines()), str(p.relative_to(package.parent)))
                   for p in package.rglob("*.py")), reverse=True)


def functions(package: Path) -> List[Tuple[int, str]]:
    out = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1,
                            f"{path.relative_to(package.parent)}:{node.name}"))
    return sorted(out, reverse=True)


def report(package: Path, top: int) -> str:
    """The figures as the document quotes them (a Markdown block)."""
    mods, funcs = modules(package), functions(package)
    long = [f"`{name}` {n}" for n, name in funcs if n > LONG]
    lines = [f"{len(mods)} modules, {sum(n for n, _ in mods):,} lines; {len(funcs)} functions, "
             f"{len(long)} over {LONG} lines{': ' + ', '.join(long) if long else ''}.", "",
             "| largest modules | lines | longest functions | lines |", "|---|---|---|---|"]
    for (mn, mname), (fn, fname) in zip(mods[:top], funcs[:top]):
        lines.append(f"| `{mname}` | {mn} | `{fname}` | {fn} |")
    return "\n".join(lines)


def block(doc: str) -> re.Match:
    """The markers and what they hold (a ValueError when they are missing)."""
    match = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), doc, re.S)
    if match is None:
        raise ValueError(f"no {BEGIN} ... {END} block")
    return match


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--check", metavar="DOC", help="exit 1 if DOC quotes other figures")
    ap.add_argument("--write", metavar="DOC", help="replace the figures DOC quotes")
    args = ap.parse_args()
    now = report(Path(args.root) / "prunekit", args.top)
    if not (args.check or args.write):
        print(now)
        return 0
    path = Path(args.check or args.write)
    doc = path.read_text()
    try:
        match = block(doc)
    except ValueError as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 1
    old = match.group(1).rstrip("\n")
    if args.write:
        path.write_text(doc[:match.start()] + f"{BEGIN}\n{now}\n{END}" + doc[match.end():])
        return 0
    if old == now:
        print(f"{path}: the quoted figures are today's")
        return 0
    print(f"{path} quotes figures that are not today's (refresh: python scripts/code_stats.py "
          f"--write {path}):", file=sys.stderr)
    sys.stderr.writelines(difflib.unified_diff(old.splitlines(True), now.splitlines(True),
                                               "quoted", "today"))
    print(file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
