"""Bad input at scale: random malformed overrides and files thrown at prune-run. Every one must end
with a one-line error and a non-zero exit: no traceback, and no summary that says `ok`."""
import json
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli

TEXT = st.text(alphabet="abcxyz_-+@%&", min_size=1, max_size=8)

# (key, values that are always wrong for it)
BAD_VALUES = st.one_of(
    st.tuples(st.just("sparsity"), st.one_of(
        st.floats(min_value=1.0, max_value=1e6).map(str), st.floats(max_value=-1e-6,
                                                                    min_value=-1e6).map(str),
        TEXT)),
    st.tuples(st.just("method.lr"), st.sampled_from(["0", "-0.1", "abc", "[1,2]"])),
    st.tuples(st.just("train.batch_size"), st.sampled_from(["0", "-3", "1.5x", "{a:1}"])),
    st.tuples(st.just("dataset.val_fraction"), st.sampled_from(["0", "1", "1.5", "-0.2", "x"])),
    st.tuples(st.just("pretrain.epochs"), st.integers(max_value=-1, min_value=-99).map(str)),
    st.tuples(st.just("hardware.latency.repeats"), st.sampled_from(["0", "-1", "many"])),
    st.tuples(st.just("method.granularity"), TEXT),
    st.tuples(st.just("target.kind"), TEXT),
    st.tuples(st.just("target.value"), st.sampled_from(["0.5", "-2", "1", "2", "fast"])),
    st.tuples(st.sampled_from(["method", "model", "dataset", "hardware"]),
              TEXT.map(lambda t: f"no{t}")),
    st.tuples(TEXT.map(lambda t: f"nosuch{t}"), st.just("1")),
    st.tuples(TEXT.map(lambda t: f"method.nosuch{t}"), st.just("1")),
    st.tuples(st.sampled_from(["sparsity", "method.nm", "seed"]),
              st.sampled_from(["[", "[2,", "{a:", "'unclosed", "${nosuch.key}"])),
)
GOOD = st.lists(st.sampled_from(["seed=1", "model=lenet5", "method=oneshot", "hardware=cpu",
                                 "train.progress=false"]), max_size=2, unique=True)
FILE_KIND = st.sampled_from(["random_bytes", "json", "empty", "foreign_state"])


def assert_one_line_failure(r, run_dir):
    assert r.returncode != 0, r.stdout[-1000:]
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("prune-run: error:"), r.stderr[-2000:]
    summary = run_dir / "summary.json"
    if summary.exists():
        assert json.loads(summary.read_text())["status"] != "ok"


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=BAD_VALUES, good=GOOD)
def test_malformed_overrides_fail_in_one_line(tmp_path, bad, good):
    run_dir = tmp_path / uuid.uuid4().hex
    key, value = bad
    r = run_cli([f"hydra.run.dir={run_dir}", *good, f"{key}={value}"], cwd=tmp_path, timeout=120)
    assert_one_line_failure(r, run_dir)


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=FILE_KIND, payload=st.binary(min_size=0, max_size=64))
def test_malformed_checkpoint_files_fail_in_one_line(tmp_path, kind, payload):
    import torch

    path = tmp_path / f"{uuid.uuid4().hex}.pt"
    if kind == "random_bytes":
        path.write_bytes(b"\x00garbage" + payload)
    elif kind == "json":
        path.write_text(json.dumps({"state_dict": payload.hex()}))
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # a real torch file, but of another network
        torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    run_dir = tmp_path / uuid.uuid4().hex
    r = run_cli([f"hydra.run.dir={run_dir}", "model=lenet5", "method=oneshot",
                 "train.progress=false", f"model.checkpoint={path}"], cwd=tmp_path, timeout=300)
    assert_one_line_failure(r, run_dir)
