"""The phase clock: where a run's pruning time goes (search, probe, prune, finetune, eval, and
compile: hardware.compile's compilations of the train and eval steps)."""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Dict, List, Optional

PHASES = ("search", "probe", "prune", "finetune", "eval", "compile")


class PhaseClock:
    """Wall-clock seconds per phase (search / probe / prune / finetune / eval).

    Phases nest with exclusive accounting, like a profiler: time inside an inner phase is the inner
    phase's, not the outer's, so the phases never double count. `sync` (the device synchronise) is
    called at every boundary so queued GPU work lands in the phase that issued it. `elapsed()` is
    the whole time since the clock was made (plus the segments before a resume), less what
    `exclude` left out: the run's pruning time.
    """

    def __init__(self, sync: Optional[Callable[[], None]] = None):
        self.totals: Dict[str, float] = {p: 0.0 for p in PHASES}
        self._stack: List[List] = []  # [phase, started_at]
        self._sync = sync or (lambda: None)
        self.started = time.perf_counter()
        self.before = 0.0  # seconds of the segments before a resume

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
        """Leave the last `seconds` (work done only for a report) out of the elapsed time and of
        the phase running now."""
        self.started += seconds
        if self._stack:
            self._stack[-1][1] += seconds

    def reassign(self, seconds: float, phase: str) -> None:
        """Count the last `seconds` of the phase running now as `phase`'s (a compile inside a
        fine-tune): the total is unchanged."""
        if self._stack:
            self._stack[-1][1] += seconds
        self.totals[phase] += seconds

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.started

    def state_dict(self) -> dict:
        return {"totals": dict(self.totals), "elapsed": self.elapsed()}

    def load_state_dict(self, state: dict) -> None:
        """Continue a resumed run's clock: its phase totals and the seconds it had run."""
        self.totals.update(state["totals"])
        self.before, self.started = state["elapsed"], time.perf_counter()

    def as_summary(self) -> Dict[str, float]:
        return {f"time_{p}_s": round(self.totals[p], 4) for p in PHASES}
