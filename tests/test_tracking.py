"""The `logger` group: what TensorBoard, MLflow and W&B hold after a run, read back with their
own readers; a tracker that cannot start or fails later never costs the run its result."""
import csv
import logging
import socket
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import FAST, make_cfg, read_summary, run_cli
from prunekit.errors import ConfigError
from prunekit.record import Recorder
from prunekit.runner import run
from prunekit.settings import config_hash
from prunekit.tracking import TRACKERS, RunNames, Tracking, run_names

CONF = Path(__file__).resolve().parents[1] / "conf"
LENET = ["model=lenet5", "dataset.subset=0.3", "pretrain.epochs=2", *FAST]


def steps_rows(run_dir: Path) -> list:
    with open(run_dir / "steps.csv") as f:
        return list(csv.DictReader(f))


def scalars(run_dir: Path) -> dict:
    """{tag: [(step, value)]} as TensorBoard's own reader reads the run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_and_hear(overrides, run_dir: Path, caplog):
    """Run `overrides` on the small LeNet run; its summary and what the trackers said (the
    warnings of prunekit.tracking)."""
    cfg = make_cfg([*overrides, "hardware.latency.enabled=false", *LENET])
    with caplog.at_level(logging.WARNING, logger="prunekit"):
        summary = run(cfg, run_dir, show=False)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("prunekit.tracking")]
    return summary, said


def test_a_sweep_is_read_back_by_tensorboard_and_mlflow(tmp_path):
    import mlflow

    sweep = tmp_path / "sweep"
    r = run_cli(["-m", f"hydra.sweep.dir={sweep}", "method=gradual,oneshot",
                 "logger=[tensorboard,mlflow]", *LENET], cwd=tmp_path,
                env={"PRUNEKIT_CACHE": str(tmp_path / "cache")})  # its first job trains
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = {read_summary(job)["method"]: job for job in (sweep / "0", sweep / "1")}
    names = {m: ",".join(o for o in OmegaConf.load(job / ".hydra" / "overrides.yaml")
                         if not o.startswith("logger"))  # the job's overrides, as Hydra has them
             for m, job in jobs.items()}
    assert all(name.startswith(f"method={m},model=lenet5,") for m, name in names.items())

    for method, job in jobs.items():  # TensorBoard: one run per job, named by its overrides
        summary, rows = read_summary(job), steps_rows(job)
        tb = scalars(sweep / "tensorboard" / RunNames(sweep, "", names[method], job).slug)
        assert tb["step/sparsity"] == [(i, pytest.approx(float(row["sparsity"]), abs=1e-6))
                                       for i, row in enumerate(rows, 1)]
        assert [s for s, _ in tb["epoch/train_loss"]] == list(
            range(1, summary["finetune_epochs"] + 1))
        assert len(tb["epoch/val_top1"]) == summary["finetune_epochs"]
        assert all(0 <= v <= 100 for _, v in tb["epoch/val_top1"])
        assert tb["summary/top1"] == [(0, pytest.approx(summary["top1"], abs=1e-4))]
    # the first job trained the dense model (the second read it from the cache): its curve
    first = RunNames(sweep, "", names["gradual"], jobs["gradual"]).slug
    assert len(scalars(sweep / "tensorboard" / first)["dense/train_loss"]) == 2

    mlflow.set_tracking_uri(f"sqlite:///{sweep / 'mlflow.db'}")  # MLflow: one experiment
    runs = mlflow.search_runs(experiment_names=[str(sweep)])
    assert sorted(runs["tags.mlflow.runName"]) == sorted(names.values())
    client = mlflow.MlflowClient(f"sqlite:///{sweep / 'mlflow.db'}")
    for _, row in runs.iterrows():
        job = jobs[row["params.method.name"]]
        summary = read_summary(job)
        assert row["status"] == "FINISHED"
        assert row["metrics.top1"] == pytest.approx(summary["top1"], abs=1e-4)
        assert row["metrics.sparsity"] == pytest.approx(summary["sparsity"], abs=1e-6)
        history = client.get_metric_history(row["run_id"], "step/sparsity")
        assert [(m.step, round(m.value, 6)) for m in history] == [
            (i, round(float(r["sparsity"]), 6)) for i, r in enumerate(steps_rows(job), 1)]
        files = {a.path for a in client.list_artifacts(row["run_id"])}
        assert {"summary.json", "steps.csv", "layers.csv", "config_resolved.yaml"} <= files
        assert "model.pt" not in files  # only with logger.log_model=true


def test_an_unreachable_server_leaves_the_run_ok_in_one_line(tmp_path, caplog):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.perf_counter()
    summary, said = run_and_hear(["method=oneshot", "logger=mlflow",
                                  f"logger.mlflow.tracking_uri={uri}"], tmp_path / "run", caplog)
    assert summary["status"] == "ok" and read_summary(tmp_path / "run")["status"] == "ok"
    assert len(said) == 1 and "\n" not in said[0]
    assert said[0].startswith("logger=mlflow cannot start") and f"cannot reach {uri}" in said[0]
    assert time.perf_counter() - started < 60  # no minutes of retries


def test_a_tracker_that_fails_mid_run_is_dropped_and_the_run_is_ok(tmp_path, caplog,
                                                                   monkeypatch):
    from prunekit.tracking.tensorboard_logger import TensorBoardTracker

    closed = []

    def broken(self, series, values, index):
        raise OSError("disk full")

    monkeypatch.setattr(TensorBoardTracker, "log_scalars", broken)
    monkeypatch.setattr(TensorBoardTracker, "close",
                        lambda self, status: closed.append(status) or self.writer.close())
    summary, said = run_and_hear(["method=oneshot", "logger=tensorboard"], tmp_path / "run",
                                 caplog)
    assert summary["status"] == "ok" and (tmp_path / "run" / "model.pt").is_file()
    assert said == ["logger=tensorboard failed to log the epoch (disk full): the run goes on "
                    "without it"]  # once: dropped after its first failure
    assert closed == ["failed"]


def test_a_missing_package_names_the_extra_that_installs_it(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    summary, said = run_and_hear(["method=oneshot", "logger=[wandb,tensorboard]"],
                                 tmp_path / "run", caplog)
    assert summary["status"] == "ok"
    assert said == ["logger=wandb cannot start (it needs the wandb package: pip install "
                    "'prunekit[wandb]'): the run goes on without it"]
    assert list((tmp_path / "run" / "tensorboard").iterdir())  # the other logger still ran


def test_a_tracked_run_computes_and_times_what_an_untracked_one_does(tmp_path, monkeypatch):
    import prunekit.runner as runner

    base = ["method=oneshot", "method.finetune_epochs=3", "hardware.latency.enabled=false",
            "pretrain.cache=false", *LENET]  # both train the dense model (2 epochs)
    plain = run(make_cfg(base), tmp_path / "plain", show=False)

    class SlowEpochLog(runner.EpochLog):  # the per-epoch evaluation only a tracked run does
        def __init__(self, tracking, evaluate, *args, **kw):
            super().__init__(tracking, lambda model: (time.sleep(1.0), evaluate(model))[1],
                             *args, **kw)

    monkeypatch.setattr(runner, "EpochLog", SlowEpochLog)
    tracked = run(make_cfg([*base, "logger=tensorboard"]), tmp_path / "tracked", show=False)
    for key in ("top1", "top1_dense", "val_top1", "sparsity", "finetune_epochs"):
        assert tracked[key] == plain[key], key

    def untimed(run_dir):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in steps_rows(run_dir)]

    assert untimed(tmp_path / "tracked") == untimed(tmp_path / "plain")
    # 2 + 3 epochs x 1 s of reporting were spent, and none of it is dense training or pruning
    assert tracked["time_pretrain_s"] < plain["time_pretrain_s"] + 1.0
    assert tracked["time_finetune_s"] < plain["time_finetune_s"] + 1.0
    assert tracked["time_total_s"] < plain["time_total_s"] + 1.0
    tb = scalars(next((tmp_path / "tracked" / "tensorboard").iterdir()))
    assert len(tb["dense/val_top1"]) == 2 and len(tb["epoch/val_top1"]) == 3


def test_a_failed_run_is_a_failed_mlflow_run_with_its_error(tmp_path):
    import mlflow

    from prunekit.train import DivergenceError

    cfg = make_cfg(["method=oneshot", "method.lr=1e12", "logger=mlflow",
                    "logger.experiment=diverging", "logger.run_name=lr-1e12",
                    "hardware.latency.enabled=false", *LENET])
    with pytest.raises(DivergenceError):
        run(cfg, tmp_path / "run", show=False)
    assert read_summary(tmp_path / "run")["status"] == "failed"
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["diverging"])
    assert list(runs["tags.mlflow.runName"]) == ["lr-1e12"]
    assert runs["status"][0] == "FAILED" and "training loss is" in runs["tags.error"][0]


def test_wandb_offline_needs_no_account_and_holds_the_run(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no login anywhere
    cfg = make_cfg(["method=oneshot", "logger=wandb", "logger.run_name=${method.name}-s${seed}",
                    "hardware.latency.enabled=false", *LENET])
    with caplog.at_level(logging.WARNING, logger="prunekit"):
        summary = run(cfg, tmp_path / "run", show=False)
    assert summary["status"] == "ok"
    records = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(records) == 1, caplog.text
    record = records[0]
    data = record.read_bytes()  # W&B's own record file: the run, its series and its summary
    for text in (b"oneshot-s0", b"step/sparsity", b"epoch/val_top1", b"top1", b"summary.json"):
        assert text in data, text


def test_wandb_online_without_an_account_is_one_line_not_a_prompt(tmp_path, monkeypatch,
                                                                   caplog):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    summary, said = run_and_hear(["method=oneshot", "logger=wandb", "logger.wandb.mode=online"],
                                 tmp_path / "run", caplog)
    assert summary["status"] == "ok"
    assert said == ["logger=wandb cannot start (no W&B credentials: run `wandb login` or set "
                    "WANDB_API_KEY (or keep logger.wandb.mode=offline)): the run goes on "
                    "without it"]


def test_recorder_listeners_see_every_row_and_a_resumed_runs_rows_again():
    seen = []
    recorder = Recorder(None)
    recorder.listeners.append(lambda row, number, restored: seen.append(
        (number, row["step"], restored)))
    recorder.step(step=1, sparsity=0.1)
    recorder.step(step=2, sparsity=0.2)
    recorder.reset([{"step": 1}, {"step": 2}])  # a resumed run: the rows it restored
    assert seen == [(1, 1, False), (2, 2, False), (1, 1, True), (2, 2, True)]


def test_the_logger_group_composes_alone_and_as_a_list():
    assert make_cfg([]).logger.tensorboard is None  # none by default
    both = make_cfg(["logger=[tensorboard,mlflow]"]).logger
    assert both.tensorboard is not None and both.mlflow is not None and both.wandb is None
    assert {p.stem for p in (CONF / "logger").glob("*.yaml")} == {"none", *TRACKERS}
    # each tracker's section is its own schema, declared beside it
    assert all(OmegaConf.get_type(both[name]) is TRACKERS[name].schema
               for name in ("tensorboard", "mlflow"))


@pytest.mark.parametrize("override, says", [
    ("logger.wandb.mode=cloud", "logger.wandb.mode=cloud is not one of offline, online"),
    ("logger.run_name=' '", "logger.run_name is empty"),
])
def test_bad_logger_settings_fail_in_one_line(override, says):
    from prunekit.config import validate

    cfg = make_cfg(["logger=wandb", override])
    with pytest.raises(ConfigError, match=says) as err:
        validate(cfg)
    assert "\n" not in str(err.value)


def test_a_setting_of_an_unchosen_logger_is_one_line(tmp_path):
    r = run_cli(["logger.mlflow.tracking_uri=http://host:5000", *FAST], cwd=tmp_path,
                timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "prune-run: error: logger.mlflow.tracking_uri is a setting of logger=mlflow, which is "
        "not chosen: add logger=mlflow (or list it with others, 'logger=[tensorboard,mlflow]')")


def test_loggers_do_not_change_what_a_checkpoint_belongs_to():
    assert config_hash(make_cfg([])) == config_hash(make_cfg(["logger=[tensorboard,mlflow]"]))


def test_run_names_default_to_a_single_runs_own_and_give_a_safe_directory(tmp_path):
    cfg = make_cfg([])
    names = run_names(cfg, tmp_path / "12-00_gradual_resnet18")
    assert names == RunNames(tmp_path / "12-00_gradual_resnet18", "prunekit",
                             "12-00_gradual_resnet18", tmp_path / "12-00_gradual_resnet18")
    odd = RunNames(tmp_path, "e", "dataset.path=/data/x y,seed=1" + ",k=v" * 100, tmp_path)
    assert "/" not in odd.slug and " " not in odd.slug and len(odd.slug) <= 150
    assert odd.slug == RunNames(tmp_path, "e", odd.run, tmp_path).slug  # stable: resumable
    named = run_names(OmegaConf.merge(cfg, {"logger": {"experiment": "x", "run_name": "y"}}),
                      tmp_path, root=tmp_path.parent, run="method=ice", experiment="sweep")
    assert (named.experiment, named.run, named.root) == ("x", "y", tmp_path.parent)


def test_an_empty_tracking_is_a_no_op():
    tracking = Tracking()
    tracking.step({"step": 1}, 1)
    tracking.finish({"status": "ok"}, Path("."), log_model=True)
    assert not tracking


@pytest.mark.parametrize("how", ["sigterm", "kill"])
def test_a_resumed_run_continues_its_tracker_runs(tmp_path, monkeypatch, how):
    """An interrupted tracked run, resumed: MLflow holds one run (the same one, finished) and
    TensorBoard one directory, each with every step and epoch of the uninterrupted run once."""
    import mlflow
    from test_resume import Killed, interrupt

    args = ["method=iterative", "method.steps=3", "method.finetune_epochs=2",
            "logger=[tensorboard,mlflow]", "checkpoint.min_interval_s=0",
            "hardware.latency.enabled=false", *LENET]
    reference = run(make_cfg(args), tmp_path / "reference", show=False)
    with monkeypatch.context() as m:
        interrupt(m, "step", how, 2, "")
        with pytest.raises((KeyboardInterrupt, Killed)):
            run(make_cfg(args), tmp_path / "run", show=False)
    resumed = run(make_cfg([*args, "resume=true"]), tmp_path / "run", show=False)
    assert resumed["status"] == "ok" and resumed["steps"] == reference["steps"] == 3

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    [only] = client.search_runs([client.get_experiment_by_name("prunekit").experiment_id])
    assert only.info.status == "FINISHED"
    for series, count in (("step/sparsity", 3), ("epoch/train_loss", 6)):
        steps = sorted(m.step for m in client.get_metric_history(only.info.run_id, series))
        # each step once; a kill loses what followed the last checkpoint, which is done again
        assert sorted(set(steps)) == list(range(1, count + 1)), series
        assert len(steps) == count or how == "kill", series
        [tb] = (tmp_path / "run" / "tensorboard").iterdir()
        tb_steps = sorted(s for s, _ in scalars(tb)[series])
        assert sorted(set(tb_steps)) == list(range(1, count + 1)), series
        assert len(tb_steps) == count or how == "kill", series
    sparsity = dict(scalars(tb)["step/sparsity"])  # what was done again is the same
    assert [sparsity[i] for i in (1, 2, 3)] == pytest.approx(
        [float(r["sparsity"]) for r in steps_rows(tmp_path / "reference")], abs=1e-6)
