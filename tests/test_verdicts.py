"""scripts/verdicts.py: the verdict rules on constructed figures, and the whole script on digits."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("verdicts", ROOT / "scripts" / "verdicts.py")
verdicts = importlib.util.module_from_spec(spec)
sys.modules["verdicts"] = verdicts  # dataclasses look their module up
spec.loader.exec_module(verdicts)

HOLDS, PART, NOT = verdicts.HOLDS, verdicts.PART, verdicts.NOT


def ice_pair(base_s, ice_s, base_top1, ice_top1, reference_s=0.0):
    base = {"time_total_s": base_s, "top1": base_top1, "finetune_count": 15, "steps": 15}
    ice = {"time_total_s": ice_s + reference_s, "time_reference_trial_s": reference_s,
           "top1": ice_top1, "finetune_count": 4, "steps": 15, "time_search_s": 50.0,
           "time_probe_s": 5.0, "time_finetune_s": 200.0}
    return base, ice


@pytest.mark.parametrize("base_s,ice_s,gap,verdict", [
    (1000, 400, -0.5, HOLDS),   # 2.5x, within a point
    (1000, 500, -1.0, HOLDS),   # exactly 2x and exactly 1 point: both bounds inclusive
    (1000, 700, -0.2, PART),    # faster, but not 2x
    (1000, 400, -3.0, PART),    # 2.5x but 3 points worse
    (1000, 1200, -0.1, NOT),    # slower
    (1000, 900, -2.0, NOT),     # a little faster and worse
])
def test_ice_verdict(base_s, ice_s, gap, verdict):
    got, why, figures = verdicts.verdict_ice(*ice_pair(base_s, ice_s, 90.0, 90.0 + gap))
    assert got == verdict
    assert figures["time_ratio"] == pytest.approx(base_s / ice_s)
    assert "4 of 15" in why and "15 of 15" in why


def test_ice_time_leaves_out_the_reference_trial():
    base, ice = ice_pair(1000, 450, 90.0, 90.0, reference_s=200.0)
    assert verdicts.ice_time(ice) == pytest.approx(450)
    assert verdicts.verdict_ice(base, ice)[0] == HOLDS  # 1000 / 650 would not be 2x


def slr_pair(slr_hard, slr_retrained, admm_hard):
    return ({"top1_hard": admm_hard, "top1_retrain1": 88.0},
            {"top1_hard": slr_hard, "top1_retrain1": slr_retrained})


@pytest.mark.parametrize("slr_hard,slr_retrained,admm_hard,verdict", [
    (88.0, 89.0, 60.0, HOLDS),   # accurate without retraining, far above ADMM's hard prune
    (80.0, 89.0, 60.0, PART),    # above ADMM but 9 points short of its retrained accuracy
    (88.0, 89.0, 88.5, PART),    # accurate, but ADMM's hard prune is as good
    (50.0, 89.0, 60.0, NOT),
])
def test_slr_verdict(slr_hard, slr_retrained, admm_hard, verdict):
    assert verdicts.verdict_slr(*slr_pair(slr_hard, slr_retrained, admm_hard))[0] == verdict


def run_of(label, top1, compression, dense=92.0):
    return {"label": label, "top1": top1, "top1_dense": dense, "compression_ratio": compression,
            "theoretical_speedup": 3.0}


@pytest.mark.parametrize("ac_top1,compression,base_top1,verdict", [
    (91.5, 12.0, 90.0, HOLDS),
    (91.5, 8.0, 90.0, NOT),      # not 10x: the claim's setting was not reached
    (89.0, 12.0, 88.0, PART),    # beats the baselines but loses 3 points
    (91.5, 12.0, 91.8, PART),    # lossless but a baseline is better
    (85.0, 12.0, 90.0, NOT),
])
def test_autocompress_verdict(ac_top1, compression, base_top1, verdict):
    runs = [run_of("iterative", base_top1, 12.0), run_of("admm", base_top1 - 1, 12.0),
            run_of("autocompress", ac_top1, compression)]
    assert verdicts.verdict_autocompress(runs)[0] == verdict


@pytest.mark.parametrize("agp,oneshot,verdict", [
    (91.0, 90.0, HOLDS), (90.0, 90.4, HOLDS),  # within the 0.5-point seed tolerance
    (89.0, 91.0, NOT), (91.0, 92.0, PART), (88.0, 85.0, PART)])
def test_gradual_verdict(agp, oneshot, verdict):
    runs = [run_of("one-shot", oneshot, 10.0), run_of("iterative", oneshot - 1, 10.0),
            run_of("agp", agp, 10.0)]
    assert verdicts.verdict_gradual(runs)[0] == verdict


def test_readme_block_is_replaced_between_the_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\nbefore\n{verdicts.README_BEGIN}\nold\n{verdicts.README_END}\nafter\n")
    assert verdicts.update_readme(readme, "| new |\n")
    assert readme.read_text() == (f"# t\nbefore\n{verdicts.README_BEGIN}\n| new |\n"
                                  f"{verdicts.README_END}\nafter\n")
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not verdicts.update_readme(plain, "x") and plain.read_text() == "no markers\n"


def test_the_script_runs_every_comparison_and_renders_again(tmp_path):
    """The smoke tier on digits: every comparison runs, the document has its four verdicts and
    the ICE trials, the README block is written, and --render rebuilds the same document."""
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{verdicts.README_BEGIN}\n{verdicts.README_END}\n")
    doc, out = tmp_path / "results.md", tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "verdicts.py"), "--tier", "smoke",
           "--out", str(out), "--doc", str(doc), "--readme", str(readme)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    text = doc.read_text()
    assert text.count("**Verdict: ") == 4
    for title in ("ICE-Pruning vs", "SLR vs ADMM", "AutoCompress vs", "Gradual (AGP) vs"):
        assert title in text
    assert "reference (the paper's defaults)" in text and "| yes |" in text  # trials table
    assert "has **not been run**" in text  # no GPU figure claimed
    results = json.loads((out / "results.json").read_text())
    assert {"dense_lenet5", "ice_0", "ice_1", "slr_1", "autocompress_2", "gradual_2"} <= set(
        results["runs"])
    ice = results["runs"]["ice_1"]
    assert ice["time_reference_trial_s"] > 0 and ice["probe_images"] == ice["autotune_train_images"]
    assert "| SLR |" in readme.read_text() and "docs/results.md" in readme.read_text()
    doc.unlink()
    r = subprocess.run([*cmd, "--render"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert doc.read_text() == text
    # one comparison rerun on a machine without that results.json: spliced into the document
    rerun = [*cmd[:4], "--out", str(tmp_path / "elsewhere"), *cmd[6:], "--only", "slr"]
    r = subprocess.run(rerun, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    partial = json.loads((tmp_path / "elsewhere" / "results.json").read_text())
    assert set(partial["runs"]) == {"dense_lenet5", "slr_0", "slr_1"}  # nothing else ran
    spliced = doc.read_text()
    assert spliced.count("**Verdict: ") == 4 and "Not run in this session" not in spliced
    assert "- Rerun of slr at " in spliced and "| rerun: lenet5 |" in spliced
    for title in ("ICE-Pruning vs", "AutoCompress vs", "Gradual (AGP) vs"):
        section = lambda t: next(b for h, b in verdicts.blocks(t) if title in h)  # noqa: E731
        assert section(spliced) == section(text)
    assert readme.read_text().count("| **") == 4  # every verdict row kept


def test_splice_replaces_the_rerun_sections_and_keeps_the_rest():
    old = "# d\n\n- Run: then\n\n## 1. A (m)\n\nold a\n\n## 2. B (m)\n\nold b\n"
    new = "# d\n\n- Run: now\n\n## 1. A (m)\n\nNot run in this session.\n\n## 2. B (m)\n\nnew b\n"
    got = verdicts.splice(old, new, {"partial": ["b"], "started": "s", "command": "c",
                                     "machine": "m"})
    assert "old a" in got and "new b" in got and "old b" not in got and "Run: then" in got
    assert got.index("- Rerun of b at s") > got.index("- Run: then")
    block = "| A | claim | 1 | **holds** |\n| B | claim | 2 | **holds** |\n"
    fresh = "| A | claim | not run | — |\n| B | claim | 3 | **fails** |\n"
    assert verdicts.splice_readme(block, fresh) == (
        "| A | claim | 1 | **holds** |\n| B | claim | 3 | **fails** |\n")


def test_the_phase_clock_leaves_out_excluded_time():
    """Reporting-only work (ICE's reference trial) is no phase's time and no pruning time."""
    import time

    from prunekit.clock import PhaseClock
    clock = PhaseClock()
    with clock.phase("search"):
        time.sleep(0.05)  # counted
        with clock.phase("eval"):
            time.sleep(0.3)
            clock.exclude(0.3)  # left out of eval, the phase running now
        time.sleep(0.3)
        clock.exclude(0.3)  # left out of search
    assert clock.totals["eval"] < 0.05
    assert 0.05 <= clock.totals["search"] < 0.15
