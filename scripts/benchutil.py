"""What the bench scripts share: alternating timed rounds, and printing / saving their figures."""
from __future__ import annotations

import json
import statistics
from typing import Callable, Optional, Tuple


def alternate(rounds: int, a: Callable[[], float], b: Callable[[], float]) -> Tuple[float, float]:
    """Medians of `rounds` alternating runs of a and b (drift on a shared machine hits both)."""
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(a())
        tb.append(b())
    return statistics.median(ta), statistics.median(tb)


def emit(out: dict, json_path: Optional[str]) -> None:
    width = max(len(k) for k in out) + 2
    for k, v in out.items():
        print(f"{k:{width}s} {v:.4g}" if isinstance(v, float) else f"{k:{width}s} {v}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(out, f, indent=2)
