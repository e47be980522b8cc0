"""A run stopped from outside: SIGTERM (cluster preemption) writes a checkpoint at the next step
or epoch and leaves `status: interrupted`."""
import os
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
