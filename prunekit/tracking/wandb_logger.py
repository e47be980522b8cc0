"""logger=wandb: Weights & Biases, one group per sweep (the experiment) and one run per job named
by its overrides. Offline by default (`logger.wandb.mode=offline`): no account or network is
needed, the runs are written under `<sweep directory>/wandb/` and `wandb sync` uploads them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set

from prunekit.errors import choice
from prunekit.tracking import TRACKERS, RunNames, Tracker, require


@dataclass
class WandbLoggerConfig:
    project: str = "prunekit"
    entity: Optional[str] = None  # the W&B team or user; None: the account's default
    mode: str = "offline"  # offline: no account needed, `wandb sync` uploads later; online
    dir: Optional[str] = None  # None: the sweep directory (a run: its directory)

    @classmethod
    def check(cls, cfg) -> None:
        choice(cfg, "logger.wandb.mode", ("offline", "online"))


def logged_in(wandb) -> bool:
    """Whether W&B has credentials, found without asking (wandb.init would prompt for them in
    a terminal, holding the run up)."""
    try:
        return bool(wandb.login(prompt=False, verify=False))
    except TypeError:  # a W&B too old to be asked that: its init asks or refuses by itself
        return True


@TRACKERS.register
class WandbTracker(Tracker):
    name = "wandb"
    schema = WandbLoggerConfig

    def __init__(self, settings, names: RunNames, previous: Optional[str] = None):
        wandb = require("wandb", self.name, "wandb")
        root = Path(settings.dir).expanduser() if settings.dir else names.root
        root.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        if settings.mode == "online" and not logged_in(wandb):
            raise PermissionError("no W&B credentials: run `wandb login` or set WANDB_API_KEY "
                                  "(or keep logger.wandb.mode=offline)")
        # console="off": W&B leaves the terminal (and its progress bars) alone; silent: no banner
        self.run = wandb.init(project=settings.project, entity=settings.entity,
                              group=names.experiment, name=names.run, dir=str(root),
                              mode=settings.mode, reinit="create_new",
                              id=previous, resume="allow" if previous else None,
                              config={"prunekit.run_dir": str(names.run_dir)},
                              settings=wandb.Settings(silent=True, console="off",
                                                      disable_git=True, save_code=False,
                                                      x_disable_stats=True))
        self.series: Set[str] = set()
        self.id = self.run.id
        self.continued = previous is not None and self.run.id == previous

    def log_config(self, params: Dict[str, str], text: str) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_scalars(self, series: str, values: Dict[str, float], index: int) -> None:
        if series not in self.series:  # each series on its own x axis (W&B has one step)
            self.run.define_metric(f"{series}/index")
            self.run.define_metric(f"{series}/*", step_metric=f"{series}/index")
            self.series.add(series)
        self.run.log({**{f"{series}/{k}": v for k, v in values.items()},
                      f"{series}/index": index})

    def log_summary(self, values: Dict[str, float], summary: dict) -> None:
        self.run.summary.update({**values, "status": summary.get("status"),
                                 "error": summary.get("error")})

    def log_files(self, paths: List[Path]) -> None:
        artifact = self.wandb.Artifact(f"run-{self.run.id}", type="run-files")
        for path in paths:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "ok" else 1)
        # finish() can return before W&B's service has written the run's records out; its
        # teardown waits for them (the next run starts a new service, in about a second)
        self.wandb.teardown()
