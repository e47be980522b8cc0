"""`prune-run`: compose the config (Hydra) -> validate -> run -> exit code.

Every job of a multirun runs to its own end: a failing job writes `status: failed` with the reason
into its summary.json, says so in one line, and the sweep goes on (Hydra would otherwise stop the
sweep and skip its end-of-sweep callbacks, among them the report that prunekit.report writes
into the sweep directory). The process exits non-zero if any job failed.
Bad input never shows a traceback; set HYDRA_FULL_ERROR=1 to see one for any failure.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import List, Optional, get_type_hints

import hydra
import hydra._internal.utils as hydra_utils
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, MissingConfigException, OverrideParseException
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from prunekit import distributed
from prunekit.config import SCHEMAS, schema_keys, validate
from prunekit.errors import ConfigError, did_you_mean
from prunekit.record import write_failed_summary
from prunekit.run_dir import check_run_dir, holds_a_result, task_config
from prunekit.tracking import TRACKERS

FAILED: List[str] = []
PUBLIC_GROUPS = ("model", "dataset", "method", "hardware", "logger", "experiment")


# What a key takes, where its type alone does not say it (the one line for a value of the wrong
# type, e.g. sparsity=abc, names it)
KEY_MEANINGS = {
    "sparsity": "a number in [0, 1), the fraction of the prunable weights removed",
    "seed": "a whole number",
    "target.value": "a number > 1, the factor the target shrinks by (2.0 = half)",
    "dataset.subset": "a number in (0, 1], the fraction of every split kept",
}
TYPE_MEANINGS = {"FloatNode": "a number", "IntegerNode": "a whole number",
                 "BooleanNode": "true or false", "StringNode": "a string"}


def wrong_type(key: str, value, node_type: str) -> str:
    """The one line for `key=value` whose value has the wrong type for the key's schema."""
    kind = TYPE_MEANINGS.get(node_type, "of the right type")
    return f"{key}={value} is not {kind}: {key} takes {KEY_MEANINGS.get(key, kind)}"


def known_key(cfg: DictConfig, key: str) -> bool:
    """Whether `key` (e.g. `method.retrain_epochs`) is in the schema of the option `cfg` chose
    for its group; keys outside the typed groups count as known."""
    group, _, path = key.partition(".")
    node = cfg.get(group)
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if not dataclasses.is_dataclass(schema) or not path:
        return True
    for part in path.split("."):
        hints = get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
        if part not in hints:
            return False
        schema = hints[part]
    return True


def group_options() -> str:
    """`--help`'s group list: the groups users pick from (not the schemas, nor the pairing
    settings in method_dataset/ and model_dataset/, which apply themselves)."""
    from importlib.resources import files

    conf = files("prunekit.conf")
    return "\n".join(f"{group}: " + ", ".join(sorted(
        p.name[:-len(".yaml")] for p in (conf / group).iterdir() if p.name.endswith(".yaml")))
        for group in PUBLIC_GROUPS)


OmegaConf.register_new_resolver("prunekit_groups", group_options, replace=True)

LAUNCH: dict = {"time": None}  # a distributed run's start, rank 0's, the same on every rank


def launch_time(pattern: str) -> str:
    """`${prunekit_now:PATTERN}` in the run and sweep directories: the time now, or in a
    distributed run rank 0's launch time, so every rank names the same directory."""
    return (LAUNCH["time"] or datetime.now()).strftime(pattern)


OmegaConf.register_new_resolver("prunekit_now", launch_time, use_cache=True, replace=True)


def join_launched(args: List[str]) -> Optional[distributed.World]:
    """Under torchrun / SLURM with several processes (and hardware.distributed not off): join
    the process group now, before Hydra names the run directory from rank 0's clock."""
    if not distributed.launched().distributed or any(
            a.lstrip("+") == "hardware.distributed=off" for a in args):
        return None
    world = distributed.join("auto")
    LAUNCH["time"] = distributed.from_main(datetime.now())
    return world


def rank_log_file(world: distributed.World) -> None:
    """Ranks other than 0 log to prune-run.rank<r>.log beside rank 0's prune-run.log, and show
    only warnings on the console (rank 0 tells the run's story once)."""
    if world.rank == 0:
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            base, ext = os.path.splitext(handler.baseFilename)
            handler.close()
            handler.baseFilename = f"{base}.rank{world.rank}{ext}"
        elif isinstance(handler, logging.StreamHandler) or hasattr(handler, "console"):
            handler.setLevel(max(handler.level, logging.WARNING))


def error_line(msg: str) -> None:
    """The one line a failure ends with, on stderr and, once a job has a log, in its log file."""
    line = f"prune-run: error: {msg}"
    print(line, file=sys.stderr, flush=True)
    file_only = logging.getLogger("prunekit.trace")  # Hydra's job logging: the log file only
    if file_only.handlers:
        file_only.error(line)


@hydra.main(version_base="1.3", config_path="pkg://prunekit.conf", config_name="config")
def task(cfg: DictConfig) -> None:
    out_dir = HydraConfig.get().runtime.output_dir
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    world = distributed.current()
    if world.distributed:
        rank_log_file(world)
    try:
        hc = HydraConfig.get()
        check_added_keys(cfg, list(hc.overrides.task), hc.runtime.choices)
        validate(cfg)  # before the data and the model: a typo is answered at once
        finished = check_run_dir(cfg, out_dir)  # another run's folder is left as it is
    except ConfigError as e:
        if full_error:
            raise
        if world.main and not holds_a_result(out_dir):
            write_failed_summary(out_dir, cfg, str(e))
        error_line(str(e))
        FAILED.append(out_dir)
        return
    if finished:
        print(f"prune-run: {out_dir} has finished this configuration (summary.json says ok): "
              "skipped", flush=True)
        return
    from prunekit.runner import run

    try:
        run(cfg, out_dir, names=tracking_names(cfg, out_dir))
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (resume.Terminated)
        error_line(f"interrupted; partial results in {out_dir}; resume with: "
                   f"{resume_command(out_dir)}")
        FAILED.append(out_dir)
        raise SystemExit(143 if type(e).__name__ == "Terminated" else 130)
    except ConfigError as e:
        if full_error:
            raise
        error_line(str(e))
        FAILED.append(out_dir)
    except Exception as e:  # a failure inside the run: say it in one line, keep the sweep going
        if full_error:
            raise
        logging.getLogger("prunekit.trace").error("run failed", exc_info=True)  # log file only
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        error_line(f"run failed: {type(e).__name__}: {first} (details: {out_dir}/prune-run.log)")
        FAILED.append(out_dir)


ARGV: List[str] = []  # the command line as the user gave it (main loosens a sweep's keys)


def resume_command(out_dir: str) -> str:
    """The command that continues this run (a sweep: the sweep, whose finished jobs are skipped)
    where it stopped: the same overrides, resume=true, and the directory it writes to."""
    from hydra.types import RunMode

    hc = HydraConfig.get()
    sweep = hc.mode == RunMode.MULTIRUN
    args = [a for a in ARGV if not a.lstrip("+").startswith(
        ("resume=", "hydra.run.dir=", "hydra.sweep.dir="))]
    args += ["resume=true", f"hydra.sweep.dir={hc.sweep.dir}" if sweep
             else f"hydra.run.dir={out_dir}"]
    return "prune-run " + " ".join(shlex.quote(a) for a in args)


def tracking_names(cfg: DictConfig, out_dir: str):
    """The loggers' names for this job: in a sweep, the sweep directory is the experiment (and
    holds the local stores), the job's overrides name its run; a single run is its own root."""
    from hydra.types import RunMode

    from prunekit.tracking import run_names

    hc = HydraConfig.get()
    overrides = [o.lstrip("+") for o in hc.overrides.task
                 if not o.lstrip("+~").startswith(("logger", "hydra."))]
    run = ",".join(overrides) or None
    if hc.mode == RunMode.MULTIRUN:
        return run_names(cfg, Path(out_dir), root=Path(hc.sweep.dir), run=run,
                         experiment=str(hc.sweep.dir))
    return run_names(cfg, Path(out_dir), run=run)


def job_directory(cfg: DictConfig, num: int) -> Optional[str]:
    """Where a sweep's job `num` writes (hydra.sweep.dir / subdir), or None if it cannot tell."""
    try:
        with open_dict(cfg):
            cfg.hydra.job.num, cfg.hydra.job.id = num, str(num)
        return os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir))
    except Exception:  # a subdir naming what only the launcher knows: the job checks itself
        return None


def composition_error(ex: CompactHydraException) -> str:
    """Hydra's multi-line composition errors, as one line naming the key and the fix."""
    if isinstance(ex, MissingConfigException) and ex.options and ex.missing_cfg_file:
        group, _, name = ex.missing_cfg_file.rpartition("/")
        options = sorted(ex.options)
        return (f"{group}={name} is not an option{did_you_mean(name, options)}: choose one of "
                f"{', '.join(options)}")
    if isinstance(ex, OverrideParseException):
        return f"cannot parse the override '{ex.override}': {ex.message.splitlines()[0]}"
    cause = ex.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
            known = schema_keys(getattr(cause, "object_type", None))
            group = str(cause.full_key).partition(".")[0]
            owners = sorted(path.partition("/")[2] for path, node in SCHEMAS.items()
                            if path.startswith(group + "/") and cause.key in schema_keys(node))
            if owners and known:  # another option of the group has it: say which
                return (f"{cause.full_key} is for {group}={f' or {group}='.join(owners)}, not "
                        f"for the {group} chosen")
            return (f"{cause.full_key} is not a known key{did_you_mean(cause.key, known)}: "
                    "`prune-run --cfg job` lists the keys")
        if isinstance(cause, ValidationError) and getattr(cause, "child_node", None) is not None:
            return wrong_type(cause.full_key, cause.value, type(cause.child_node).__name__)
        msg = str(getattr(cause, "msg", cause)).strip().splitlines()[0]
        return f"{cause.full_key}: {msg}"
    return next((line.strip() for line in str(ex).splitlines() if line.strip()), type(ex).__name__)


def unchosen_logger_key(args: List[str]) -> Optional[str]:
    """A `logger.<tracker>.<key>=` override of a tracker the `logger` choice leaves out (its
    section is null, which OmegaConf cannot set a key in): the one line that says so."""
    for arg in args:
        key = arg.lstrip("+~").partition("=")[0]
        group, _, rest = key.partition(".")
        tracker = rest.partition(".")[0]
        if group == "logger" and tracker in TRACKERS and "." in rest:
            other = next(name for name in TRACKERS if name != tracker)
            return (f"{key} is a setting of logger={tracker}, which is not chosen: add "
                    f"logger={tracker} (or list it with others, 'logger=[{other},{tracker}]')")
    return None


def _run_and_report_one_line(func, _report=hydra_utils.run_and_report):
    """Hydra's reporter, but composition errors (unknown option, wrong type, unknown key, a key
    of an unchosen logger) end in one line and exit 1, like every other bad input."""
    def composed():
        try:
            return func()
        except CompactHydraException as ex:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            error_line(composition_error(ex))
            sys.exit(1)
        except ConfigError as e:  # a sweep's job checked before the sweep starts
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            error_line(str(e))
            sys.exit(1)
        except AssertionError:  # OmegaConf setting a key inside a null section
            line = unchosen_logger_key(sys.argv[1:])
            if line is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            error_line(line)
            sys.exit(1)

    return _report(composed)


SWEEPABLE_GROUPS = ("method", "model", "dataset", "hardware")


def loosen_swept_group_keys(args: List[str]) -> List[str]:
    """A multirun's keys under a swept group, as `++` overrides.

    Hydra composes a sweep's first config with the *default* option of every swept group, so
    `-m method=slr,admm method.retrain_epochs=0` fails there (the default method has no
    retrain_epochs) although every job has the key. As `++method.retrain_epochs=0` the sweep
    composes; each job sets the key in its own method, and `task` checks it against that
    method's schema, so a key the chosen option lacks is still an error, in that job."""
    if not any(a in ("-m", "--multirun") for a in args):
        return args
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()

    def parse(arg: str):
        if arg.startswith("-") or "=" not in arg:
            return None
        try:
            return parser.parse_override(arg)
        except Exception:  # Hydra reports it, in one line, when it composes
            return None

    parsed = [parse(a) for a in args]
    swept = {o.key_or_group for o in parsed if o is not None and o.key_or_group in SWEEPABLE_GROUPS
             and o.is_sweep_override()}
    return [f"++{a}" if o is not None and not (o.is_add() or o.is_force_add() or o.is_delete())
            and o.key_or_group.partition(".")[0] in swept and "." in o.key_or_group else a
            for a, o in zip(args, parsed)]


def check_added_keys(cfg: DictConfig, overrides: List[str], choices=None) -> None:
    """Every `++group.key` of this job's `overrides` names a key of the option the job chose
    (see loosen_swept_group_keys); `choices`: the group options Hydra chose, if known."""
    for override in overrides:
        if override.startswith("++"):
            key = override[2:].partition("=")[0]
            if not known_key(cfg, key):
                group = key.partition(".")[0]
                choice = (choices or {}).get(group, cfg[group].get("name"))
                raise ConfigError(f"{key} is not a key of {group}={choice}: `prune-run "
                                  f"{group}={choice} --cfg job` lists its keys")


def validate_sweep(validate_batch_is_legal=Sweeper.validate_batch_is_legal):
    """Hydra's sweepers compose every job of a batch before launching it (an unknown option is
    refused there); prunekit's own checks run there too, so `-m sparsity=0.5,1.5` is refused
    before the first job trains, not when its bad job comes. A job given a key that only other
    swept options have is left to fail in its own run, as it always has."""
    def validate_batch(sweeper: Sweeper, batch) -> None:
        validate_batch_is_legal(sweeper, batch)
        loader = getattr(sweeper, "hydra_context", None)
        loader = loader.config_loader if loader is not None else sweeper.config_loader
        first = getattr(sweeper, "job_idx", 0)  # the batch's first job number
        for i, overrides in enumerate(batch):
            cfg = loader.load_sweep_config(master_config=sweeper.config,
                                           sweep_overrides=list(overrides))
            job_dir = job_directory(cfg, first + i)
            cfg = task_config(cfg)
            try:
                check_added_keys(cfg, list(overrides))
            except ConfigError:  # a key of the other swept options: this job fails in its own
                continue  # run, in one line, and theirs run (loosen_swept_group_keys)
            try:
                validate(cfg)
                if job_dir is not None:  # a resumed sweep whose list changed: job N is another
                    check_run_dir(cfg, job_dir)
            except ConfigError as e:
                raise ConfigError(f"{e} (in the sweep's job {','.join(overrides)}): no job of "
                                  "this batch was started") from None

    return validate_batch


def main() -> None:
    hydra_utils.run_and_report = _run_and_report_one_line
    Sweeper.validate_batch_is_legal = validate_sweep()
    ARGV[:] = sys.argv[1:]
    sys.argv[1:] = loosen_swept_group_keys(sys.argv[1:])
    try:
        join_launched(sys.argv[1:])
    except ConfigError as e:  # launched as several processes that cannot meet
        error_line(str(e))
        sys.exit(1)
    try:
        task()
    finally:
        distributed.leave()
    from prunekit.report import ReportCallback  # jobs in other processes (joblib, submitit)
    if FAILED or ReportCallback.failed_jobs:  # report their failures through the sweep's files
        sys.exit(1)


if __name__ == "__main__":
    main()
