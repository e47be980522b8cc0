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
                        "--modes", "--modes-model", "resnet20", "--modes-size", "8",
                        "--modes-batch", "8", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(out.read_text())
    for key in ("loop_vs_plain", "masked_step_overhead", "data_speedup", "structured_step_speedup"):
        assert got[key] > 0, key
    assert got["data_speedup"] > 1  # batched tensor ops beat per-sample PIL work
    for mode in ("fp32", "fp32_cl", "bf16", "bf16_cl"):  # the CPU precision modes
        assert got[f"mode_{mode}_images_s"] > 0 and got[f"mode_{mode}_loop_vs_plain"] > 0
    assert got["mode_fp32_x_fp32"] == 1.0
    assert got["default_mode"] == ("bf16_cl" if got["bf16_matrix_units"] else "fp32")


def test_bench_speedup_times_every_multiple_in_torch_and_onnx_runtime(tmp_path):
    out = tmp_path / "speedup.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_speedup.py"),
                        "--models", "resnet20", "--image-size", "8", "--sparsity", "0.7",
                        "--multiples", "1", "8", "--runtimes", "torch", "onnxruntime",
                        "--batch-sizes", "1", "--warmup", "1", "--repeats", "2",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["multiple"] for row in rows] == [1, 8]
    for row in rows:
        assert row["torch_x_bs1"] > 0 and row["onnxruntime_x_bs1"] > 0
        assert row["compaction_max_abs_diff"] < 1e-3
    assert rows[0]["flops_x"] > rows[1]["flops_x"]  # 8 of 16 kept, not 5
    assert "| onnxruntime × (batch 1) |" in r.stdout
