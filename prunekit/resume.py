"""Runs that survive a crash: a journal of the method's operations and checkpoints of the state.

Every operation a method spends through its Context is journaled, with its result: prune, compact,
validate, record, fine-tune, and `once` for side computations such as ICE's tuning. Checkpoints
are taken after every recorded pruning step and every fine-tune epoch. Each holds the journal so
far and the whole state:
- the model, at its compacted shapes;
- the masks;
- the channel groups' dense sizes;
- the optimiser, scheduler and epoch of a fit in progress;
- the state of the method's own objects (`ctx.stateful`: ADMM's Z, U and ρ; SLR's Z, U, step
  size, k and last accepted point; AutoCompress's RNG);
- every RNG, the data loaders' included;
- the recorder's rows;
- the phase clock;
- the context's counters and results.

`resume=true` runs the method again from the start, in replay. Journaled operations before the
checkpoint return their recorded results without doing anything, so the method's control flow
(its decisions included) retraces the interrupted run exactly. At the checkpoint, the state is
restored and the run goes on live; a fit in progress continues from its next epoch with its
optimiser. With deterministic kernels, the resumed run ends with the numbers an uninterrupted run
would have.

Operations nested inside another (validations inside a fit's epoch hook, the trials of a search
wrapped in `once`) are not journaled: the outer operation is the unit of replay.

Checkpoint files are written atomically (temp file + rename) and the last `keep` are kept. Each
starts with a header line holding the sha256 of its payload and a hash of the resolved
configuration. A corrupt file is
named and skipped for the one before it, and one from another configuration is refused.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from prunekit.record import temp_beside

log = logging.getLogger(__name__)

FORMAT = "prunekit-checkpoint/3"  # /2: fine-tune plans journaled; /3: ICE's tuning keeps its probe


def config_hash(cfg: DictConfig) -> str:
    """The resolved configuration a checkpoint belongs to (`resume` itself excluded)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("resume", None)
    return hashlib.sha256(repr(sorted(_flat(data).items())).encode()).hexdigest()[:16]


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class Journal:
    """The operations of one run, in order, with their (plain-data) results."""

    def __init__(self, results: Optional[List[Any]] = None, restore: Optional[dict] = None):
        self.results: List[Any] = list(results or [])
        self.position = 0
        self.resume_at = len(self.results) if restore is not None else 0
        self.pending: Optional[dict] = restore  # the state to restore when replay ends
        self.resumed = restore is not None
        self.depth = 0  # > 0 inside an operation: nested ones are not journaled


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster preempting the job, `kill`): the run stops like it does on Ctrl-C."""


STOP = {"requested": False}  # set by the SIGTERM handler: stop at the next checkpoint


class Checkpointer:
    """Writes and finds the checkpoints of one run directory. `due()` spaces them at least
    `min_interval_s` apart; a requested stop (SIGTERM) forces one, then stops the run."""

    def __init__(self, run_dir: Path, cfg_hash: str, keep: int = 2, min_interval_s: float = 0.0):
        self.dir = Path(run_dir) / "checkpoints"
        self.cfg_hash = cfg_hash
        self.keep = keep
        self.min_interval_s = min_interval_s
        self.last = time.perf_counter()
        self.count = 0

    def due(self) -> bool:
        return STOP["requested"] or time.perf_counter() - self.last >= self.min_interval_s

    def save(self, payload: dict) -> Path:
        """One file: a JSON header line (format, configuration hash, sha256 of the rest), then
        the torch-serialised payload, written raw (a second torch.save around the bytes would
        cost ten times the serialisation)."""
        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getbuffer()
        header = json.dumps({"format": FORMAT, "config": self.cfg_hash,
                             "sha256": hashlib.sha256(data).hexdigest()}).encode() + b"\n"
        self.count += 1
        path = self.dir / f"ckpt-{payload['journal_position']:05d}-{self.count:05d}.pt"
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = temp_beside(path)
        try:
            with open(tmp, "wb") as f:
                f.write(header)
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        for old in self.files()[:-self.keep]:
            old.unlink(missing_ok=True)
        self.last = time.perf_counter()
        if STOP["requested"]:
            log.warning("SIGTERM: stopped after writing %s", path)
            raise Terminated()
        return path

    def files(self) -> List[Path]:
        return sorted(self.dir.glob("ckpt-*.pt")) if self.dir.is_dir() else []

    def latest(self) -> Optional[dict]:
        """The newest checkpoint that is intact and belongs to this configuration."""
        for path in reversed(self.files()):
            try:
                raw = path.read_bytes()
                line, _, data = raw.partition(b"\n")
                try:
                    header = json.loads(line)
                except ValueError:
                    raise ValueError("not a prunekit checkpoint") from None
                if str(header.get("format", "")).startswith("prunekit-checkpoint/") and \
                        header.get("format") != FORMAT:
                    raise ValueError(f"it is {header['format']}, written by another prunekit "
                                     f"version (this one reads {FORMAT})")
                if header.get("format") != FORMAT:
                    raise ValueError("not a prunekit checkpoint")
                if header.get("config") != self.cfg_hash:
                    raise ValueError("it belongs to another configuration")
                if hashlib.sha256(data).hexdigest() != header.get("sha256"):
                    raise ValueError("its content hash does not match: the file is corrupt")
                payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except Exception as e:
                log.warning("checkpoint %s is unusable (%s): trying an older one", path,
                            str(e).splitlines()[0][:120] if str(e) else type(e).__name__)
                continue
            payload["path"] = str(path)
            self.count = int(path.stem.rsplit("-", 1)[1])
            return payload
        return None

    def clear(self) -> None:
        for path in self.files():
            path.unlink(missing_ok=True)
        if self.dir.is_dir() and not any(self.dir.iterdir()):
            self.dir.rmdir()


# --------------------------------------------------------------------------- state
def rng_state(loaders) -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loaders": [getattr(ld, "gen", None).get_state() if getattr(ld, "gen", None) is not None
                    else None for ld in loaders],
    }


def set_rng_state(state: dict, loaders) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy(), *n[2:]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for ld, s in zip(loaders, state["loaders"]):
        if s is not None and getattr(ld, "gen", None) is not None:
            ld.gen.set_state(s)


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def loaders_of(ctx) -> list:
    return [ctx.data.train, ctx.data.val, ctx.data.test]


def capture(ctx, fit: Optional[dict] = None) -> dict:
    """Everything needed to continue the run from here."""
    masks = {n: m.detach().cpu().bool() for n, m in ctx.masks.items()}
    groups = ctx.pruner.groups
    return {
        "journal": list(ctx.journal.results),
        "journal_position": len(ctx.journal.results),
        "fit": fit,
        "model": {k: v.detach().cpu() for k, v in ctx.model.state_dict().items()},
        "masks": masks,
        "dense_numel": dict(ctx.pruner.dense_numel),
        "dense_sizes": dict(groups._dense_sizes) if groups is not None else None,
        "channels_removed": ctx.pruner.channels_removed,
        "pruner_rng": ctx.pruner.generator.get_state(),
        "rng": rng_state(loaders_of(ctx)),
        "steps_rows": list(ctx.recorder.steps),
        "clock": dict(ctx.clock.totals),
        "elapsed": ctx.elapsed(),
        "stateful": {k: v.state_dict() for k, v in ctx.stateful.items()},
        "context": {"steps": ctx.steps, "finetune_count": ctx.finetune_count,
                    "finetune_epochs": ctx.finetune_epochs,
                    "compaction_max_abs_diff": ctx.compaction_max_abs_diff,
                    "compacted": ctx.compacted, "frozen": list(ctx.frozen),
                    "results": ctx.results, "layer_info": ctx.layer_info,
                    "dense_val_top1": ctx.dense_val_top1},
    }


def restore(ctx, state: dict, rebuild_pruner: Callable) -> None:
    """Put the run back where `capture` left it (the model resized to its compacted shapes)."""
    from prunekit.export import _resize

    model_state = state["model"]
    for name, module in ctx.model.named_modules():
        _resize(module, model_state, f"{name}." if name else "")
    ctx.model.load_state_dict(model_state)
    ctx.model.to(ctx.hw.device)
    ctx.pruner = rebuild_pruner(ctx.model)
    ctx.pruner.dense_numel = dict(state["dense_numel"])
    if ctx.pruner.groups is not None and state["dense_sizes"] is not None:
        ctx.pruner.groups._dense_sizes = dict(state["dense_sizes"])
        ctx.pruner.groups.refresh()
    ctx.pruner.channels_removed = state["channels_removed"]
    ctx.pruner.generator.set_state(state["pruner_rng"])
    for name, mask in state["masks"].items():
        ctx.masks.set(name, mask)
    c = state["context"]
    for key in ("steps", "finetune_count", "finetune_epochs", "compaction_max_abs_diff",
                "compacted", "results", "layer_info", "dense_val_top1"):
        setattr(ctx, key, c[key])
    ctx.freeze(c["frozen"])
    ctx.recorder.reset(state["steps_rows"])
    ctx.clock.totals.update(state["clock"])
    ctx.elapsed_before = state["elapsed"]
    for name, obj in ctx.stateful.items():
        if name in state["stateful"]:
            obj.load_state_dict(state["stateful"][name])
    set_rng_state(state["rng"], loaders_of(ctx))
    log.info("resumed from %s (%d operations replayed)", state.get("path"),
             state["journal_position"])
