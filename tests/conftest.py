"""Shared test helpers: config composition, a private dense cache, running prune-run."""
from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import torch
from hydra import compose, initialize_config_module

import prunekit  # noqa: F401  (registers the config schemas)

# `make test` runs two pytest-xdist workers on the two cores: one thread each (and in the prune-run
# processes they start, which inherit OMP_NUM_THREADS), since more threads than cores makes these
# tiny models slower; a plain `pytest` keeps both cores for itself.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, 2 // WORKERS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)

# Runs finish in seconds: tiny subsets, one epoch, short latency protocol, no progress bars.
FAST = ["train.progress=false", "hardware.latency.repeats=2", "hardware.latency.warmup=1",
        "hardware.latency.batch_sizes=[1,8]"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test session gets its own dense cache, which its xdist workers share (a dense model is
    trained once per session, under the cache's lock); tests never touch ~/.cache."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder; each worker's basetemp is its own under it
    cache = root / "prunekit-cache"
    monkeypatch.setenv("PRUNEKIT_CACHE", str(cache))
    monkeypatch.setenv("PRUNEKIT_DATA", str(root / "prunekit-data"))
    return cache


# Every run of the suite, in-process or a subprocess, trains in fp32 whatever this CPU is: its
# numeric tolerances are then the same on every CI machine. The tests of hardware.precision=auto
# set it themselves (test_deploy.py).
os.environ["PRUNEKIT_PRECISION"] = "fp32"


@functools.lru_cache(maxsize=None)
def composed(overrides: tuple):
    with initialize_config_module(version_base="1.3", config_module="prunekit.conf"):
        return compose("config", overrides=list(overrides))


def make_cfg(overrides: List[str]):
    """The composed config of `overrides`: composed once per distinct list (0.1 s), then copied
    (3 ms), so a test may change its copy."""
    return copy.deepcopy(composed(tuple(overrides)))


def run_cli(args: List[str], cwd: Path, timeout: int = 300,
            env=None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "prune-run"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "prunekit.cli"]
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    return subprocess.run(cmd + args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


# The suites whose tests take longest, started first: two workers then end together instead of
# one idling while the other finishes a long test collected last.
LONGEST_FIRST = ("test_distributed", "test_resume", "test_fuzz", "test_model_zoo",
                 "test_interrupt", "test_report", "test_tracking", "test_cli")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        module = item.module.__name__.rpartition(".")[2]
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each suite keeps its own order
