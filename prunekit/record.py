"""What a run leaves behind: steps.csv (appended and flushed row by row, so an interrupted run
keeps every finished step), layers.csv and the method's own tables, summary.json (atomic)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, List, Optional

from omegaconf import DictConfig, OmegaConf

from prunekit.config import METHODS, model_label
from prunekit.files import write_csv, write_json
from prunekit.targets import TARGET_KINDS


class Recorder:
    """steps.csv row by row, plus layers.csv, summary.json and the method's own tables.
    `out_dir=None` keeps the rows in memory only (side work such as tuning trials). Each of
    `listeners` (e.g. the run's trackers) sees every row with its 1-based number, and whether
    it is a row a resumed run restored."""

    def __init__(self, out_dir: Optional[Path]):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.steps: List[dict] = []
        self._fields: List[str] = []
        self.listeners: List[Callable[[dict, int, bool], None]] = []

    @property
    def steps_path(self) -> Path:
        return self.out_dir / "steps.csv"

    def step(self, **row) -> None:
        row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        self.steps.append(row)
        for listener in self.listeners:
            listener(row, len(self.steps), False)
        if self.out_dir is None:
            return
        new_fields = [k for k in row if k not in self._fields]
        if new_fields and self._fields:  # a new column: rewrite the file with the wider header
            self._fields += new_fields
            write_csv(self.steps_path, self.steps)
            return
        if not self._fields:
            self._fields = list(row)
            with open(self.steps_path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self._fields).writeheader()
        with open(self.steps_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fields).writerow(row)
            f.flush()

    def reset(self, rows: List[dict]) -> None:
        """Continue from these rows (a resumed run): steps.csv is rewritten to hold just them,
        and the listeners see them again, as restored."""
        self.steps = list(rows)
        for listener in self.listeners:
            for number, row in enumerate(self.steps, 1):
                listener(row, number, True)
        self._fields = []
        for row in self.steps:
            self._fields += [k for k in row if k not in self._fields]
        if self.out_dir is not None:
            write_csv(self.steps_path, self.steps)

    def table(self, name: str, rows: List[dict]) -> None:
        """Write (atomically, whole) `name`.csv: layers, tuning trials, search moves."""
        if self.out_dir is not None:
            write_csv(self.out_dir / f"{name}.csv", rows)

    def layers(self, rows: List[dict]) -> None:
        self.table("layers", rows)

    def summary(self, data: dict) -> None:
        if self.out_dir is not None:
            write_json(self.out_dir / "summary.json", data)


def summary_identity(cfg: DictConfig) -> dict:
    """The keys a summary has even when the run fails before doing anything."""
    method = cfg.get("method") or {}
    method_class = METHODS.get(method.get("name"))
    target = cfg.get("target") or {}
    kind = TARGET_KINDS.get(target.get("kind", "sparsity"))
    hparams = (OmegaConf.to_container(method, resolve=False)
               if isinstance(method, DictConfig) else {})
    return {
        "status": "running",
        "method": method.get("name"), "model": model_label(cfg.get("model") or {}),
        "dataset": (cfg.get("dataset") or {}).get("name"),
        "hardware": (cfg.get("hardware") or {}).get("name"), "seed": cfg.get("seed"),
        "granularity": method.get("granularity"),
        "target_sparsity": (method_class.target_sparsity(target.get("kind"), cfg.get("sparsity"))
                            if method_class else cfg.get("sparsity")),
        "target_kind": target.get("kind", "sparsity"),
        "target_value": target.get("value") if kind is not None and kind.factor
        else cfg.get("sparsity"),
        # the contract's "params dict" of hyperparameters: `params` itself is the parameter count
        "hparams": hparams, "error": None,
    }


def write_failed_summary(out_dir: Path, cfg: DictConfig, error: str) -> None:
    """A run that stopped before doing anything still says so, in its own summary.json."""
    write_json(Path(out_dir) / "summary.json", {**summary_identity(cfg), "status": "failed",
                                                "error": error})
