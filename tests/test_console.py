"""What the console shows: the summary table's rows and captions, and tables off a terminal."""
from rich.console import Console

from prunekit.config import METHODS
from prunekit.console import CONSOLE, print_summary, summary_table

SUMMARY = {"method": "slr", "model": "resnet18", "dataset": "digits", "seed": 0,
           "granularity": "filter", "top1_dense": 97.5, "top1": 96.0, "delta_top1": -1.5,
           "top5_dense": 99.9, "top5": 99.8, "sparsity": 0.7, "target_sparsity": 0.7,
           "sparsity_total": 0.69, "params_dense": 11_170_000, "params": 3_400_000,
           "params_nonzero": 3_400_000, "compression_ratio": 3.29, "flops_dense": 69_440_000,
           "flops": 20_000_000, "theoretical_speedup": 3.47, "speedup_kind": "compacted",
           "latency_ms_dense": 8.8, "latency_ms": 4.1, "measured_speedup": 2.15,
           "top1_hard": 93.25, "top1_retrain1": 95.5, "time_total_s": 12.0, "steps": 3,
           "finetune_count": 1, "finetune_epochs": 2, "time_pretrain_s": 0.0}


def text(table) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_flops_are_theoretical_only_for_masked_weights():
    compacted = text(summary_table(SUMMARY))
    masked = text(summary_table({**SUMMARY, "speedup_kind": "theoretical"}))
    assert "3.47× fewer" in compacted and "theoretical" not in compacted
    assert "3.47× (theoretical)" in masked


def test_slr_shows_its_hard_prune_top1():
    rows = METHODS["slr"].headline_rows(SUMMARY)
    assert rows == [("top-1 hard prune %", 93.25, ".2f")]
    shown = [line for line in text(summary_table(SUMMARY, rows)).splitlines() if "hard" in line]
    assert len(shown) == 1 and "93.25" in shown[0] and "-4.25" in shown[0]
    assert METHODS["oneshot"].headline_rows(SUMMARY) == []  # a method without one adds none


def test_off_a_terminal_the_table_is_printed_whole(capsys):
    assert not CONSOLE.is_terminal  # pytest captures the output: a pipe, as under nohup
    wide = {**SUMMARY, "target_kind": "latency", "target_value": 2.0, "target_achieved": 2.02,
            "target_error": 0.01, "latency_solve_measurements": 8}  # a table over 80 columns
    print_summary(wide, METHODS["slr"].headline_rows(wide))
    out = capsys.readouterr().out
    assert "solved in 8 measurements" in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) > 80
    top1 = next(line for line in out.splitlines() if "top-1 (test, %)" in line)
    assert "97.50" in top1 and "96.00" in top1 and "-1.50" in top1


def test_a_pruned_model_slower_than_its_dense_one_is_said_so(capsys):
    """Never a quiet ratio below 1: the row says slower, summary.json's latency_slower holds the
    figures (measurement.slower_batches / slower_line), and the console prints that line under
    the table."""
    from prunekit.measurement import slower_batches, slower_line

    slow = slower_batches({1: {"median_ms": 4.91}, 64: {"median_ms": 4.74}},
                          {1: {"median_ms": 6.31}, 64: {"median_ms": 3.0}},
                          {1: 4.91 / 6.31, 64: 4.74 / 3.0})
    line = slower_line(slow)
    assert line == ("the pruned model is slower than the dense one (batch 1: 6.310 ms vs dense "
                    "4.910 ms (0.78x))")
    assert slower_batches({1: {"median_ms": 2.0}}, {1: {"median_ms": 1.0}}, {1: 2.0}) == []
    assert slower_batches({1: {"median_ms": 2.0}}, {1: {"median_ms": 3.0}}, {1: None}) == []
    assert slower_line([]) is None
    slow = {**SUMMARY, "latency_ms_dense": 4.91, "latency_ms": 6.31, "measured_speedup": 0.78,
            "latency_slower": line, "status": "ok"}
    assert "0.78× (measured): slower" in text(summary_table(slow))
    print_summary(slow)
    assert line in capsys.readouterr().out
