"""scripts/verdicts.py: the verdict rules on constructed figures, and the whole script on digits."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # the claims package, as verdicts.py imports it
from claims import CLAIMS, document, running, tiers  # noqa: E402
from claims import autocompress as ac_claim  # noqa: E402
from claims import base as common  # noqa: E402
from claims import gradual as agp_claim  # noqa: E402
from claims import ice as ice_claim  # noqa: E402
from claims import slr as slr_claim  # noqa: E402

HOLDS, PART, NOT = common.HOLDS, common.PART, common.NOT


def regime(key, runs):
    """A comparison's settings against its paper's, as its claim reads them."""
    return CLAIMS[common.kind_of(key)].settings(runs)


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
    (1000, 960, 0.0, NOT),      # 1.04x: within the ~10 % noise of wall times, not faster
    (1000, 900, -2.0, NOT),     # a little faster and worse
])
def test_ice_verdict(base_s, ice_s, gap, verdict):
    got, why, figures = ice_claim.verdict_ice(*ice_pair(base_s, ice_s, 90.0, 90.0 + gap))
    assert got == verdict
    assert figures["time_ratio"] == pytest.approx(base_s / ice_s)
    assert "4 of 15" in why and "15 of 15" in why


def test_ice_time_leaves_out_the_reference_trial():
    base, ice = ice_pair(1000, 450, 90.0, 90.0, reference_s=200.0)
    assert ice_claim.ice_time(ice) == pytest.approx(450)
    assert ice_claim.verdict_ice(base, ice)[0] == HOLDS  # 1000 / 650 would not be 2x


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
    assert slr_claim.verdict_slr(*slr_pair(slr_hard, slr_retrained, admm_hard))[0] == verdict


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
    assert ac_claim.verdict_autocompress(runs)[0] == verdict


@pytest.mark.parametrize("agp,oneshot,verdict", [
    (91.0, 90.0, HOLDS), (90.0, 90.4, HOLDS),  # within the 0.5-point seed tolerance
    (89.0, 91.0, NOT), (91.0, 92.0, PART), (88.0, 85.0, PART)])
def test_gradual_verdict(agp, oneshot, verdict):
    runs = [run_of("one-shot", oneshot, 10.0), run_of("iterative", oneshot - 1, 10.0),
            run_of("agp", agp, 10.0)]
    assert agp_claim.verdict_gradual(runs)[0] == verdict


def test_readme_block_is_replaced_between_the_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\nbefore\n{document.README_BEGIN}\nold\n{document.README_END}\nafter\n")
    assert document.update_readme(readme, "| new |\n")
    assert readme.read_text() == (f"# t\nbefore\n{document.README_BEGIN}\n| new |\n"
                                  f"{document.README_END}\nafter\n")
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not document.update_readme(plain, "x") and plain.read_text() == "no markers\n"


def test_the_script_runs_every_comparison_and_renders_again(tmp_path):
    """The smoke tier on digits: every comparison runs, the document has its four verdicts and
    the ICE trials, the README block is written, and --render rebuilds the same document."""
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{document.README_BEGIN}\n{document.README_END}\n")
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
    assert "None of its figures is here" in text  # no GPU figure claimed
    assert text.count("| setting | here | the paper | matches |") == 4
    for label in ice_claim.ICE_LABELS[:3]:
        assert f"| {label} |" in text
    results = json.loads((out / "results.json").read_text())
    assert {"dense_lenet5", "ice_0", "ice_1", "ice_2", "slr_1", "autocompress_2",
            "gradual_2"} <= set(results["runs"])
    # the reference's objective: its choice recorded, its run made only where it differs
    choice = results["reference_objective"]["ice"]
    assert ("ice_3" in results["runs"]) == (choice["ours"] != choice["reference"])
    ice = results["runs"]["ice_2"]
    assert ice["tables"]["trials"] and len(ice["tables"]["steps"]) == ice["steps"]
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
        section = lambda t: next(b for h, b in document.blocks(t) if title in h)  # noqa: E731
        assert section(spliced) == section(text)
    assert readme.read_text().count("| **") == 4  # every verdict row kept


def test_splice_replaces_the_rerun_sections_and_keeps_the_rest():
    old = "# d\n\n- Run: then\n\n## 1. A (m)\n\nold a\n\n## 2. B (m)\n\nold b\n"
    new = "# d\n\n- Run: now\n\n## 1. A (m)\n\nNot run in this session.\n\n## 2. B (m)\n\nnew b\n"
    got = document.splice(old, new, {"partial": ["b"], "started": "s", "command": "c",
                                     "machine": "m"})
    assert "old a" in got and "new b" in got and "old b" not in got and "Run: then" in got
    assert got.index("- Rerun of b at s") > got.index("- Run: then")
    block = "| A | claim | 1 | **holds** |\n| B | claim | 2 | **holds** |\n"
    fresh = "| A | claim | not run | — |\n| B | claim | 3 | **fails** |\n"
    assert document.splice_readme(block, fresh) == (
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


def test_a_claim_outside_its_regime_is_not_tested_rather_than_refuted():
    settings = [common.Setting("blocks", "15", "27 / 54 / 75", False),
                common.Setting("data", "fashion_mnist", "CIFAR-10", False, decisive=False)]
    verdict, why = common.in_regime(NOT, "slower", settings)
    assert verdict == common.NOT_TESTED and "missing: blocks: 15 here, 27 / 54 / 75" in why
    assert "data" not in why.split("missing:")[1]
    holds = common.in_regime(HOLDS, "fast", settings)  # said, with the regime it lacked
    assert holds == (HOLDS, "fast (outside its paper's regime: blocks: 15 here, 27 / 54 / 75 "
                            "in the paper)")
    assert common.in_regime(NOT, "slower", settings[1:]) == (NOT, "slower")
    # the ICE regime is read from the runs: depth and the baseline's distillation decide
    base = {"hparams": {"distill": True}, "dataset": "fashion_mnist"}
    deep = {"steps": 27, "model": "resnet56", "autotune_trials": 6}
    got = {s.what: s.matches for s in regime("ice56", [base, {}, deep])}
    assert got["residual blocks pruned"] and got["the baseline distils (KL at T = 2)"]
    shallow = {s.what: s.matches for s in regime("ice", [
        {"hparams": {"distill": False}}, {}, {**deep, "steps": 15}])}
    assert not shallow["residual blocks pruned"]
    assert not shallow["the baseline distils (KL at T = 2)"]
    # AGP: in its regime when the schedule ends early enough to train on at the final sparsity
    agp = {s.what: s.matches for s in regime("gradual", [{}, {}, {
        "hparams": {"end_fraction": 0.5, "epochs": 6}}])}
    assert all(agp[k] for k in ("the schedule ends", "training at the final sparsity"))
    late = {s.what: s.matches for s in regime("gradual", [{}, {}, {
        "hparams": {"end_fraction": 0.75, "epochs": 2}}])}
    assert not late["training at the final sparsity"]


def test_the_depth_table_and_plot_come_from_every_ice_depth(tmp_path):
    tier = tiers.gpu_tier()

    def side(label, seconds, top1, steps, finetunes):
        return {"label": label, "time_total_s": seconds, "top1": top1, "steps": steps,
                "finetune_count": finetunes}

    runs = {}
    for key, blocks, ice_s in (("ice56", 27, 200.0), ("ice110", 54, 300.0)):
        runs[f"{key}_0"] = side("base", 600.0, 92.0, blocks, blocks)
        runs[f"{key}_1"] = side("plain", 540.0, 91.5, blocks, blocks)
        runs[f"{key}_2"] = side("ice", ice_s, 91.8, blocks, blocks // 3)
    points = ice_claim.ice_depths({"runs": runs}, tier)
    assert [p["blocks"] for p in points] == [27, 54]
    assert points[0]["speedup"] == pytest.approx(3.0) and points[1]["finetuned"] == 18 / 54
    lines = "\n".join(ice_claim.depth_lines({"runs": runs}, tier))
    assert "| resnet56 | 27 | 3.00x | 2.70x | -0.20 | 33% |" in lines
    assert "img/ice_depth_full.png" in lines
    png = tmp_path / "img" / "ice_depth_full.png"
    assert ice_claim.depth_plot({"runs": runs}, tier, png)
    assert png.read_bytes()[:4] == b"\x89PNG"
    one = {k: v for k, v in runs.items() if k.startswith("ice56")}
    assert not ice_claim.depth_plot({"runs": one}, tier, tmp_path / "no.png")


def test_a_job_runs_its_part_and_merges_into_the_results(tmp_path):
    """Jobs of a tier (the GPU tier's fit one device call each; the smoke tier's are their
    stand-ins): each merges into one results.json, reuses the dense model an earlier job
    recorded, and records its wall time; the GPU jobs cover every comparison."""
    out, doc = tmp_path / "out", tmp_path / "results.md"
    cmd = [sys.executable, str(ROOT / "scripts" / "verdicts.py"), "--tier", "smoke", "--out",
           str(out), "--doc", str(doc), "--readme", ""]
    r = subprocess.run([*cmd, "--job", "dense"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    first = json.loads((out / "results.json").read_text())
    assert set(first["runs"]) == {"dense_lenet5"} and first["jobs"]["dense"]["wall_s"] > 0
    r = subprocess.run([*cmd, "--job", "slr-admm"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    merged = json.loads((out / "results.json").read_text())
    assert set(merged["runs"]) == {"dense_lenet5", "slr_0"}
    assert merged["runs"]["dense_lenet5"] == first["runs"]["dense_lenet5"]  # not run again
    assert set(merged["jobs"]) == {"dense", "slr-admm"}
    r = subprocess.run([*cmd, "--job", "nosuch"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--job nosuch" in r.stderr
    gpu = tiers.gpu_tier()
    _, covered = running.selected(gpu, [e for entries in gpu.jobs.values() for e in entries])
    assert {(c.key, i) for c, i in covered} >= {(c.key, i) for c in gpu.comparisons
                                                  for i in range(len(c.runs))}


def test_one_claim_one_module_and_no_verdict_file_over_400_lines():
    """scripts/verdicts.py is the entry point; each claim is a module of scripts/claims/ named
    by its kind, and no file of the verdicts is over 400 lines."""
    folder = ROOT / "scripts" / "claims"
    assert set(CLAIMS) == {"ice", "slr", "autocompress", "gradual"}
    for kind, claim in CLAIMS.items():
        module = sys.modules[f"claims.{kind}"]
        assert module.CLAIM is claim and (folder / f"{kind}.py").is_file()
    sizes = {p.name: len(p.read_text().splitlines())
             for p in [ROOT / "scripts" / "verdicts.py", *folder.glob("*.py")]}
    assert max(sizes.values()) <= 400, sizes
