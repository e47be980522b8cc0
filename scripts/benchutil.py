"""What the bench scripts share: alternating timed rounds, and printing / saving their figures."""
from __future__ import annotations

import json
import statistics
import time
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F


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


def plain_epoch(model, net, batches, hw, graphs: bool = False) -> float:
    """Seconds a step of a minimal hand-written loop over `batches`: a fresh SGD (momentum 0.9,
    Nesterov, weight decay 5e-4, as Trainer.fit makes one per fit), cross entropy under the
    precision's autocast, `zero_grad(set_to_none=True)`. `net` is `model` or its compiled form;
    `graphs`: torch.compile captures CUDA graphs, so each step starts a new graph generation."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    model.train()
    hw.sync()
    t0 = time.perf_counter()
    for x, y in batches:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with hw.autocast():
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    hw.sync()
    return (time.perf_counter() - t0) / len(batches)
