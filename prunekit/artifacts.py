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
import io
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from prunekit.errors import first_line
from prunekit.files import atomic_write, torch_file_problem, write_failure
from prunekit.plan import RunPlan
from prunekit.settings import environment_keys
from prunekit.state import cpu_state, load_state

log = logging.getLogger(__name__)

CACHE_FORMAT = "prunekit-dense/1"
MODEL_FORMAT = "prunekit-model/1"


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save into memory, then one atomic write: a full disk is an OSError with its errno
    (torch's own writer reports it as an 'enforce fail' with no reason)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()), binary=True)


# The keys of the dense model's sections that change a run's results but not the dense weights,
# and why (keys that change no result, such as dataset.root, are their schemas' `environment()`
# and left out too). Every other key is part of the cache key, so a key added later splits the
# cache until it is listed here.
NOT_IN_DENSE_KEY = {
    "model": {"checkpoint"},  # user weights bypass the cache altogether
    "dataset": {"num_workers",  # streaming workers: the samples are seeded, not per worker
                "batch_size", "pretrain_epochs"},  # read through train.batch_size, pretrain.epochs
    "pretrain": {"cache", "momentum", "nesterov"},  # the last two: under train (below)
    "train": {"eval_batch_size", "val_max_batches",  # evaluation
              "weight_decay", "lr_schedule"},  # fine-tuning's: dense training uses pretrain.*
}
# Dense training's SGD momentum and Nesterov are pretrain.*'s; the key keeps them where it kept
# train.*'s before they were the dense recipe's own, so the caches of the default recipe keep
# their keys, and a fine-tuning setting (ICE's presets: no Nesterov) does not change the key.
DENSE_SGD_KEYS = ("momentum", "nesterov")


def dense_key(plan: RunPlan, content: str = "") -> dict:
    """Everything that determines the dense model's weights: the model, dataset, pretrain and
    train sections and the seed, less NOT_IN_DENSE_KEY and the environment() keys, the
    precision it trains in, and `content`, the fingerprint of the user's files the data came
    from (an image folder's names, sizes and mtimes; Data.content)."""
    key = {"format": CACHE_FORMAT, "seed": plan.seed}
    for section, left_out in NOT_IN_DENSE_KEY.items():
        node = getattr(plan, section)
        values = OmegaConf.to_container(node, resolve=True)
        left_out = left_out | {k.partition(".")[2] for k in environment_keys(node,
                                                                            section + ".")}
        key[section] = {k: v for k, v in values.items() if k not in left_out}
    key["train"].update({k: plan.pretrain.get(k, plan.train[k]) for k in DENSE_SGD_KEYS})
    precision = plan.precision  # `auto` as this machine resolves it
    if precision != "fp32":  # dense training runs under its autocast; an fp32 key stays what it
        key["precision"] = precision  # was before this key
    path = key["dataset"].get("path")
    if path:  # the same folder however it is written
        key["dataset"]["path"] = os.path.abspath(os.path.expanduser(path))
    if content:  # what the user's files hold (Data.content): edited images train anew
        key["dataset"]["content"] = content
    return key


LOCK_REPORT_S = 300.0  # a job waiting for another's dense model says so this often


@contextlib.contextmanager
def cache_lock(path: Path):
    """An exclusive lock on a cache entry (a `.lock` file beside it, holding who holds it and
    since when), so parallel jobs that need the same dense model train it once: the others
    wait, saying every LOCK_REPORT_S for whom, then load it. POSIX only; elsewhere, or where the
    cache cannot be written (a read-only cache still serves what it holds), jobs may train it
    twice (the files are still written atomically)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a+")
    except OSError as e:
        log.warning("dense cache %s cannot be locked (%s): going on without the lock",
                    path.parent, write_failure(e))
        yield
        return
    with f:
        wait_for(f, fcntl, lock)
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
            f.flush()
        except OSError:  # a full disk: the lock holds all the same, unlabelled
            pass
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def wait_for(f, fcntl, lock: Path) -> None:
    """Take the lock on `f`, saying every LOCK_REPORT_S (and at once) who holds it."""
    waited, said = time.monotonic(), None
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if said is None or time.monotonic() - said >= LOCK_REPORT_S:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            who = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"
                   if holder else "another job")
            log.warning("dense model: waiting %.0f s for %s, which trains it (lock %s)",
                        time.monotonic() - waited, who, lock)
            said = time.monotonic()
        time.sleep(0.5)


def dense_cache_path(plan: RunPlan, content: str = "") -> Path:
    key = json.dumps(dense_key(plan, content), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = plan.cache_dir / "dense"
    return root / f"{plan.model.name}_{plan.dataset.name}_seed{plan.seed}_{digest}.pt"


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
        problem = torch_file_problem(str(path))
        if problem:
            raise ValueError(problem)
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


def save_dense(path: Path, model: nn.Module, key: dict, meta: dict) -> bool:
    """Cache the dense model; False, said in one line, where the cache cannot take it (a full
    or read-only disk): the cache only saves time, and the run goes on with the model it has."""
    state = cpu_state(model)
    try:
        atomic_torch_save({"format": CACHE_FORMAT, "key": key, "meta": meta, "state_dict": state,
                           "sha256": state_digest(state)}, path)
    except OSError as e:
        log.warning("dense cache %s not written (%s): the run goes on with the model in memory "
                    "(the next run trains it again)", path, write_failure(e))
        return False
    return True


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
        "sha256": state_digest(state),  # load_pruned checks it: a corrupt copy is not loaded
    }, path)
