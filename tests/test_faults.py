"""Faults a careful user meets, each ending in one line and nothing lost: a model.pt that names
code, full and read-only disks, truncated files, ... The fault table in docs/faults.md lists each
case, what happens, and its test."""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

import prunekit
from conftest import FAST, make_cfg, run_cli
from prunekit.artifacts import MODEL_FORMAT
from prunekit.errors import ConfigError
from prunekit.plan import plan_of
from prunekit.record import Recorder
from prunekit.runner import run

# a run of seconds: LeNet on a third of digits, one epoch each side
QUICK = ["method=oneshot", "model=lenet5", "dataset.subset=0.3", "pretrain.epochs=1",
         "method.finetune_epochs=1", *FAST]


def crafted_model_pt(path, marker):
    """A model.pt whose model section names `os:system` with a harmless command (it would
    create `marker`)."""
    torch.save({"format": MODEL_FORMAT, "num_classes": 10, "image_size": 8, "compacted": False,
                "model": {"name": "custom", "in_channels": 1, "target": "os:system",
                          "kwargs": {"command": f"touch {marker}"}},
                "state_dict": {}}, path)
    return path


@pytest.mark.parametrize("load", [
    lambda p: prunekit.load_pruned(p),
    lambda p: prunekit.export_onnx(p, p.with_suffix(".onnx")),
], ids=["load_pruned", "export_onnx"])
def test_a_model_pt_naming_code_runs_nothing(tmp_path, load):
    marker = tmp_path / "ran"
    path = crafted_model_pt(tmp_path / "model.pt", marker)
    with pytest.raises(ConfigError, match=r"names code to import and run \(os:system\).*"
                                          r"load_pruned\(path, model=") as e:
        load(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_a_model_pt_naming_an_unknown_builder_is_one_line(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"format": MODEL_FORMAT, "num_classes": 10, "image_size": 8, "compacted": False,
                "model": {"name": "os.system", "in_channels": 1}, "state_dict": {}}, path)
    with pytest.raises(ConfigError, match="is not a known model"):
        prunekit.load_pruned(path)


# ------------------------------------------------------------------------- full and read-only disks
def inject_write_error(monkeypatch, code: int, where: Path):
    """Every atomic write (they all fsync) of a file under `where` fails with errno `code`, as a
    full (ENOSPC) or read-only (EROFS) disk makes it fail."""
    fsync = os.fsync

    def failing(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(where)):
            raise OSError(code, os.strerror(code))
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "no space left on device"),
                                        (errno.EROFS, "read-only file system")])
def test_a_cache_that_cannot_be_written_keeps_the_trained_model(tmp_path, monkeypatch, caplog,
                                                                code, says):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNEKIT_CACHE", str(cache))
    inject_write_error(monkeypatch, code, cache)
    s = run(make_cfg(QUICK), tmp_path / "run", show=False)
    assert s["status"] == "ok" and s["dense_source"] == "trained"
    assert f"not written ({says}): the run goes on with the model in memory" in caplog.text
    assert not list((cache / "dense").glob("*.pt"))


@pytest.mark.parametrize("options", ["size=64k", "ro,size=64k"], ids=["full", "read-only"])
def test_a_real_full_or_read_only_cache_disk_ends_ok_with_a_warning(tmp_path, monkeypatch, caplog,
                                                                    options):
    """The issue's case as it happens: a 64 KiB tmpfs (or a read-only one) as PRUNEKIT_CACHE.
    Mounting needs root; elsewhere the injected faults above stand in."""
    cache = tmp_path / "cache"
    cache.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(cache)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        monkeypatch.setenv("PRUNEKIT_CACHE", str(cache))
        s = run(make_cfg(QUICK), tmp_path / "run", show=False)
    finally:
        subprocess.run(["umount", str(cache)], check=True)
    assert s["status"] == "ok"
    says = "read-only file system" if options.startswith("ro") else "no space left on device"
    assert f"not written ({says})" in caplog.text


def test_checkpoints_that_cannot_be_written_are_said_once_and_the_run_goes_on(tmp_path,
                                                                               monkeypatch,
                                                                               caplog):
    inject_write_error(monkeypatch, errno.ENOSPC, tmp_path / "checkpoints")
    s = run(make_cfg([*QUICK, "method=iterative", "method.steps=3",
                      "checkpoint.min_interval_s=0"]), tmp_path, show=False)
    assert s["status"] == "ok"
    assert caplog.text.count("not written (no space left on device): the run goes on") == 1


def test_truncated_files_say_truncated(tmp_path, monkeypatch, caplog):
    from prunekit.artifacts import dense_cache_path

    cfg = make_cfg([*QUICK, "checkpoint.min_interval_s=0"])
    run(cfg, tmp_path / "a", show=False)
    cached = dense_cache_path(plan_of(cfg))
    cached.write_bytes(cached.read_bytes()[:-200])  # a partial copy
    run(make_cfg(QUICK), tmp_path / "b", show=False)
    assert f"dense cache {cached} is unusable (it is truncated" in caplog.text
    model = tmp_path / "b" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="cannot be loaded \\(it is truncated"):
        prunekit.load_pruned(model)
    args = [*QUICK, "method=iterative", "method.steps=3", "checkpoint.min_interval_s=0"]
    step = Recorder.step

    def second_row_stops(self, **row):
        step(self, **row)
        if len(self.steps) == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Recorder, "step", second_row_stops)
        with pytest.raises(KeyboardInterrupt):
            run(make_cfg(args), tmp_path / "c", show=False)
    newest = sorted((tmp_path / "c" / "checkpoints").glob("*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:-100])
    run(make_cfg([*args, "resume=true"]), tmp_path / "c", show=False)
    assert f"checkpoint {newest} is unusable (it is truncated" in caplog.text


# ---------------------------------------------------------------- the rest of what was found
def test_a_moved_run_is_reported_from_where_it_is(tmp_path):
    from prunekit.report import collect, layer_heatmaps

    run(make_cfg(QUICK), tmp_path / "original", show=False)
    (tmp_path / "original").rename(tmp_path / "moved")
    runs, failed = collect([tmp_path / "moved"])
    assert not failed and list(runs["run_dir"]) == [str(tmp_path / "moved")]
    assert layer_heatmaps(tmp_path, runs)  # read from the moved folder's layers.csv


@pytest.mark.parametrize("env, says", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE=abc is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "x"}, "RANK=x is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK=5 of WORLD_SIZE=2 is not a process of the launch"),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "-1"}, "SLURM_PROCID=-1 of SLURM_NTASKS=4"),
    ({"PRUNEKIT_CACHE": ""}, "cache_dir is empty (PRUNEKIT_CACHE is set to nothing?)"),
    ({"PRUNEKIT_DATA": " "}, "dataset.root is empty (PRUNEKIT_DATA is set to nothing?)"),
])
def test_environment_variables_are_checked_like_keys(monkeypatch, env, says):
    from prunekit import distributed
    from prunekit.config import validate

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as e:
        distributed.launched()
        validate(make_cfg(["method=oneshot"]))
    assert str(e.value).startswith(says) and "\n" not in str(e.value)


def test_a_bad_environment_variable_is_one_line_from_prune_run(tmp_path):
    r = run_cli(["method=oneshot", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path,
                env={"WORLD_SIZE": "abc"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "prune-run: error: WORLD_SIZE=abc is not a whole number: the launcher (torchrun, "
        "SLURM) sets it; unset it for a single process")


def test_a_layer_left_without_weights_is_said(tmp_path, caplog):
    s = run(make_cfg([*QUICK, "sparsity=0.999999"]), tmp_path, show=False)
    assert s["empty_layers"] > 0
    assert f"{s['empty_layers']} prunable layer(s) keep no weights" in caplog.text
    ok = run(make_cfg(QUICK), tmp_path / "ok", show=False)
    assert ok["empty_layers"] == 0


def test_a_job_waiting_for_the_dense_cache_lock_says_who_holds_it(tmp_path, monkeypatch, caplog):
    import threading

    from prunekit import artifacts

    monkeypatch.setattr(artifacts, "LOCK_REPORT_S", 0.2)
    entry = tmp_path / "dense" / "m.pt"
    held, release, waited = threading.Event(), threading.Event(), threading.Event()

    def holder():
        with artifacts.cache_lock(entry):
            held.set()
            release.wait(10)

    def waiter():
        with artifacts.cache_lock(entry):
            waited.set()

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    threads[0].start()
    held.wait(10)
    threads[1].start()
    time.sleep(0.7)
    assert not waited.is_set()
    release.set()
    for t in threads:
        t.join(10)
    assert waited.is_set()
    lines = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert len(lines) >= 2 and f"pid {os.getpid()} on {socket.gethostname()}" in lines[0]


# ---------------------------------------------------------------- image folders
COLOURS = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255)}


def image_folder(root: Path, train=("a", "b", "c"), val=("a", "b", "c"), n=5):
    """Class folders of solid-colour PNGs: an image's colour says its true class."""
    from PIL import Image

    for split, classes, count in (("train", train, n), ("val", val, 2)):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.new("RGB", (10, 10), COLOURS[cls]).save(root / split / cls / f"{i}.png")
    return root


def folder_data(root: Path, in_memory: bool, **keys):
    from omegaconf import OmegaConf

    from prunekit.data import build_data

    cfg = make_cfg(["dataset=imagefolder", f"dataset.path={root}", "dataset.image_size=8",
                    f"dataset.in_memory={in_memory}", "dataset.num_workers=0",
                    *(f"dataset.{k}={v}" for k, v in keys.items())]).dataset
    return build_data(cfg, OmegaConf.create({"batch_size": 4, "eval_batch_size": 4}),
                      channels=3)


def true_labels(loader):
    """(label given, label the colour says) of every image a loader holds: the brightest
    channel (red a, green b, blue c) of its decoded pixels, before normalisation (which takes
    the colour out of a split of one colour)."""
    split = getattr(loader, "split", None)
    batches = [(split.images.float(), split.labels)] if split is not None else loader
    pairs = []
    for x, y in batches:
        pairs += list(zip(y.tolist(), x.mean(dim=(2, 3)).argmax(1).tolist()))
    return pairs


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "streamed"])
def test_a_val_folder_lacking_a_class_keeps_every_label(tmp_path, in_memory):
    data = folder_data(image_folder(tmp_path, val=("a", "c")), in_memory)
    pairs = true_labels(data.test)
    assert pairs and all(given == colour for given, colour in pairs)  # c is 2, not 1
    assert {given for given, _ in pairs} == {0, 2}
    assert "val/ lacks 1 class(es) (b)" in data.describe()


def test_a_val_class_that_train_lacks_is_one_line(tmp_path):
    root = image_folder(tmp_path, train=("a", "b"), val=("a", "b", "c"))
    with pytest.raises(ConfigError, match=r"/val/c is a class that train/ does not have"):
        folder_data(root, True)
    with pytest.raises(ConfigError, match=r"dataset.subset=0.01 leaves no image in "):
        folder_data(image_folder(tmp_path / "small"), True, subset=0.01)


def test_a_symlink_loop_does_not_multiply_images(tmp_path, caplog):
    root = image_folder(tmp_path)
    (root / "train" / "a" / "loop").symlink_to("..", target_is_directory=True)
    (root / "train" / "b" / "into_c").symlink_to(root / "train" / "c", target_is_directory=True)
    data = folder_data(root, True, val_fraction=0.2)
    assert data.train.num_samples + data.val.num_samples == 15 and data.test.num_samples == 6
    assert all(given == colour for given, colour in true_labels(data.train))
    assert "2 directory link(s) not followed" in caplog.text


@pytest.mark.parametrize("in_memory, workers", [(True, 0), (False, 0), (False, 1)])
def test_a_truncated_image_is_named(tmp_path, in_memory, workers):
    root = image_folder(tmp_path)
    bad = root / "train" / "b" / "3.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(ConfigError, match=f"^{bad} cannot be read as an image") as e:
        data = folder_data(root, in_memory, num_workers=workers, val_fraction=0.2)
        for split in (data.train, data.val):
            for _ in split:
                pass
    assert "\n" not in str(e.value)


def test_edited_images_are_not_served_a_stale_dense_model(tmp_path):
    from PIL import Image

    root = image_folder(tmp_path / "images")
    args = [*QUICK, "dataset=imagefolder", f"dataset.path={root}", "dataset.image_size=8",
            "model.in_channels=3", "dataset.subset=1.0"]
    first = run(make_cfg(args), tmp_path / "1", show=False)
    again = run(make_cfg(args), tmp_path / "2", show=False)
    assert first["dense_source"] == "trained" and again["dense_source"].startswith("cache")
    Image.new("RGB", (10, 10), (9, 9, 9)).save(root / "train" / "a" / "0.png")  # edited
    edited = run(make_cfg(args), tmp_path / "3", show=False)
    assert edited["dense_source"] == "trained"
