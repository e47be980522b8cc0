"""scripts/bench_gpu.py's --smoke: the GPU benchmark's code, run on CPU in seconds, writes the
GPU section of a benchmarks page between its markers and leaves the rest of the page alone."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"


def test_the_gpu_benchmark_smoke_runs_and_writes_its_section(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n\n## On the GPU\n\n<!-- bench_gpu -->\nold\n"
                   "<!-- /bench_gpu -->\n\n## After\n\nkept\n")
    out = tmp_path / "bench_gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", str(out), "--doc",
                           str(doc)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["smoke"] and r["latency"].keys() == {"eager"}  # graphed needs CUDA
    x1, x8 = r["models"]["pruned_x1"], r["models"]["pruned_x8"]
    # the standard pipeline's ratio 0.7 of 16 / 32 / 64 channels keeps 4 / 9 / 19 filters, or
    # with a channel multiple of 8 the multiples nearest: 8 / 8 / 16
    assert x1["kept"] == [4, 9, 19] and x8["kept"] == [8, 16]
    assert x1["flops_x"] > x8["flops_x"] > 1.0
    assert max(m["compaction_max_abs_diff"] for m in r["models"].values()) < 1e-3
    assert r["train"]["eager"]["loop_vs_plain"] > 0 and len(r["layers"]) >= 5
    text = doc.read_text()
    assert "old" not in text and text.count("<!-- bench_gpu -->") == 1
    assert text.startswith("# Benchmarks\n\nintro") and text.endswith("## After\n\nkept\n")
    assert "| pruned_x8 | 0.700 |" in text and "not a GPU figure" in text
    # the section is made again from the JSON alone, without measuring
    again = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(out)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "| pruned_x8 | 0.700 |" in again.stdout
