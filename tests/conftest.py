"""Shared test helpers: config composition, a private dense cache, running prune-run."""
from __future__ import annotations

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

torch.set_num_threads(2)

# Runs finish in seconds: tiny subsets, one epoch, short latency protocol, no progress bars.
FAST = ["train.progress=false", "hardware.latency.repeats=2", "hardware.latency.warmup=1",
        "hardware.latency.batch_sizes=[1,8]"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test session gets its own dense cache; tests never touch ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "prunekit-cache"
    monkeypatch.setenv("PRUNEKIT_CACHE", str(cache))
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path_factory.getbasetemp() / "prunekit-data"))
    return cache


def make_cfg(overrides: List[str]):
    with initialize_config_module(version_base="1.3", config_module="prunekit.conf"):
        return compose("config", overrides=overrides)


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
