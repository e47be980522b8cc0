"""logger=mlflow: one MLflow experiment per sweep, one run per job named by its overrides.

The default store is local, a SQLite file in the sweep directory (`sqlite:///<sweep>/mlflow.db`,
artefacts beside it in mlartifacts/): MLflow keeps its plain-file store in maintenance mode and
refuses it by default, SQLite is the local store it recommends. `logger.mlflow.tracking_uri`
points at a server (http://host:5000) or any other store.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from prunekit.artifacts import cache_lock
from prunekit.tracking import TRACKERS, RunNames, Tracker, require

# A server that stops answering mid-run costs at most a few retries once (then the tracker is
# dropped), not MLflow's default of 7 retries of 120 s each; the user's own settings win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
STATUS = {"ok": "FINISHED", "interrupted": "KILLED"}  # anything else: FAILED


def reach(uri: str, timeout: float = 5.0) -> None:
    """Connect to a tracking server's port, so a server that is down is one quick line."""
    parsed = urllib.parse.urlparse(uri)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach {uri}: {e.strerror or e}") from None


def key(name: str) -> str:
    """A config or summary key as MLflow accepts it (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^\w./ -]", "_", name)[:250]


def batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass
class MLflowLoggerConfig:
    tracking_uri: Optional[str] = None  # None: sqlite:///<sweep or run directory>/mlflow.db


@TRACKERS.register
class MLflowTracker(Tracker):
    name = "mlflow"
    schema = MLflowLoggerConfig

    def __init__(self, settings, names: RunNames, previous: Optional[str] = None):
        require("mlflow", self.name, "mlflow")
        for noisy in ("mlflow", "alembic"):  # their INFO lines about creating tables
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        self.Metric, self.Param = Metric, Param
        uri, lock, artifacts = settings.tracking_uri, contextlib.nullcontext(), None
        if not uri:  # the local default: a SQLite store in the sweep directory
            db = (names.root / "mlflow.db").resolve()
            uri, lock = f"sqlite:///{db}", cache_lock(db)  # parallel jobs create it once
            artifacts = (names.root / "mlartifacts").resolve().as_uri()
        elif uri.startswith(("http://", "https://")):
            reach(uri)
            for var, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(var, value)
        elif uri.startswith("file:") or "://" not in uri:  # a plain-file store, named by the user
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        with lock:
            experiment = self.client.get_experiment_by_name(names.experiment)
            if experiment is None:
                try:
                    experiment_id = self.client.create_experiment(names.experiment, artifacts)
                except Exception:  # another job of the sweep created it first
                    experiment = self.client.get_experiment_by_name(names.experiment)
                    if experiment is None:
                        raise
                    experiment_id = experiment.experiment_id
            else:
                experiment_id = experiment.experiment_id
        self.id = self.run_id = self.continued(previous, experiment_id) or self.client.create_run(
            experiment_id, run_name=names.run,
            tags={"prunekit.run_dir": str(names.run_dir)}).info.run_id

    def continued(self, previous: Optional[str], experiment_id: str) -> Optional[str]:
        """The interrupted run's id, running again, when that run is still in the experiment."""
        if previous is None:
            return None
        try:
            run = self.client.get_run(previous)
        except Exception:  # deleted, or another store
            return None
        if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
            return None
        self.client.update_run(previous, status="RUNNING")
        self.continued = True
        return previous

    def log_config(self, params: Dict[str, str], text: str) -> None:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        entries = [self.Param(key(k), v[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
        for batch in batches(entries, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=batch)
        self.client.log_text(self.run_id, text, "config_resolved.yaml")

    def log_scalars(self, series: str, values: Dict[str, float], index: int) -> None:
        self._metrics({f"{series}/{k}": v for k, v in values.items()}, index)

    def _metrics(self, values: Dict[str, float], step: int) -> None:
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        entries = [self.Metric(key(k), v, now, step) for k, v in values.items()]
        for batch in batches(entries, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=batch)

    def log_summary(self, values: Dict[str, float], summary: dict) -> None:
        self._metrics(values, 0)  # under the summary's own keys: metrics.top1, ...
        self.client.set_tag(self.run_id, "status", str(summary.get("status")))
        if summary.get("error"):
            self.client.set_tag(self.run_id, "error", str(summary["error"])[:5000])

    def log_files(self, paths: List[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))
