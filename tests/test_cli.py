"""prune-run as users run it: a subprocess, its exit code, its stderr, its files."""
import pickle

import pytest
from test_runner import CONTRACT_KEYS

from conftest import FAST, read_summary, run_cli
from prunekit.config import METHODS

TINY = ["dataset.subset=0.3", "pretrain.epochs=1", "method.epochs=2", "method.frequency=2", *FAST]


def test_default_run_on_tiny_settings(tmp_path):
    out = tmp_path / "run"
    r = run_cli([f"hydra.run.dir={out}", *TINY], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    s = read_summary(out)
    assert s["status"] == "ok"
    assert (s["method"], s["model"], s["dataset"], s["hardware"]) == (
        "gradual", "resnet18", "digits", "auto")
    for key in CONTRACT_KEYS:
        assert key in s, key
    assert s["sparsity"] == pytest.approx(0.5, abs=1e-3)
    for name in ("steps.csv", "layers.csv", "model.pt", ".hydra/config.yaml", "prune-run.log"):
        assert (out / name).exists(), name
    assert "top-1 (test, %)" in r.stdout  # the summary table


def test_help_lists_the_groups(tmp_path):
    r = run_cli(["--help"], cwd=tmp_path)
    assert r.returncode == 0
    for group in ("model", "dataset", "method", "hardware", "logger", "experiment"):
        assert f"\n{group}: " in r.stdout
    assert "logger: mlflow, none, tensorboard, wandb" in r.stdout
    assert "method: " + ", ".join(sorted(METHODS)) in r.stdout  # every registered method
    for internal in ("schema/", "method_dataset", "model_dataset"):  # not for users to pick
        assert internal not in r.stdout


def write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


BAD_INPUTS = {
    "unknown option": (["method=nosuch"], "method=nosuch"),
    "unknown key": (["method.fooo=1"], "method.fooo"),
    "force-added key": (["+method.fooo=1"], "method.fooo"),
    "wrong type": (["sparsity=abc"], "sparsity"),
    "out of range": (["sparsity=1.5"], "sparsity"),
    "negative epochs": (["pretrain.epochs=-3"], "pretrain.epochs"),
    "missing dataset path": (["dataset=imagefolder", "dataset.path=/no/such/folder"],
                             "dataset.path"),
    "named idx path": (["dataset=fashion_mnist", "dataset.path={tmp}/no-such-folder"],
                       "dataset.path={tmp}/no-such-folder is no folder"),
    "missing download": (["dataset=cifar10", "dataset.download=false", "dataset.root={tmp}/none"],
                         "dataset.root"),
    "missing checkpoint": (["model.checkpoint={tmp}/none.pt"], "model.checkpoint"),
    "foreign checkpoint": (["model=lenet5", "model.checkpoint={tmp}/foreign.pt"],
                           "model.checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, case):
    write_pickle(tmp_path / "foreign.pt", {"weights": [1, 2, 3]})  # a pickle, not a state dict
    args, key = BAD_INPUTS[case]
    args = [a.format(tmp=tmp_path) for a in args]
    key = key.format(tmp=tmp_path)
    out = tmp_path / "run"
    r = run_cli([f"hydra.run.dir={out}", *args, *FAST], cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith("prune-run: error:") and key in errors[0]
    if (out / "summary.json").exists():  # nothing half-written passed off as a result
        assert read_summary(out)["status"] == "failed"


@pytest.mark.parametrize("arg, says", [
    ("method.granulrity=filter",
     "method.granulrity is not a known key (did you mean `granularity`?)"),
    ("+method.granulrity=filter", "method.granulrity is not a known key (did you mean"),
    ("hardware.latency.repats=3", "hardware.latency.repats is not a known key (did you mean "
                                  "`repeats`?)"),
    ("method=grdual", "method=grdual is not an option (did you mean `gradual`?): choose one of "
                      + ", ".join(sorted(METHODS))),
    ("target.kind=flop", "target.kind=flop is not one of sparsity, flops, params, latency (did "
                         "you mean `flops`?)"),
    ("sparsity=abc", "sparsity=abc is not a number: sparsity takes a number in [0, 1), the "
                     "fraction of the prunable weights removed"),
    ("seed=1.5", "seed=1.5 is not a whole number: seed takes a whole number"),
    ("checkpoint.enabled=maybe", "checkpoint.enabled=maybe is not true or false"),
])
def test_near_misses_get_a_suggestion_and_no_internal_names(tmp_path, arg, says):
    r = run_cli([f"hydra.run.dir={tmp_path / 'run'}", arg], cwd=tmp_path, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and says in lines[0], r.stderr
    assert "Config" not in lines[0]  # no schema class names (GradualMethodConfig, ...)


@pytest.mark.parametrize("content, says", [
    ("text", "is not a PyTorch file (it is a text file)"),
    ("list", "is not a state dict"),  # a torch file, but of something else
])
def test_a_bad_checkpoint_fails_before_any_heavy_work(tmp_path, content, says):
    import torch

    path = tmp_path / "weights"
    if content == "text":
        path.write_text("my notes about the model\n")
    else:
        torch.save([1, 2, 3], path)
    r = run_cli([f"hydra.run.dir={tmp_path / 'run'}", f"model.checkpoint={path}", *FAST],
                cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and says in r.stderr and "(544502645)" not in r.stderr
    log = (tmp_path / "run" / "prune-run.log").read_text()
    assert "data " not in log and "dense" not in log  # no data loaded, no dense stage set up
    assert says in log  # the error line is in the log too


def test_multirun_runs_every_job_and_survives_a_failing_one(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(["-m", f"hydra.sweep.dir={sweep}", "model=lenet5", "method=oneshot",
                 "method.lr=0.01,1e12", "seed=0,1", "dataset.subset=0.3", *FAST], cwd=tmp_path)
    assert r.returncode == 1  # one lr diverges: the sweep goes on, the exit code says so
    status = {}
    for job in sorted(sweep.iterdir()):
        if (job / "summary.json").exists():
            s = read_summary(job)
            status[(s["hparams"]["lr"], s["seed"])] = s["status"]
    assert status == {(0.01, 0): "ok", (0.01, 1): "ok", (1e12, 0): "failed", (1e12, 1): "failed"}
    assert r.stderr.count("prune-run: error:") == 2 and "Traceback" not in r.stderr


def test_an_unknown_torchvision_arch_names_the_closest_three(tmp_path):
    r = run_cli([f"hydra.run.dir={tmp_path / 'run'}", "model=torchvision", "model.arch=resnet181",
                 "dataset.subset=0.2", *FAST], cwd=tmp_path, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "model.arch=resnet181 is not a torchvision classifier (closest: resnet18, " in lines[0]
    assert "list_models" in lines[0] and len(lines[0]) < 300  # not all 80 names


@pytest.mark.parametrize("overrides, says", [
    (["model=resnet18", "model.weights=DEFAULT"], "model.weights is for model=torchvision, not"),
    (["model=resnet18", "model.arch=x"], "model.arch is for model=timm or model=torchvision"),
    (["dataset.num_samples=50"], "dataset.num_samples is for dataset=fake, not"),
])
def test_a_key_of_another_option_of_the_group_names_that_option(tmp_path, overrides, says):
    """A family's, a data set's keys live in its own schema: set on another option, the one line
    says whose key it is."""
    r = run_cli([f"hydra.run.dir={tmp_path / 'run'}", *overrides], cwd=tmp_path, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and says in lines[0], r.stderr


def test_a_sweep_value_is_checked_before_the_first_job(tmp_path):
    """-m sparsity=0.5,1.5,0.7: refused before job 0 trains anything, in one line naming the
    bad value and its job."""
    sweep = tmp_path / "sweep"
    r = run_cli(["-m", f"hydra.sweep.dir={sweep}", "model=lenet5", "sparsity=0.5,1.5,0.7",
                 *FAST], cwd=tmp_path, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("prune-run: error: sparsity=1.5 is out of range")
    assert "sparsity=1.5" in lines[0].partition("(in the sweep's job")[2]
    assert not list(sweep.glob("*/summary.json")) and not list(sweep.glob("*/prune-run.log"))


def test_loosen_swept_group_keys_only_touches_keys_of_swept_groups():
    from prunekit.cli import loosen_swept_group_keys

    args = ["-m", "method=slr,admm", "method.retrain_epochs=0", "model.small_input=true",
            "sparsity=0.5,0.9", "+method.extra=1", "hydra.sweep.dir=x"]
    assert loosen_swept_group_keys(args) == [
        "-m", "method=slr,admm", "++method.retrain_epochs=0", "model.small_input=true",
        "sparsity=0.5,0.9", "+method.extra=1", "hydra.sweep.dir=x"]
    single = ["method=slr", "method.retrain_epochs=0"]
    assert loosen_swept_group_keys(single) == single  # not a multirun: Hydra checks it as is
    swept_model = ["--multirun", "model=glob(lenet*)", "model.small_input=true"]
    assert loosen_swept_group_keys(swept_model)[2] == "++model.small_input=true"


def test_a_multirun_over_methods_takes_a_key_they_share(tmp_path):
    """The issue's done-when form: the default method lacks retrain_epochs, slr and admm have it;
    a swept method without it fails in its own job with a one-line error."""
    sweep = tmp_path / "sweep"
    r = run_cli(["-m", f"hydra.sweep.dir={sweep}", "model=lenet5", "method=slr,admm,oneshot",
                 "method.retrain_epochs=0", "sparsity=0.9", "dataset.subset=0.3", *FAST],
                cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    got = {s["method"]: s for s in map(read_summary, sorted(sweep.glob("[0-9]*")))}
    for method in ("slr", "admm"):
        assert got[method]["status"] == "ok" and got[method]["hparams"]["retrain_epochs"] == 0
        assert got[method]["finetune_count"] == 1  # the method's training, no retraining
    assert got["oneshot"]["status"] == "failed"
    assert "method.retrain_epochs is not a key of method=oneshot" in got["oneshot"]["error"]
