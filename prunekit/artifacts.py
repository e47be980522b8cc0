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

from prunekit.files import atomic_write

log = logging.getLogger(__name__)

CACHE_FORMAT = "prunekit-dense/1"
MODEL_FORMAT = "prunekit-model/1"


def atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def dense_key(cfg) -> dict:
    """Everything that determines the dense model's weights, and nothing else."""
    d, t = cfg.dataset, cfg.train
    return {
        "format": CACHE_FORMAT,
        "model": {k: cfg.model[k] for k in ("name", "in_channels", "small_input")},
        "dataset": {
            "name": d.name, "image_size": d.image_size, "val_fraction": d.val_fraction,
            "test_fraction": d.test_fraction, "subset": d.subset, "split_seed": d.split_seed,
            "augment": d.augment, "num_samples": d.num_samples, "num_classes": d.num_classes,
            "path": os.path.abspath(os.path.expanduser(d.path)) if d.path else None,
        },
        "pretrain": {k: cfg.pretrain[k] for k in ("epochs", "lr", "lr_schedule", "weight_decay")},
        "train": {k: t[k] for k in ("batch_size", "momentum", "nesterov", "label_smoothing")},
        "seed": cfg.seed,
    }


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
        model.load_state_dict(blob["state_dict"])
    except Exception as e:  # corrupt, truncated, foreign: rebuild rather than trust it
        log.warning("dense cache %s is unusable (%s): training the dense model again", path,
                    str(e).splitlines()[0][:120] if str(e) else type(e).__name__)
        return None
    return blob["meta"]


def save_dense(path: Path, model: nn.Module, key: dict, meta: dict) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"format": CACHE_FORMAT, "key": key, "meta": meta, "state_dict": state,
                       "sha256": state_digest(state)}, path)


def save_model(path: Path, model: nn.Module, model_cfg, num_classes: int, image_size: int,
               compacted: bool) -> None:
    """model.pt: the pruned weights plus what is needed to rebuild the architecture."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({
        "format": MODEL_FORMAT,
        "model": {k: model_cfg[k] for k in ("name", "in_channels", "small_input")},
        "num_classes": num_classes,
        "image_size": image_size,
        "compacted": compacted,
        "state_dict": state,
    }, path)
