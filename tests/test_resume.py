"""Runs that survive: checkpoints, resume=true ends where an uninterrupted run ends, integrity."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prunekit.resume import Checkpointer
from prunekit.runner import run

from conftest import FAST, make_cfg, read_summary

LENET = ["model=lenet5", "dataset.subset=0.4", "checkpoint.min_interval_s=0", *FAST]
SAME = ("top1", "sparsity", "val_top1", "steps", "finetune_count", "finetune_epochs",
        "params_nonzero", "compaction_max_abs_diff")


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


@pytest.mark.parametrize("method, overrides, stop", [
    ("oneshot", ["method.finetune_epochs=3"], 2),  # inside the fine-tune: its optimiser resumes
    ("iterative", ["method.steps=3"], 4),
    ("gradual", ["method.epochs=3", "method.frequency=2"], 2),  # mid-fit, with AGP updates
    ("admm", ["method.iterations=3", "method.retrain_epochs=1"], 2),  # Z, U mid-ADMM
    ("slr", ["method.epochs=3", "method.retrain_epochs=2"], 2),  # Z, Λ, s, k, W_p mid-SLR
    ("iterative", ["method.granularity=filter", "method.schedule=blockwise"], 3),  # compacted
    ("ice", ["method.autotune.trials=2", "method.autotune.train_fraction=0.3"], 3),
    ("autocompress", ["method.rounds=2", "method.search.evaluations=3", "method.iterations=1",
                      "method.finetune_epochs=1"], 1),
])
def test_an_interrupted_run_resumes_to_the_same_numbers(tmp_path, monkeypatch, method, overrides,
                                                         stop):
    args = [f"method={method}", *overrides, *LENET]
    reference = run(make_cfg(args), tmp_path / "reference", show=False)
    undo = stop_after(monkeypatch, stop)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(args), tmp_path / "run", show=False)
    undo()
    assert read_summary(tmp_path / "run")["status"] == "interrupted"
    assert list((tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"))
    resumed = run(make_cfg([*args, "resume=true"]), tmp_path / "run", show=False)
    assert resumed["status"] == "ok" and "resumed_from" in resumed
    for key in SAME:
        assert resumed[key] == reference[key], key
    resumed_rows, reference_rows = rows(tmp_path / "run"), rows(tmp_path / "reference")
    if method == "ice":  # its auto-tune weighs measured time: two runs may choose other knobs
        assert len(resumed_rows) == len(reference_rows)
    else:
        assert resumed_rows == reference_rows  # every step, value for value
    assert not (tmp_path / "run" / "checkpoints").exists()  # finished: nothing left to resume


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
    other = run(make_cfg([*args, "sparsity=0.6", "resume=true"]), tmp_path / "run", show=False)
    assert "belongs to another configuration" in caplog.text
    assert "resumed_from" not in other and other["sparsity"] == pytest.approx(0.6, abs=1e-3)


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
    while not (run_dir / "steps.csv").exists() or len(
            (run_dir / "steps.csv").read_text().splitlines()) < 3:  # two steps done
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
    # a multirun-style rerun with resume=true skips a run that finished
    again = subprocess.run([str(exe), f"hydra.run.dir={run_dir}", *common, "resume=true"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "skipped" in again.stdout
