"""Experiment trackers, the `logger` config group: TensorBoard, MLflow, Weights & Biases.

What a tracked run sends each of them (docs/loggers.md): the resolved config when it starts;
every steps.csv row as it is written (series `step`); every training epoch's loss and val top-1
(series `dense` while the dense model trains, `epoch` while the method runs); the summary's
numbers when it ends; and its files (summary.json, steps.csv, layers.csv, the resolved config,
model.pt with `logger.log_model`) as artefacts. One experiment per sweep, one run per job, named
by the job's overrides. A resumed run continues its tracker runs (their ids are kept in the run
directory's tracking.json): the steps it restored are not sent twice.

A tracker never costs a run its result: one that cannot start (package missing, server down) is
one warning line and the run goes on without it; one that fails later is one warning and is
dropped. Only rank 0 of a distributed run tracks.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from omegaconf import DictConfig, OmegaConf

from prunekit.config import schema
from prunekit.errors import ConfigError, first_line
from prunekit.files import write_json
from prunekit.registry import Registry, import_all
from prunekit.settings import experiment_settings

log = logging.getLogger(__name__)

TRACKERS: Registry = Registry("logger")  # name -> Tracker class (filled by the modules below)


@dataclass
class LoggerConfig:
    """The `logger` keys every tracker shares; each tracker's own section (`logger.<name>`, null
    until `logger=<name>` fills it, so a list `logger=[a,b]` composes) is its `schema`."""

    experiment: Optional[str] = None  # None: the sweep directory's path (a single run: prunekit)
    run_name: Optional[str] = None  # None: the job's overrides, e.g. method=ice,seed=1
    epoch_val: bool = True  # val top-1 after every training epoch (its time is not pruning time)
    log_model: bool = False  # model.pt among the artefacts too

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        for key in ("experiment", "run_name"):
            value = cfg.logger[key]
            if value is not None and not str(value).strip():
                raise ConfigError(f"logger.{key} is empty: give a name, or null for the default")

# what a finished run uploads beside its numbers (model.pt only with logger.log_model)
RUN_FILES = ("summary.json", "steps.csv", "layers.csv", "config_resolved.yaml")


@dataclass(frozen=True)
class RunNames:
    """Where and under which names a run is tracked: `root` holds the local stores (the sweep
    directory, or a single run's own), `experiment` is the sweep's name, `run` the job's, and
    `run_dir` where the run's own files are."""

    root: Path
    experiment: str
    run: str
    run_dir: Path

    @property
    def slug(self) -> str:
        """The run's name as one safe path component (TensorBoard's run directory)."""
        slug = re.sub(r"[^\w=,.+-]+", "_", self.run).strip("._") or "run"
        if len(slug) <= 150:
            return slug
        return f"{slug[:140]}_{hashlib.sha256(self.run.encode()).hexdigest()[:8]}"


def run_names(cfg: DictConfig, run_dir: Path, root: Optional[Path] = None,
              run: Optional[str] = None, experiment: str = "prunekit") -> RunNames:
    """The names `logger.experiment` / `logger.run_name` give, else the ones passed in (a sweep's
    job: its sweep directory and overrides), else a single run's: its own directory and name."""
    run_dir = Path(run_dir)
    return RunNames(Path(root) if root is not None else run_dir,
                    cfg.logger.experiment or experiment,
                    cfg.logger.run_name or run or run_dir.name, run_dir)


class MissingPackage(RuntimeError):
    """A logger's package is not installed."""


def require(module: str, logger: str, extra: str):
    """Import `module` for logger `logger`, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingPackage(f"it needs the {e.name or module} package: pip install "
                             f"'prunekit[{extra}]'") from None


class Tracker(abc.ABC):
    """One tracker's run. `__init__(settings, names, previous)` starts it (an exception refuses
    it), continuing the run whose id is `previous` when it has one (a resumed run); the log
    methods send to it; `close(status)` ends it. Values are finite floats."""

    name = ""
    schema: type  # the dataclass of its `logger.<name>` settings
    id: Optional[str] = None  # the tracker's id of its run, kept for a resume to continue it
    continued = False  # whether it continues an interrupted run's (which has its steps so far)

    @abc.abstractmethod
    def log_config(self, params: Dict[str, str], text: str) -> None:
        """The resolved config: flat dotted keys, and as YAML."""

    @abc.abstractmethod
    def log_scalars(self, series: str, values: Dict[str, float], index: int) -> None:
        """`values` of one point of `series` (step, dense, epoch), at x = `index`."""

    @abc.abstractmethod
    def log_summary(self, values: Dict[str, float], summary: dict) -> None:
        """The summary's numbers, and the whole summary."""

    @abc.abstractmethod
    def log_files(self, paths: List[Path]) -> None:
        """The run's files, as artefacts."""

    @abc.abstractmethod
    def close(self, status: str) -> None:
        """End the tracker's run with the run's status (ok, failed, interrupted)."""


IDS_FILE = "tracking.json"  # the trackers' run ids, in the run directory


def read_ids(path: Path) -> Dict[str, str]:
    try:
        ids = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in ids.items() if isinstance(v, str)} if isinstance(ids, dict) else {}


def numbers(row: dict) -> Dict[str, float]:
    """The finite numbers of a row (booleans as 0/1): what a tracker can plot."""
    out = {}
    for key, value in row.items():
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


class Tracking:
    """The trackers a run reports to, as one: each call goes to every tracker still running, and
    a tracker that fails is reported in one line and dropped, never the run."""

    def __init__(self, trackers: Iterable[Tracker] = ()):
        self.trackers: List[Tracker] = list(trackers)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    @classmethod
    def start(cls, cfg: DictConfig, names: RunNames) -> "Tracking":
        """Start every logger `cfg.logger` names (with resume=true, continuing the tracker runs
        the interrupted run started: their ids are in the run directory's tracking.json); log
        the resolved config to each."""
        ids_file = names.run_dir / IDS_FILE
        previous = read_ids(ids_file) if cfg.resume else {}
        trackers = []
        for name in TRACKERS:
            settings = cfg.logger[name]
            if settings is None:
                continue
            try:
                trackers.append(TRACKERS[name](settings, names, previous.get(name)))
            except Exception as e:  # missing package, unreachable server, refused credentials
                log.warning("logger=%s cannot start (%s): the run goes on without it", name,
                            first_line(e, 200))
        ids = {t.name: t.id for t in trackers if t.id is not None}
        if ids:
            write_json(ids_file, ids)
        tracking = cls(trackers)
        if tracking:
            log.info("logger    %s: run '%s' of experiment '%s'",
                     ", ".join(t.name for t in tracking.trackers), names.run, names.experiment)
            # (not resume and the loggers, which a resumed run may change in the run it continues)
            params = {k: "null" if v is None else str(v)
                      for k, v in experiment_settings(cfg).items()}
            text = OmegaConf.to_yaml(cfg, resolve=True)
            tracking.each("config", lambda t: t.log_config(params, text))
        return tracking

    def each(self, what: str, call: Callable[[Tracker], None]) -> None:
        self.each_of(list(self.trackers), what, call)

    def each_of(self, trackers: List[Tracker], what: str, call: Callable[[Tracker], None]) -> None:
        for tracker in trackers:
            try:
                call(tracker)
            except Exception as e:
                log.warning("logger=%s failed to log the %s (%s): the run goes on without it",
                            tracker.name, what, first_line(e, 200))
                self.trackers.remove(tracker)
                try:
                    tracker.close("failed")
                except Exception:  # it is already broken: its close may fail too
                    pass

    def step(self, row: dict, index: int, restored: bool = False) -> None:
        """A steps.csv row (its 1-based row number is the x of the `step` series); `restored`:
        a row a resumed run read back, sent only to trackers that do not have it yet."""
        values = numbers(row)
        lacking = [t for t in self.trackers if not (restored and t.continued)]
        if values and lacking:
            self.each_of(lacking, "step", lambda t: t.log_scalars("step", values, index))

    def epoch(self, series: str, index: int, loss: float, val_top1: Optional[float]) -> None:
        values = numbers({"train_loss": loss, "val_top1": val_top1})
        if values and self:
            self.each("epoch", lambda t: t.log_scalars(series, values, index))

    def finish(self, summary: dict, run_dir: Path, log_model: bool) -> None:
        """The summary's numbers and the run's files; then every tracker is closed with the
        run's status (ok, failed, interrupted)."""
        if not self:
            return
        values = numbers({k: v for k, v in summary.items() if k != "seed"})
        self.each("summary", lambda t: t.log_summary(values, summary))
        files = [run_dir / f for f in RUN_FILES + (("model.pt",) if log_model else ())
                 if (run_dir / f).is_file()]
        if files:
            self.each("artefacts", lambda t: t.log_files(files))
        status = summary.get("status", "failed")
        self.each("end of the run", lambda t: t.close(status))
        self.trackers = []


class EpochLog:
    """FitHooks.report_epoch for a tracked run, or one off a terminal: the epoch's training loss
    and the model's val top-1 go to the trackers (if any) and to the epoch's line
    (Trainer.log_epoch), as `series` at x = first_index() + epoch + 1. The evaluation is work
    only the report needs: its seconds go to `exclude` (the run leaves them out of its timing;
    None: they add up in `excluded`), and it reads no random numbers, so a tracked run computes
    what an untracked one does. Every rank of a distributed run evaluates (the evaluation is
    collective); rank 0 logs."""

    def __init__(self, tracking: Tracking, evaluate: Optional[Callable[[object], float]],
                 series: str = "dense", first_index: Callable[[], int] = lambda: 0,
                 exclude: Optional[Callable[[float], None]] = None):
        self.tracking = tracking
        self.evaluate = evaluate  # None: the loss alone (logger.epoch_val=false)
        self.series = series
        self.first_index = first_index  # epochs before the current fit
        self.excluded = 0.0  # seconds spent so far, for owners that subtract them at the end
        self.exclude = exclude or self._add

    def _add(self, seconds: float) -> None:
        self.excluded += seconds

    def __call__(self, epoch: int, loss: float, model) -> Optional[float]:
        started = time.perf_counter()
        val = self.evaluate(model) if self.evaluate is not None else None
        self.tracking.epoch(self.series, self.first_index() + epoch + 1, loss, val)
        self.exclude(time.perf_counter() - started)
        return val


# every module here registers its tracker (whose package is imported only when a run starts it)
import_all(__name__, __path__)
schema("logger")(dataclasses.make_dataclass(
    "LoggerSettings", [(name, Optional[t.schema], None) for name, t in TRACKERS.items()],
    bases=(LoggerConfig,)))
