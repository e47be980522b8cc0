"""Run artifacts: the dense-model cache and the pruned model a run saves (model.pt).

The dense model is trained once per (model, dataset, pretrain and training config, seed) and cached
under `cache_dir/dense/` (`$PRUNEKIT_CACHE`, default ~/.cache/prunekit): a sweep of methods and
sparsities over one seed reuses one dense model, so every method starts from the same weights and
no method pays for dense training. Files are written atomically and read with weights_only=True;
each file carries the sha256 of its tensors and the configuration it belongs to, so an
unreadable, corrupt or mismatched file is reported by name and rebuilt, never used.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from prunekit.errors import first_line
from prunekit.files import atomic_write
from prunekit.state import cpu_state, load_state

log = logging.getLogger(__name__)

CACHE_FORMAT = "prunekit-dense/1"
MODEL_FORMAT = "prunekit-model/1"


def atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


# The keys of the dense model's sections that cannot change its weights, and why. Every other key
# is part of the cache key, so a key added later splits the cache until it is listed here.
NOT_IN_DENSE_KEY = {
    "model": {"checkpoint"},  # user weights bypass the cache altogether
    "dataset": {"root", "download",  # where the files are, not what they hold
                "num_workers",  # streaming workers: the samples are seeded, not per worker
                "batch_size", "pretrain_epochs"},  # read through train.batch_size, pretrain.epochs
    "pretrain": {"cache", "momentum", "nesterov"},  # the last two: under train (below)
    "train": {"eval_batch_size", "val_max_batches", "progress",  # evaluation and display
              "weight_decay", "lr_schedule"},  # fine-tuning's: dense training uses pretrain.*
}
# Dense training's SGD momentum and Nesterov are pretrain.*'s; the key keeps them where it kept
# train.*'s before they were the dense recipe's own, so the caches of the default recipe keep
# their keys, and a fine-tuning setting (ICE's presets: no Nesterov) does not change the key.
DENSE_SGD_KEYS = ("momentum", "nesterov")


def dense_key(cfg) -> dict:
    """Everything that determines the dense model's weights: the model, dataset, pretrain and
    train sections and the seed, less NOT_IN_DENSE_KEY, and the precision it trains in."""
    key = {"format": CACHE_FORMAT, "seed": cfg.seed}
    for section, left_out in NOT_IN_DENSE_KEY.items():
        values = OmegaConf.to_container(cfg[section], resolve=True)
        key[section] = {k: v for k, v in values.items() if k not in left_out}
    key["train"].update({k: cfg.pretrain.get(k, cfg.train[k]) for k in DENSE_SGD_KEYS})
    if cfg.hardware.precision != "fp32":  # dense training runs under its autocast (CUDA); an
        key["precision"] = cfg.hardware.precision  # fp32 key stays what it was before this key
    path = key["dataset"].get("path")
    if path:  # the same folder however it is written
        key["dataset"]["path"] = os.path.abspath(os.path.expanduser(path))
    return key


@contextlib.contextmanager
def cache_lock(path: Path):
    """An exclusive lock on a cache entry (a `.lock` file beside it), so parallel jobs that need
    the same dense model train it once: the others wait, then load it. POSIX only; elsewhere
    jobs may train it twice (the files are still written atomically)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def dense_cache_path(cfg) -> Path:
    key = json.dumps(dense_key(cfg), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(os.path.expanduser(str(cfg.cache_dir))) / "dense"
    return root / f"{cfg.model.name}_{cfg.dataset.name}_seed{cfg.seed}_{digest}.pt"


def state_digest(state: dict) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes: the content hash that catches
    a file whose tensors changed after it was written (bit rot, a partial copy, an edit)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-dim too (BN counters)
    return h.hexdigest()


def load_dense(path: Path, model: nn.Module, key: dict) -> Optional[dict]:
    """Load a cached dense model into `model`; its metadata, or None (and why) when unusable."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format") != CACHE_FORMAT or blob.get("key") != key:
            raise ValueError("it belongs to another configuration")
        if blob.get("sha256") != state_digest(blob["state_dict"]):
            raise ValueError("its content hash does not match: the file is corrupt")
        load_state(model, blob["state_dict"])
    except Exception as e:  # corrupt, truncated, foreign: rebuild rather than trust it
        log.warning("dense cache %s is unusable (%s): training the dense model again", path,
                    first_line(e))
        return None
    return blob["meta"]


def save_dense(path: Path, model: nn.Module, key: dict, meta: dict) -> None:
    state = cpu_state(model)
    atomic_torch_save({"format": CACHE_FORMAT, "key": key, "meta": meta, "state_dict": state,
                       "sha256": state_digest(state)}, path)


def save_model(path: Path, model: nn.Module, model_cfg, num_classes: int, image_size: int,
               compacted: bool) -> None:
    """model.pt: the pruned weights plus what is needed to rebuild the architecture."""
    state = cpu_state(model)
    atomic_torch_save({
        "format": MODEL_FORMAT,
        "model": {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items()
                  if k != "checkpoint"},  # the weights are in this file
        "num_classes": num_classes,
        "image_size": image_size,
        "compacted": compacted,
        "state_dict": state,
    }, path)
