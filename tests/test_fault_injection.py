"""Fault injection that goes on finding defects: kill -9 at random points of a run then resume,
ENOSPC / EACCES at every write, processes racing on one empty cache, a corrupt byte in every kind
of file prunekit reads, and property-based fuzzing of override values and image folders.

`make test-slow` runs all of it; CI runs the cases not marked slow (one of each kind). Every case
states what must hold, not what the code happens to do: a resumed run's records equal the
uninterrupted run's, a failed write is a warning or a one-line error with no torn or stray file,
a corrupt file is refused or rebuilt, never used.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prunekit
from conftest import make_cfg, read_summary, run_cli
from prunekit import record
from prunekit.config import METHODS
from prunekit.errors import ConfigError
from prunekit.runner import run

SLOW = pytest.mark.slow
QUICK = ["model=lenet5", "dataset.subset=0.3", "pretrain.epochs=2", "train.progress=false",
         "hardware.latency.enabled=false"]


OWN_MODEL = {"slimming": ["model=resnet20"]}  # BatchNorm scales to slim (lenet5 has none)


def method_args(name: str) -> list:
    """The method's quick run on QUICK's small model (or its own, where it needs another)."""
    own = OWN_MODEL.get(name, [])
    return [f"method={name}", *METHODS[name].quick, *own]


def rows(run_dir: Path):
    with open(run_dir / "steps.csv") as f:
        return [{k: v for k, v in r.items() if "time" not in k} for r in csv.DictReader(f)]


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------- kill -9 anywhere
KILL_CASES = [pytest.param(name, seed, marks=[] if (name, seed) == ("iterative", 0) else [SLOW],
                           id=f"{name}-{seed}")
              for name in sorted(METHODS) for seed in range(3)]


@pytest.mark.parametrize("method, seed", KILL_CASES)
def test_kill_9_at_a_random_point_then_resume_ends_as_the_uninterrupted_run(tmp_path, method,
                                                                            seed):
    """SIGKILL at a random moment of the run (startup, dense training, pruning, fine-tuning,
    measurement, writing), then resume=true: steps.csv, the numbers and model.pt are the
    uninterrupted run's."""
    args = [*QUICK, *method_args(method), "pretrain.cache=false", "checkpoint.min_interval_s=0"]
    started = time.perf_counter()
    ref = run_cli([f"hydra.run.dir={tmp_path / 'ref'}", *args], tmp_path)
    took = time.perf_counter() - started
    assert ref.returncode == 0, ref.stderr[-2000:]
    run_dir = tmp_path / "run"
    exe = Path(sys.executable).parent / "prune-run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen([str(exe), f"hydra.run.dir={run_dir}", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(0.1, 0.95) * took)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    resumed = run_cli([f"hydra.run.dir={run_dir}", *args, "resume=true"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = read_summary(tmp_path / "ref"), read_summary(run_dir)
    for key in ("top1", "val_top1", "sparsity", "params_nonzero", "steps", "finetune_epochs"):
        assert a[key] == b[key], key
    assert rows(run_dir) == rows(tmp_path / "ref")
    assert same_weights(weights(run_dir), weights(tmp_path / "ref"))


# ------------------------------------------------------------------------- failing writes
class WriteFaults:
    """Counts the writes a run makes (every atomic write fsyncs; steps.csv appends open in
    'a' mode) and fails the `fail`-th one with errno `code`."""

    def __init__(self, monkeypatch, code: int = errno.ENOSPC, fail: int = -1):
        self.code, self.fail, self.count, self.paths = code, fail, 0, []
        fsync, opener = os.fsync, open

        def counted(path: str) -> None:
            self.paths.append(path)
            self.count += 1
            if self.count - 1 == self.fail:
                raise OSError(self.code, os.strerror(self.code), path)

        def failing_fsync(fd):
            counted(os.readlink(f"/proc/self/fd/{fd}"))
            return fsync(fd)

        def failing_open(file, mode="r", *a, **kw):
            if "a" in mode:
                counted(str(file))
            return opener(file, mode, *a, **kw)

        monkeypatch.setattr(os, "fsync", failing_fsync)
        monkeypatch.setattr(record, "open", failing_open, raising=False)


def whole_files(*folders: Path) -> None:
    """No stray temp file, and every result file whole (it parses)."""
    for folder in folders:
        for path in folder.rglob("*"):
            assert not path.name.endswith(".tmp"), path
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".csv":
                list(csv.DictReader(path.open()))
            elif path.name == "model.pt":
                prunekit.load_pruned(path)


WRITE_METHODS = [pytest.param("oneshot", errno.ENOSPC, id="oneshot-ENOSPC")] + [
    pytest.param(name, code, id=f"{name}-{errno.errorcode[code]}", marks=SLOW)
    for name in sorted(METHODS) for code in (errno.ENOSPC, errno.EACCES)
    if (name, code) != ("oneshot", errno.ENOSPC)]


@pytest.mark.parametrize("method, code", WRITE_METHODS)
def test_a_failing_write_anywhere_is_a_warning_or_one_error_and_nothing_torn(tmp_path,
                                                                             monkeypatch,
                                                                             method, code):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNEKIT_CACHE", str(cache))
    args = [*QUICK, *method_args(method), "checkpoint.min_interval_s=0"]
    with monkeypatch.context() as m:
        counter = WriteFaults(m)
        run(make_cfg(args), tmp_path / "count", show=False)
    writes = counter.paths
    for i, path in enumerate(writes):
        for cached in cache.glob("dense/*.pt"):  # every run writes what the first one wrote
            cached.unlink()
        run_dir = tmp_path / f"run{i}"
        with monkeypatch.context() as m:
            WriteFaults(m, code, fail=i)
            try:
                s = run(make_cfg(args), run_dir, show=False)
            except OSError as e:  # a result that cannot be written: the run fails, said so
                assert e.errno == code
                s = read_summary(run_dir) if (run_dir / "summary.json").exists() else None
                assert s is None or s["status"] == "failed"
                assert "/cache/" not in path and "/checkpoints/" not in path, path
            else:  # the cache and checkpoints only save time: the run goes on
                assert s["status"] == "ok", path
        whole_files(run_dir, cache)


def test_a_failing_report_write_is_one_error_and_nothing_torn(tmp_path, monkeypatch):
    from prunekit.report import main as report_main

    run(make_cfg(["method=oneshot", *QUICK]), tmp_path / "runs" / "a", show=False)
    with monkeypatch.context() as m:
        counter = WriteFaults(m)
        report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "count")])
    for i in range(counter.count):
        out = tmp_path / f"report{i}"
        with monkeypatch.context() as m:
            WriteFaults(m, errno.ENOSPC, fail=i)
            with pytest.raises(SystemExit) as e:
                report_main([str(tmp_path / "runs"), "--out", str(out)])
            assert e.value.code == 1
        if out.exists():
            whole_files(out)


# ------------------------------------------------------------------------- racing on a cache
def test_three_processes_racing_on_an_empty_cache_train_one_dense_model(tmp_path):
    cache = tmp_path / "cache"
    exe = Path(sys.executable).parent / "prune-run"
    env = {**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
           "PRUNEKIT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([str(exe), f"hydra.run.dir={tmp_path / str(i)}", "method=oneshot",
                               *QUICK, "method.finetune_epochs=1"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    summaries = [read_summary(tmp_path / str(i)) for i in range(3)]
    sources = sorted(s["dense_source"].split()[0] for s in summaries)
    assert sources == ["cache", "cache", "trained"]
    assert len({s["top1_dense"] for s in summaries}) == 1
    assert len(list((cache / "dense").glob("*.pt"))) == 1


# ------------------------------------------------------------------------- corrupt bytes
def flip(path: Path, offset: int, xor: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= xor or 1
    path.write_bytes(bytes(data))


@pytest.fixture(scope="session")  # built once per worker (module scope rebuilt it)
def finished(tmp_path_factory):
    """A finished run, its dense cache entry, and an interrupted run's checkpoints."""
    root = tmp_path_factory.mktemp("finished")
    before = os.environ.get("PRUNEKIT_CACHE")
    os.environ["PRUNEKIT_CACHE"] = str(root / "cache")
    try:
        args = ["method=iterative", "method.steps=2", *QUICK, "checkpoint.min_interval_s=0"]
        run(make_cfg(args), root / "done", show=False)
        from prunekit.resume import Checkpointer
        saved = Checkpointer.save

        def stop_third(self, payload):
            path = saved(self, payload)
            if self.count == 3:
                raise KeyboardInterrupt
            return path

        Checkpointer.save = stop_third
        try:
            with pytest.raises(KeyboardInterrupt):
                run(make_cfg([*args, "pretrain.cache=false"]), root / "stopped", show=False)
        finally:
            Checkpointer.save = saved
    finally:
        os.environ.pop("PRUNEKIT_CACHE")
        if before is not None:
            os.environ["PRUNEKIT_CACHE"] = before
    return root, args


CORRUPT = settings(max_examples=6, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])
BYTE = st.tuples(st.integers(min_value=0, max_value=1 << 30), st.integers(1, 255))


@CORRUPT
@given(byte=BYTE)
def test_a_corrupt_model_pt_is_refused_in_one_line(finished, tmp_path, byte):
    root, _ = finished
    path = tmp_path / "model.pt"
    path.write_bytes((root / "done" / "model.pt").read_bytes())
    flip(path, *byte)
    try:
        model = prunekit.load_pruned(path)
    except ConfigError as e:
        assert "\n" not in str(e)
    else:  # the byte fell where nothing is read (zip padding, an unused record)
        reference = prunekit.load_pruned(root / "done" / "model.pt")
        assert same_weights(model.state_dict(), reference.state_dict())


@CORRUPT
@given(byte=BYTE)
def test_a_corrupt_dense_cache_is_rebuilt_never_used(finished, tmp_path, monkeypatch, byte):
    root, args = finished
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNEKIT_CACHE", str(cache))
    (cache / "dense").mkdir(parents=True, exist_ok=True)
    entry = next((root / "cache" / "dense").glob("*.pt"))
    (cache / "dense" / entry.name).write_bytes(entry.read_bytes())
    flip(cache / "dense" / entry.name, *byte)
    s = run(make_cfg(args), tmp_path / "run", show=False)
    assert s["status"] == "ok"
    reference = read_summary(root / "done")
    assert (s["top1"], s["top1_dense"]) == (reference["top1"], reference["top1_dense"])


@CORRUPT
@given(byte=BYTE, which=st.sampled_from(["newest", "dense"]))
def test_a_corrupt_checkpoint_is_set_aside_and_the_run_ends_right(finished, tmp_path, byte,
                                                                  which):
    import shutil

    root, args = finished
    run_dir = tmp_path / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(root / "stopped", run_dir)
    files = sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))
    flip(files[-1] if which == "newest" else run_dir / "checkpoints" / "dense.pt", *byte)
    s = run(make_cfg([*args, "pretrain.cache=false", "resume=true"]), run_dir, show=False)
    reference = read_summary(root / "done")
    assert s["status"] == "ok" and s["top1"] == reference["top1"]
    assert rows(run_dir) == rows(root / "done")


@CORRUPT
@given(byte=BYTE, name=st.sampled_from(["summary.json", "config_resolved.yaml", "layers.csv"]))
def test_a_corrupt_run_file_never_breaks_the_report_or_a_resume(finished, tmp_path, byte, name):
    import shutil

    from prunekit.report import main as report_main

    root, args = finished
    run_dir = tmp_path / "runs" / "done"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(root / "done", run_dir)
    flip(run_dir / name, *byte)
    report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    try:  # resume=true: skipped (same run), refused in one line, or (unreadable) run again
        run(make_cfg([*args, "resume=true"]), run_dir, show=False)
    except ConfigError as e:
        assert "\n" not in str(e)


@CORRUPT
@given(byte=BYTE, kind=st.sampled_from(["idx", "image"]))
def test_corrupt_data_files_are_refused_in_one_line_or_read(tmp_path, byte, kind):
    """A data file with a flipped byte: read (a pixel changed), or refused naming the file."""
    from omegaconf import OmegaConf
    from test_data import write_fashion
    from test_faults import folder_data, image_folder

    from prunekit.data import build_data

    folder = tmp_path / kind
    try:
        if kind == "idx":
            if not folder.exists():
                write_fashion(folder, compress=False)
            flip(folder / "train-images-idx3-ubyte", *byte)
            cfg = make_cfg(["dataset=fashion_mnist", f"dataset.path={folder}"]).dataset
            build_data(cfg, OmegaConf.create({"batch_size": 8, "eval_batch_size": 8}), 1)
        else:
            if not folder.exists():
                image_folder(folder)
            flip(folder / "train" / "b" / "1.png", *byte)
            data = folder_data(folder, True)
            assert data.num_classes == 3
    except ConfigError as e:
        assert "\n" not in str(e)


# ------------------------------------------------------------------------- fuzzed overrides
VALUES = st.one_of(st.integers(-3, 1 << 40).map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["true", "null", "[]", "[1,2]", "{}", "''", "abc", "1e999",
                                    "${seed}", "0x10", "-0.0"]))
KEYS = st.sampled_from(["seed", "sparsity", "method.lr", "train.batch_size", "pretrain.epochs",
                        "dataset.subset", "dataset.val_fraction", "hardware.threads",
                        "hardware.channel_multiple", "target.value", "checkpoint.keep",
                        "method.nm", "hardware.latency.batch_sizes", "train.val_max_batches",
                        "dataset.image_size", "method.criterion_batches"])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(overrides=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=3))
def test_any_override_value_is_accepted_or_refused_in_one_line(overrides):
    """Composing and validating any value of any key: accepted, or one line (a ConfigError, or
    a composition error the CLI turns into one line); never another exception."""
    from hydra.errors import CompactHydraException

    from prunekit.cli import composition_error
    from prunekit.config import validate

    try:
        validate(make_cfg(["method=oneshot", *(f"{k}={v}" for k, v in overrides)]))
    except ConfigError as e:
        assert "\n" not in str(e)
    except CompactHydraException as e:
        line = composition_error(e)
        assert line and "\n" not in line


# ------------------------------------------------------------------------- fuzzed image folders
TREE = st.fixed_dictionaries({
    "train": st.dictionaries(st.sampled_from("abc"), st.integers(0, 3), min_size=1),
    "val": st.dictionaries(st.sampled_from("abc"), st.integers(0, 2), min_size=1),
    "nested": st.booleans(), "junk": st.booleans(),
    "links": st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(
        ["..", "../..", ".", "sibling", "outside"])), max_size=3),
})


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=TREE)
def test_any_image_folder_labels_every_image_by_its_class_or_says_why_not(tmp_path, tree):
    import shutil
    import uuid

    from PIL import Image
    from test_faults import COLOURS, folder_data, true_labels

    root = tmp_path / uuid.uuid4().hex
    real = {}  # split -> how many image files each class's own folder holds
    for split in ("train", "val"):
        for cls, n in tree[split].items():
            folder = root / split / cls / ("deep" if tree["nested"] else "")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (6, 6), COLOURS[cls]).save(folder / f"{i}.png")
            if tree["junk"]:
                (folder / "notes.txt").write_text("not an image")
            real[(split, cls)] = n
    outside = root.parent / f"{root.name}-outside"
    for cls, target in tree["links"]:
        home = root / "train" / cls
        if not home.is_dir():
            continue
        if target == "outside":  # real images elsewhere, of this class: they count
            outside.mkdir(exist_ok=True)
            Image.new("RGB", (6, 6), COLOURS[cls]).save(outside / f"{cls}.png")
            link = home / "more"
            real[("train", cls)] += 0 if link.exists() else 1
        elif target == "sibling":
            other = next((c for c in "abc" if c != cls and (root / "train" / c).is_dir()), None)
            if other is None:
                continue
            link, outside_target = home / f"to_{other}", root / "train" / other
            target = str(outside_target)
        else:
            link = home / f"loop{len(target)}"
        if not link.exists():
            link.symlink_to(outside if target == "outside" else target,
                            target_is_directory=True)
    train_total = sum(n for (split, _), n in real.items() if split == "train")
    val_total = sum(n for (split, _), n in real.items() if split == "val")
    try:
        data = folder_data(root, True, val_fraction=0.3)
    except ConfigError as e:
        assert "\n" not in str(e)
        lacking = set(tree["val"]) - set(tree["train"])
        assert lacking or "holds no images" in str(e) or "leaves no image" in str(e), e
    else:
        assert data.train.num_samples + data.val.num_samples == train_total
        assert data.test.num_samples == val_total
        names = sorted(tree["train"])  # labels: train's class folders by name
        for loader in (data.train, data.val, data.test):
            assert all(names[given] == "abc"[colour] for given, colour in true_labels(loader))
    finally:
        shutil.rmtree(outside, ignore_errors=True)
