"""The sizes docs/architecture.md quotes: the largest modules and the longest functions.

    python scripts/code_stats.py [ROOT] [--top N]

ROOT is a checkout (default: this one); its `prunekit/` is measured. Lines are physical lines;
a function's length runs from its `def` to its last line (nested functions count in their parent
and on their own)."""
from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import List, Tuple


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()
    package = Path(args.root) / "prunekit"
    mods, funcs = modules(package), functions(package)
    print(f"{len(mods)} modules, {sum(n for n, _ in mods)} lines; {len(funcs)} functions, "
          f"{sum(1 for n, _ in funcs if n > 50)} over 50 lines")
    print("largest modules:")
    for n, name in mods[:args.top]:
        print(f"  {n:5d}  {name}")
    print("longest functions:")
    for n, name in funcs[:args.top]:
        print(f"  {n:5d}  {name}")


if __name__ == "__main__":
    main()
