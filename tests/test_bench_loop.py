"""scripts/bench_loop.py runs and writes every ratio it promises (tiny settings: not a timing)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_loop_writes_its_ratios(tmp_path):
    out = tmp_path / "loop.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_loop.py"), "--quick",
                        "--model", "lenet5", "--steps", "3", "--rounds", "1", "--data-size", "256",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(out.read_text())
    for key in ("loop_vs_plain", "masked_step_overhead", "data_speedup", "structured_step_speedup"):
        assert got[key] > 0, key
    assert got["data_speedup"] > 1  # batched tensor ops beat per-sample PIL work
