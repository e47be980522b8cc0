"""What a run directory holds, and whether a run may start in it: a finished run of this
configuration (resume=true skips it), of another one (refused, naming the keys that differ), an
interrupted run's checkpoints (a fresh run does not wipe them). Nothing here writes."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from prunekit.config import validate
from prunekit.errors import ConfigError
from prunekit.settings import (
    config_hash,
    differences,
    environment_keys,
    experiment_settings,
    result_settings,
    without,
)

REFUSED = "refused"  # checkpoints/refused/: the files a run would not use, kept
DENSE_CHECKPOINT = "dense.pt"  # the dense training's (the method's: ckpt-*.pt)


def interrupted_checkpoints(run_dir: Path) -> List[Path]:
    """The checkpoints an interrupted run left in `run_dir` (refused/ aside)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted([*folder.glob("ckpt-*.pt"), *folder.glob(DENSE_CHECKPOINT)])


def recorded_settings(run_dir: Path) -> Optional[dict]:
    """The settings of the run that wrote `run_dir` (its config_resolved.yaml), or None."""
    try:
        return experiment_settings(OmegaConf.to_container(
            OmegaConf.load(Path(run_dir) / "config_resolved.yaml")))
    except Exception:  # missing, unreadable: the caller says it cannot compare
        return None


def check_run_dir(cfg: DictConfig, run_dir) -> bool:
    """Whether `run_dir` holds this configuration's finished run (resume=true skips it, exit 0).
    A ConfigError, before anything is written, when resume=true meets a finished run of another
    configuration (naming the keys that differ), or a fresh run meets an interrupted run's
    checkpoints (resume=true continues it; checkpoint.restart=true starts over, keeping them).
    Keys that change no result (`settings.environment`) do not count."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    finished = summary.get("status") == "ok"
    stopped = not cfg.resume and not cfg.checkpoint.restart and interrupted_checkpoints(run_dir)
    if not (cfg.resume and finished) and not stopped:
        return False
    validate(cfg)  # a bad key says so here, where the run that was here is left as it is
    theirs = recorded_settings(run_dir)
    changed = (differences(without(theirs, environment_keys(cfg)), result_settings(cfg))
               if theirs is not None else None)
    if stopped:
        raise ConfigError(f"{run_dir} holds an interrupted run's checkpoints"
                          + (f" (of another configuration: {changed})" if changed else "")
                          + ": resume=true continues it; checkpoint.restart=true starts over "
                          "(keeping them in checkpoints/refused/)")
    if summary.get("config_hash") == config_hash(cfg):
        return True
    if theirs is None:
        raise ConfigError(f"resume=true: {run_dir} holds a finished run whose configuration "
                          "cannot be read (no config_hash, no config_resolved.yaml): give "
                          "another hydra.run.dir")
    if not changed and summary.get("config_hash") is None:  # written before the hash existed
        return True
    raise ConfigError(f"resume=true: {run_dir} holds a finished run of another configuration "
                      f"({changed or 'its settings hash'}): nothing was run or overwritten; give "
                      "another hydra.run.dir (or hydra.sweep.dir), or that run's settings")


def read_summary(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def holds_a_result(run_dir: Path) -> bool:
    """Whether `run_dir` holds a finished run or an interrupted run's checkpoints: what a
    failed summary must not overwrite."""
    return read_summary(run_dir).get("status") == "ok" or bool(interrupted_checkpoints(run_dir))


class RunDirCheck(Callback):
    """A single run's folder checked before Hydra writes its .hydra/ files there
    (check_run_dir): where the run will be refused (another configuration's finished
    run, an interrupted run's checkpoints), Hydra is told to write no .hydra/ files, so nothing
    of the run that is there is overwritten; the job then refuses in one line. (Hydra turns a
    callback's exception into a warning, so refusing is left to the job.) A sweep's jobs are
    checked with the rest of the batch (cli.validate_sweep). It lives here, not in cli.py:
    Hydra imports it by name, and `python -m prunekit.cli` (torchrun) would run cli.py a
    second time, replacing its resolvers."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_run_dir(task_config(config), str(config.hydra.run.dir))
        except ConfigError:
            with open_dict(config):
                config.hydra.output_subdir = None
        except Exception:  # a config that cannot resolve: the job's own checks say why
            return


def task_config(config: DictConfig) -> DictConfig:
    """The job's config of a composed one: the same, less the `hydra` node."""
    job = copy.deepcopy(config)
    with open_dict(job):
        del job["hydra"]
    return job
