"""A run stopped from outside: SIGTERM (cluster preemption) writes a checkpoint at the next step
or epoch and leaves `status: interrupted`."""
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import read_summary


def test_sigterm_mid_run_leaves_status_interrupted(tmp_path):
    exe = Path(sys.executable).parent / "prune-run"
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [str(exe), f"hydra.run.dir={run_dir}", "method=iterative", "model=lenet5",
         "sparsity=0.8", "method.steps=20", "method.finetune_epochs=3", "train.progress=false",
         "hardware.latency.enabled=false"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"})
    deadline = time.time() + 240
    while not (run_dir / "steps.csv").exists():  # a pruning step has finished: mid-run
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "the run never reached its first step"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    s = read_summary(run_dir)
    assert s["status"] == "interrupted" and "SIGTERM" in s["error"]
    assert list((run_dir / "checkpoints").glob("ckpt-*.pt"))  # written on the way out
    assert "Traceback" not in err and "interrupted; partial results in" in err


def test_sigterm_in_dense_training_stops_within_an_epoch_and_says_how_to_resume(tmp_path):
    """A long dense training, off a terminal: a line per epoch in the console and the log; SIGTERM
    stops it at the epoch's end with checkpoints/dense.pt; the printed command resumes it."""
    exe = Path(sys.executable).parent / "prune-run"
    run_dir = tmp_path / "run"
    args = [f"hydra.run.dir={run_dir}", "method=oneshot", "model=lenet5", "pretrain.epochs=20",
            "pretrain.cache=false", "method.finetune_epochs=1", "hardware.latency.enabled=false"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    log = run_dir / "prune-run.log"
    deadline = time.time() + 240
    while "dense training: epoch 2/20" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "dense training never reached its second epoch"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    signalled = time.time()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and time.time() - signalled < 10  # an epoch: a second at most
    assert (run_dir / "checkpoints" / "dense.pt").exists()
    assert read_summary(run_dir)["status"] == "interrupted"
    lines = [line for line in out.splitlines() if line.startswith("dense training: epoch ")]
    assert 2 <= len(lines) < 20
    assert re.fullmatch(r"dense training: epoch 1/20  loss \d+\.\d{4}  val top-1 \d+\.\d\d%  "
                        r"\d+ img/s  ETA (\d+s|\d+m\d\ds|\d+h\d\dm)", lines[0]), lines[0]
    assert lines[0] in log.read_text()  # the log file has them too
    command = err.strip().splitlines()[-1].partition("resume with: ")[2]
    assert command.startswith("prune-run ") and "resume=true" in command
    resumed = subprocess.run([str(exe), *shlex.split(command)[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    s = read_summary(run_dir)
    assert s["status"] == "ok" and s["dense_source"].startswith("trained, resumed from")
    assert "dense training: epoch 1/20 " not in resumed.stdout  # it went on from its epoch
    assert "dense training: epoch 20/20 " in resumed.stdout
    table = [line for line in resumed.stdout.splitlines() if "│" in line]
    top1 = next(line for line in table if "top-1 (test, %)" in line)
    assert re.search(r"│\s+\d+\.\d\d\s+│\s+\d+\.\d\d\s+│\s+[+-]\d+\.\d\d\s+│", top1), top1
    assert not any("…" in line for line in table)  # off a terminal the table is not cut
