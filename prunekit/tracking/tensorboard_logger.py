"""logger=tensorboard: event files through torch.utils.tensorboard, one directory per run under
`<sweep directory>/tensorboard/` (or `logger.tensorboard.dir`), so `tensorboard --logdir` on it
shows every job of the sweep side by side, named by its overrides."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from prunekit.tracking import TRACKERS, RunNames, Tracker, require

# the summary keys the HParams dashboard compares runs by, and the results it shows for them
HPARAMS = ("method", "model", "dataset", "hardware", "seed", "granularity", "target_kind",
           "target_value")
RESULTS = ("top1", "delta_top1", "sparsity", "theoretical_speedup", "measured_speedup",
           "time_total_s")


def indented(text: str) -> str:
    """Text as a Markdown code block (TensorBoard's text plugin renders Markdown)."""
    return "\n".join("    " + line for line in text.splitlines())


@dataclass
class TensorBoardLoggerConfig:
    dir: Optional[str] = None  # None: tensorboard/ in the sweep directory (a run: its directory)


@TRACKERS.register
class TensorBoardTracker(Tracker):
    name = "tensorboard"
    schema = TensorBoardLoggerConfig

    def __init__(self, settings, names: RunNames, previous: Optional[str] = None):
        """A resumed run writes on in the directory the interrupted one wrote (its id)."""
        require("tensorboard", self.name, "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        root = Path(settings.dir).expanduser() if settings.dir else names.root / "tensorboard"
        self.dir = root / names.slug
        self.writer = SummaryWriter(log_dir=str(self.dir), flush_secs=10)
        self.id = str(self.dir)
        self.continued = previous == self.id
        self.run = names.run

    def log_config(self, params: Dict[str, str], text: str) -> None:
        self.writer.add_text("config", indented(text), 0)

    def log_scalars(self, series: str, values: Dict[str, float], index: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{series}/{key}", value, index)

    def log_summary(self, values: Dict[str, float], summary: dict) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"summary/{key}", value, 0)
        self.writer.add_text("summary", indented(json.dumps(summary, indent=1, default=str)), 0)
        hparams = {k: summary[k] for k in HPARAMS if isinstance(summary.get(k), (str, int, float))}
        hparams["run"] = self.run
        results = {f"hparams/{k}": values[k] for k in RESULTS if k in values}
        if results:  # a failed run has none to compare
            self.writer.add_hparams(hparams, results, run_name=".")

    def log_files(self, paths: List[Path]) -> None:
        """TensorBoard keeps no files: the run directory holds them; its path is logged."""
        self.writer.add_text("files", "\n".join(f"    {p}" for p in paths), 0)

    def close(self, status: str) -> None:
        self.writer.add_text("status", status, 0)
        self.writer.close()
