"""Runs that survive: checkpoints, resume=true ends where an uninterrupted run ends, integrity."""
import csv
import dataclasses
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAST, make_cfg, read_summary, run_cli
from prunekit.config import METHODS
from prunekit.errors import ConfigError
from prunekit.plan import plan_of
from prunekit.record import Recorder
from prunekit.resume import Checkpointer
from prunekit.runner import run
from prunekit.train import FitHooks, Trainer

LENET = ["model=lenet5", "dataset.subset=0.4", "checkpoint.min_interval_s=0", *FAST]
SAME = ("top1", "sparsity", "val_top1", "steps", "finetune_count", "finetune_epochs",
        "params_nonzero", "compaction_max_abs_diff", "top1_dense", "val_top1_dense")


def rows(run_dir: Path):
    """steps.csv without its timings (the one thing a resumed run need not repeat)."""
    with open(run_dir / "steps.csv") as f:
        return [{k: v for k, v in r.items() if "time" not in k} for r in csv.DictReader(f)]


def stop_after(monkeypatch, n):
    """Interrupt the run right after its n-th checkpoint is written."""
    saved = Checkpointer.save
    count = {"n": 0}

    def save(self, payload):
        path = saved(self, payload)
        count["n"] += 1
        if count["n"] == n:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Checkpointer, "save", save)
    return lambda: monkeypatch.setattr(Checkpointer, "save", saved)


class Killed(BaseException):
    """kill -9 in-process: the run dies where it is, no handler and no checkpoint on the way out
    (its finally blocks still run, but a resume reads only the checkpoints and steps.csv)."""


def strike(how: str) -> None:
    if how in ("sigterm", "sigint"):  # the real handlers: the run checkpoints at its next
        # boundary and stops (Ctrl-C: when a checkpoint is due, as min_interval_s=0 makes it)
        os.kill(os.getpid(), signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    else:
        raise Killed()


def interrupt(monkeypatch, where: str, how: str, row: int, fit: str):
    """Strike once: `where="step"` right after steps.csv row `row` is written (a step boundary:
    SIGTERM checkpoints there, a kill leaves the row on disk without a checkpoint);
    `where="fit"` in the middle of the second epoch of the first fit whose description contains
    `fit` (inside a fine-tune: SIGTERM checkpoints at the epoch's end, a kill loses the epoch)."""
    done = {"struck": False}

    def once() -> None:
        if not done["struck"]:
            done["struck"] = True
            strike(how)

    if where == "step":
        original_step = Recorder.step

        def step(self, **r):
            original_step(self, **r)
            if self.out_dir is not None and len(self.steps) == row:
                once()

        monkeypatch.setattr(Recorder, "step", step)
    else:
        original_fit = Trainer.fit

        def fit_(self, model, epochs, lr, *, desc="train", hooks=None, **kw):
            if fit not in desc or epochs < 2 or done["struck"]:
                return original_fit(self, model, epochs, lr, desc=desc, hooks=hooks, **kw)
            middle = self.steps_per_epoch + self.steps_per_epoch // 2
            hooks = hooks or FitHooks()

            def step_hook(t: int) -> None:
                if hooks.before_step is not None:
                    hooks.before_step(t)
                if t == middle:
                    once()

            return original_fit(self, model, epochs, lr, desc=desc,
                                hooks=dataclasses.replace(hooks, before_step=step_hook), **kw)

        monkeypatch.setattr(Trainer, "fit", fit_)
    return done


# method, its overrides, the steps.csv row to strike after, the fit to strike inside
EVERY_METHOD = [
    ("dense", ["method.epochs=3"], 1, "dense training"),
    ("oneshot", ["method.finetune_epochs=3"], 1, "fine-tune"),
    ("iterative", ["method.steps=3", "method.finetune_epochs=2"], 2, "step 2 fine-tune"),
    ("iterative", ["method.granularity=filter", "method.schedule=blockwise",
                   "method.finetune_epochs=2"], 2, "step 2 fine-tune"),  # compacted per step
    ("iterative", ["method.granularity=filter", "method.steps=3", "method.finetune_epochs=2",
                   "target.kind=flops", "target.value=1.5"], 2,
     "step 2 fine-tune"),  # each step re-solved on a compacted model against the dense FLOPs
    ("gradual", ["method.epochs=3", "method.frequency=2"], 6, "gradual"),  # mid-fit AGP updates
    ("ice", ["method.autotune.enabled=false", "method.finetune_epochs=2",
             "method.use_threshold=false"], 2, "step 2 fine-tune"),  # lr and x from the model
    ("ice", ["method.autotune.enabled=false", "method.finetune_epochs=2"], 2, "fine-tune"),
    ("ice", ["method.autotune.enabled=false", "method.finetune_epochs=2",
             "method.use_threshold=false", "target.kind=flops", "target.value=1.5"], 2,
     "step 2 fine-tune"),  # the block ratio solved for a FLOPs target, journaled
    ("admm", ["method.iterations=3", "method.retrain_epochs=2"], 2, "ADMM"),  # Z, U mid-ADMM
    ("admm", ["method.granularity=filter", "method.iterations=2", "method.retrain_epochs=2"], 3,
     "masked retraining"),  # compacted, then retrained
    ("slr", ["method.epochs=3", "method.retrain_epochs=2"], 2, "SLR"),  # Z, Λ, s, k, W_p mid-SLR
    ("autocompress", ["method.rounds=2", "method.search.evaluations=3", "method.iterations=1",
                      "method.finetune_epochs=2"], 12, "round 2 fine-tune"),  # per round
    ("ice", ["model=timm", "model.arch=vit_tiny_patch16_224", "dataset.image_size=16",
             "dataset.subset=0.15", "method.autotune.enabled=false", "method.finetune_epochs=2",
             "method.use_threshold=false"], 2, "step 2 fine-tune"),  # heads gone, num_heads back
    ("slimming", ["model=resnet20", "method.epochs=2", "method.finetune_epochs=2"], 1,
     "sparsity training"),  # BatchNorm scales mid-penalty
]
# Dense training checkpoints like every other phase (checkpoints/dense.pt; no cache, so every run
# trains it): stopped inside it ("fit"), or after it ("step", the method's first row: the resumed
# run loads the finished dense training from its checkpoint and trains nothing again)
DENSE = [("oneshot", ["pretrain.cache=false", "pretrain.epochs=4", "method.finetune_epochs=1"], 1,
          "dense training")]
# A method registered later and not listed above is still tested: its quick overrides, struck
# after its first steps.csv row (oneshot stands in while every method is listed, so this path
# stays tested).
UNLISTED = [(name, list(METHODS[name].quick), 1, "")
            for name in sorted(set(METHODS) - {m for m, *_ in EVERY_METHOD}) or ["oneshot"]]
REFERENCES: dict = {}


def run_args(method: str, overrides) -> list:
    """The method's overrides on the small LeNet run (a key it sets replaces LENET's)."""
    own = {o.partition("=")[0] for o in overrides}
    return [f"method={method}", *overrides, *(o for o in LENET if o.partition("=")[0] not in own)]


@pytest.mark.parametrize("how", ["sigterm", "kill"])
@pytest.mark.parametrize("where", ["step", "fit"])
@pytest.mark.parametrize("method, overrides, row, fit", [
    pytest.param(*case, id=f"{case[0]}-{i}", marks=pytest.mark.xdist_group(f"resume-{i}"))
    for i, case in enumerate(EVERY_METHOD)])  # (a group: one worker, one reference run)
def test_an_interrupted_run_resumes_to_the_same_rows(tmp_path, tmp_path_factory, monkeypatch,
                                                     method, overrides, row, fit, where, how):
    """Every method, stopped by SIGTERM or killed, at a step boundary or inside a fine-tune,
    resumes to the uninterrupted run's steps.csv in every column but times, and its numbers."""
    resumes_to_the_same_rows(tmp_path, tmp_path_factory, monkeypatch, method, overrides, row,
                             fit, where, how)


@pytest.mark.parametrize("how", ["sigterm", "kill"])
@pytest.mark.parametrize("method, overrides, row, fit", [
    pytest.param(*case, marks=pytest.mark.xdist_group("resume-unlisted")) for case in UNLISTED])
def test_an_unlisted_method_resumes_to_the_same_rows(tmp_path, tmp_path_factory, monkeypatch,
                                                     method, overrides, row, fit, how):
    resumes_to_the_same_rows(tmp_path, tmp_path_factory, monkeypatch, method, overrides, row,
                             fit, "step", how)


@pytest.mark.parametrize("how", ["sigterm", "sigint", "kill"])
@pytest.mark.parametrize("where", ["step", "fit"])
@pytest.mark.parametrize("method, overrides, row, fit", [
    pytest.param(*case, marks=pytest.mark.xdist_group("resume-dense")) for case in DENSE])
def test_interrupted_dense_training_resumes_to_the_same_model(tmp_path, tmp_path_factory,
                                                              monkeypatch, method, overrides,
                                                              row, fit, where, how):
    resumed = resumes_to_the_same_rows(tmp_path, tmp_path_factory, monkeypatch, method,
                                       overrides, row, fit, where, how)
    assert resumed["dense_source"].startswith("trained, resumed from")
    assert "dense.pt" in resumed["dense_source"]


def resumes_to_the_same_rows(tmp_path, tmp_path_factory, monkeypatch, method, overrides, row,
                             fit, where, how):
    args = run_args(method, overrides)
    key = " ".join(args)
    if key not in REFERENCES:  # one uninterrupted run per configuration
        ref_dir = tmp_path_factory.mktemp("reference")
        REFERENCES[key] = (run(make_cfg(args), ref_dir, show=False), rows(ref_dir), ref_dir)
    reference, reference_rows, ref_dir = REFERENCES[key]
    with monkeypatch.context() as m:
        struck = interrupt(m, where, how, row, fit)
        with pytest.raises((KeyboardInterrupt, Killed)):
            run(make_cfg(args), tmp_path, show=False)
    assert struck["struck"]
    if where == "fit" and how != "kill":  # a signal mid-epoch: checkpointed after that step
        fit_state = newest_checkpoint(tmp_path)["fit"]
        assert fit_state["epochs_done"] == 1 and fit_state["loader"]["batch"] > 0
    stopped = read_summary(tmp_path)
    assert stopped["status"] == ("failed" if how == "kill" else "interrupted")
    if how == "sigint":
        assert "SIGINT" in stopped["error"]
    resumed = run(make_cfg([*args, "resume=true"]), tmp_path, show=False)
    assert resumed["status"] == "ok"
    assert "resumed_from" in resumed or resumed["dense_source"].startswith("trained, resumed")
    for k in SAME:
        assert resumed[k] == reference[k], k
    assert rows(tmp_path) == reference_rows  # every step, value for value
    assert not (tmp_path / "checkpoints").exists()  # finished: nothing left to resume
    ours, theirs = (torch.load(d / "model.pt", weights_only=True)["state_dict"]
                    for d in (tmp_path, ref_dir))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    return resumed


def newest_checkpoint(run_dir: Path) -> dict:
    """The payload of the checkpoint written last (a method's, or the dense training's)."""
    path = max((run_dir / "checkpoints").glob("*.pt"), key=lambda p: p.stat().st_mtime_ns)
    return torch.load(io.BytesIO(path.read_bytes().partition(b"\n")[2]), weights_only=True)


def test_a_resumed_ice_run_replays_its_tuning(tmp_path, monkeypatch):
    """With tuning on, the knobs come from the journal: the resumed run does not tune again (its
    trials weigh measured time, so a second tuning could choose other knobs)."""
    import prunekit.methods.ice_autotune as ice_autotune

    args = ["method=ice", "method.autotune.trials=2", "method.autotune.train_fraction=0.3",
            *LENET]
    undo = stop_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(args), tmp_path, show=False)
    undo()
    chosen = [r for r in csv.DictReader(open(tmp_path / "trials.csv")) if r["chosen"] == "True"]
    calls = []
    monkeypatch.setattr(ice_autotune, "autotune", lambda *a, **k: calls.append(1))
    resumed = run(make_cfg([*args, "resume=true"]), tmp_path, show=False)
    assert resumed["status"] == "ok" and not calls
    assert resumed["ice_knobs"] == {k: pytest.approx(float(chosen[0][k]))
                                    for k in resumed["ice_knobs"]}


def test_resume_without_a_checkpoint_starts_over_and_a_corrupt_one_is_skipped(tmp_path,
                                                                              monkeypatch, caplog):
    args = ["method=iterative", "method.steps=3", *LENET]
    fresh = run(make_cfg([*args, "resume=true"]), tmp_path / "fresh", show=False)
    assert fresh["status"] == "ok" and "resumed_from" not in fresh
    undo = stop_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(args), tmp_path / "run", show=False)
    undo()
    newest = sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"))[-1]
    raw = newest.read_bytes()
    newest.write_bytes(raw[:-10] + b"0123456789")  # bit rot: the hash no longer fits
    resumed = run(make_cfg([*args, "resume=true"]), tmp_path / "run", show=False)
    assert "content hash does not match" in caplog.text and newest.name in caplog.text
    assert resumed["top1"] == fresh["top1"] and resumed["sparsity"] == fresh["sparsity"]


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path, monkeypatch, caplog):
    args = ["method=iterative", "method.steps=3", *LENET]
    undo = stop_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(args), tmp_path / "run", show=False)
    undo()
    refused = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"))
    other = run(make_cfg([*args, "sparsity=0.6", "resume=true"]), tmp_path / "run", show=False)
    assert "belongs to another configuration" in caplog.text and "kept as" in caplog.text
    assert "resumed_from" not in other and other["sparsity"] == pytest.approx(0.6, abs=1e-3)
    # never deleted: not by this run's rotation (they sort after its own), nor when it ends
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "refused").iterdir()) == \
        refused


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    """The issue's acceptance check, through the CLI: SIGKILL leaves no chance to clean up."""
    exe = Path(sys.executable).parent / "prune-run"
    common = ["method=iterative", "model=lenet5", "dataset=digits", "sparsity=0.8",
              "train.progress=false", "hardware.latency.enabled=false",
              "checkpoint.min_interval_s=0"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    ref = subprocess.run([str(exe), f"hydra.run.dir={tmp_path / 'ref'}", *common], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([str(exe), f"hydra.run.dir={run_dir}", *common], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240

    def two_steps_checkpointed() -> bool:  # the checkpoint after the second step's row is on disk
        # (the row comes first: a kill between the two would leave the first step's checkpoint)
        return any(int(p.name.split("-")[1]) >= 12
                   for p in (run_dir / "checkpoints").glob("ckpt-*.pt"))

    while not two_steps_checkpointed():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    r = subprocess.run([str(exe), f"hydra.run.dir={run_dir}", *common, "resume=true"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = read_summary(tmp_path / "ref"), read_summary(run_dir)
    assert b["resumed_from"] >= 12  # two steps of six operations each
    assert (b["top1"], b["sparsity"]) == (a["top1"], a["sparsity"])
    assert rows(run_dir) == rows(tmp_path / "ref")
    # a multirun-style rerun with resume=true skips a run that finished
    again = subprocess.run([str(exe), f"hydra.run.dir={run_dir}", *common, "resume=true"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "skipped" in again.stdout


def test_ctrl_c_with_no_checkpoint_due_stops_at_once(tmp_path, monkeypatch):
    """Ctrl-C waits for a checkpoint only when one is due: here the interval has not passed, so
    it stops inside the epoch, at once, and writes none."""
    args = [*run_args("oneshot", ["pretrain.cache=false"]), "checkpoint.min_interval_s=3600"]
    struck = interrupt(monkeypatch, "fit", "sigint", 0, "dense training")
    with pytest.raises(KeyboardInterrupt) as e:
        run(make_cfg(args), tmp_path, show=False)
    assert struck["struck"] and type(e.value) is KeyboardInterrupt  # not Terminated
    assert read_summary(tmp_path)["status"] == "interrupted"
    assert not (tmp_path / "checkpoints" / "dense.pt").exists()


def test_a_piece_of_context_state_is_checkpointed_and_forked_by_its_declaration_alone():
    """Context's state is declared once (methods.context.piece): a new field says what a fork
    gets and how a checkpoint keeps it, and capture / restore / fork follow with no other edit."""
    from typing import Any, Dict, List

    from prunekit.clock import PhaseClock
    from prunekit.data import build_data
    from prunekit.hardware import setup_hardware
    from prunekit.methods.context import Context, build_pruner, piece
    from prunekit.models import build_model
    from prunekit.resume import capture, restore

    @dataclasses.dataclass
    class Extended(Context):
        visits: List[int] = piece(default_factory=list, saved="value",
                                  fork=lambda parent, fork, how: [])  # a fork starts its own
        notes: Dict[str, Any] = piece(default_factory=dict)  # shared with forks, not kept

    cfg = make_cfg(["model=lenet5", "hardware=cpu", "method=oneshot"])
    hw = setup_hardware(cfg.hardware, False)
    data = build_data(cfg.dataset, cfg.train, channels=1, device=hw.device, seed=0,
                      channels_last=False)
    model = build_model(cfg.model, data.num_classes, data.image_size)
    example = data.example_input(1)
    plan = plan_of(cfg)
    ctx = Extended(plan=plan, model=model, dense_model=model, data=data,
                   trainer=Trainer(data, cfg.train, hw, progress=False),
                   pruner=build_pruner(plan, model, example), recorder=Recorder(None),
                   clock=PhaseClock(), hw=hw, target=0.5, dense_val_top1=90.0,
                   check_input=data.example_input(8),
                   rebuild_pruner=lambda m: build_pruner(plan, m, example))
    ctx.visits.append(3)
    ctx.notes["seen"] = True
    state = capture(ctx)
    assert state["visits"] == [3] and "notes" not in state
    ctx.visits = []
    restore(ctx, state)
    assert ctx.visits == [3]
    fork = ctx.fork()
    assert fork.visits == [] and ctx.visits == [3]  # its own, as declared
    assert fork.notes is ctx.notes  # shared, as declared
    assert fork.model is not ctx.model and fork.pruner.model is fork.model
    assert fork.tally is not ctx.tally and fork.plan is ctx.plan


# ------------------------------------------------------------------------- a run's identity
QUICK_CLI = ["method=oneshot", "model=lenet5", "dataset.subset=0.3", "pretrain.epochs=1",
             "method.finetune_epochs=1", "hardware.latency.enabled=false",
             "train.progress=false"]


def test_resume_on_another_configurations_finished_run_exits_1_naming_the_keys(tmp_path):
    """resume=true where a finished run of another configuration is: one line naming the keys
    that differ, exit 1, nothing run or overwritten (not even Hydra's .hydra/ files); the same
    configuration with only its environment changed (another cache path) is skipped."""
    run_dir = tmp_path / "run"
    first = run_cli([f"hydra.run.dir={run_dir}", *QUICK_CLI], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()
              and p.suffix != ".log"}
    other = run_cli([f"hydra.run.dir={run_dir}", *QUICK_CLI, "sparsity=0.9", "seed=7",
                     "resume=true"], tmp_path)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    line = other.stderr.strip().splitlines()[-1]
    assert "another configuration" in line and "seed: 0 → 7" in line
    assert "sparsity: 0.5 → 0.9" in line
    assert {p: p.read_bytes() for p in before} == before  # summary, config, .hydra: untouched
    same = run_cli([f"hydra.run.dir={run_dir}", *QUICK_CLI, "resume=true"], tmp_path,
                   env={"PRUNEKIT_CACHE": str(tmp_path / "elsewhere"),
                        "PRUNEKIT_DATA": str(tmp_path / "data-elsewhere")})
    assert same.returncode == 0 and "skipped" in same.stdout, same.stderr[-2000:]
    assert not (tmp_path / "elsewhere").exists()  # skipped: no dense model looked for


def test_a_resumed_sweep_whose_list_changed_is_refused_before_its_first_job(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", f"hydra.sweep.dir={sweep}", *QUICK_CLI]
    first = run_cli([*args, "sparsity=0.5,0.6"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    summaries = {p: p.read_bytes() for p in sweep.glob("*/summary.json")}
    changed = run_cli([*args, "sparsity=0.6,0.7", "resume=true"], tmp_path)
    assert changed.returncode == 1 and "Traceback" not in changed.stderr
    line = changed.stderr.strip().splitlines()[-1]
    assert "sparsity: 0.5 → 0.6" in line and "no job of this batch was started" in line
    assert {p: p.read_bytes() for p in summaries} == summaries and not (sweep / "2").exists()


def test_a_checkpoint_is_accepted_when_only_the_environment_changed(tmp_path, monkeypatch):
    """A job preempted on one node and resumed on another: another cache path, data root,
    progress display, checkpoint rhythm and latency protocol resume all the same."""
    args = ["method=iterative", "method.steps=3", *LENET]
    undo = stop_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(args), tmp_path, show=False)
    undo()
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "other-node-cache"))
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path / "other-node-data"))
    resumed = run(make_cfg([*args, "resume=true", "train.progress=true", "checkpoint.keep=1",
                            "hardware.latency.repeats=3", "checkpoint.min_interval_s=5"]),
                  tmp_path, show=False)
    assert resumed["status"] == "ok" and resumed["resumed_from"] > 0


def test_a_fresh_run_does_not_wipe_an_interrupted_runs_checkpoints(tmp_path, monkeypatch):
    args = ["method=iterative", "method.steps=3", *LENET]
    undo = stop_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(args), tmp_path, show=False)
    undo()
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.pt"))
    summary = (tmp_path / "summary.json").read_bytes()
    with pytest.raises(ConfigError, match=r"holds an interrupted run's checkpoints \(of another "
                       r"configuration: sparsity: 0.5 → 0.6\): resume=true continues it; "
                       r"checkpoint.restart=true starts over"):
        run(make_cfg([*args, "sparsity=0.6"]), tmp_path, show=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.pt")) == kept
    assert (tmp_path / "summary.json").read_bytes() == summary
    fresh = run(make_cfg([*args, "checkpoint.restart=true"]), tmp_path, show=False)
    assert fresh["status"] == "ok" and "resumed_from" not in fresh
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "refused").iterdir()) == kept


def test_the_journal_keeps_dataclasses_and_builds_only_the_declared_ones_back():
    """ctx.op converts what an operation returns: a declared dataclass (nested ones included)
    comes back from a replay as the same object; an undeclared one cannot be journaled, and a
    name that no operation returns is refused, not looked up."""
    from prunekit.journaled import from_journal, to_journal
    from prunekit.methods.autocompress_search import Action, SearchSpace, SearchUnit
    from prunekit.methods.steps import FinetunePlan

    space = SearchSpace((SearchUnit("conv1", ("conv1", "conv2"), 10, ("filter",), 0.25),), 3.0)
    result = (Action((0.5,), ("filter",)), {"plan": FinetunePlan(2, 0.01, {"x": 1})}, [space])
    buf = io.BytesIO()
    torch.save(to_journal(result), buf)  # as a checkpoint holds it, read back weights-only
    back = from_journal(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert back == result and type(back[2][0].units) is tuple

    @dataclasses.dataclass
    class Undeclared:
        x: int = 0

    with pytest.raises(TypeError, match="declare it @journaled"):
        to_journal([Undeclared()])
    with pytest.raises(ValueError, match="no operation returns"):
        from_journal({"__journaled__": "os.system", "command": "true"})
