"""Runs that survive a crash: a journal of the method's operations and checkpoints of the state.

Every operation a method spends through its Context is journaled, with its result: prune, compact,
validate, record, fine-tune, and `once` for side computations such as ICE's tuning. Checkpoints
are taken after every recorded pruning step and every fine-tune epoch. Each holds the journal so
far and the whole state, as the Context's own field declarations say (`methods.context.piece`:
`capture` and `restore` read them, so a new piece of state is checkpointed by declaring it):
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
(its decisions included) retraces the interrupted run exactly. When the last of them has
returned, the state is restored (so the code between it and the next operation, e.g. the
constraints a method builds from the model, sees the checkpoint's model) and the run goes on
live; a fit in progress continues from its next epoch, or mid-epoch from its next batch, with
its optimiser and its place in the epoch's data. With deterministic kernels, the resumed run
ends with the numbers an uninterrupted run would have.

Operations nested inside another (validations inside a fit's epoch hook, the trials of a search
wrapped in `once`) are not journaled: the outer operation is the unit of replay.

Checkpoint files are written atomically (temp file + rename) and the last `keep` are kept. Each
starts with a header line holding the sha256 of its payload and a hash of the resolved
configuration. A corrupt file is
named and skipped for the one before it, and one from another configuration is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch

from prunekit import distributed
from prunekit.errors import first_line
from prunekit.files import atomic_write, write_failure
from prunekit.journaled import from_journal, to_journal
from prunekit.run_dir import DENSE_CHECKPOINT, REFUSED, interrupted_checkpoints

log = logging.getLogger(__name__)

FORMAT = "prunekit-checkpoint/6"  # /2: fine-tune plans journaled; /3: ICE's tuning keeps its
# probe; /4: the pruner's and the tally's own state dicts; /5: keyed by the Context's pieces;
# /6: dataclass results journaled by the journal itself (`journaled`)


class Journal:
    """The operations of one run, in order, with their results as plain data (to_journal)."""

    def __init__(self, results: Optional[List[Any]] = None, restore: Optional[dict] = None):
        self.results: List[Any] = list(results or [])
        self.position = 0
        self.resume_at = len(self.results) if restore is not None else 0
        self.pending: Optional[dict] = restore  # the state to restore when replay ends
        self.resumed = restore is not None
        self.depth = 0  # > 0 inside an operation: nested ones are not journaled


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster preempting the job, `kill`): the run stops like it does on Ctrl-C."""


STOP_VOTE_STEPS = 16  # a distributed run's ranks agree on a mid-epoch stop this often


class StopRequest:
    """A stop asked for by a signal, honoured at the next checkpoint. `signal` is the signal's
    name (SIGTERM, SIGINT) or None; `checkpointer` is the run's while checkpoints can still come
    (armed by the runner for the dense training and the method), else None and a signal stops
    the run at once. One per run: the signal handler writes it, the checkpointer and the
    Trainer's stop hook read it."""

    def __init__(self) -> None:
        self.signal: Optional[str] = None
        self.checkpointer: Optional["Checkpointer"] = None

    def arm(self, checkpointer: Optional["Checkpointer"]) -> None:
        self.checkpointer = checkpointer

    def disarm(self) -> None:
        self.checkpointer = None

    def waits(self, name: str) -> bool:
        """Whether a signal `name` waits for the next checkpoint (a first SIGTERM, or a first
        Ctrl-C when a checkpoint is due): recorded, True. Otherwise the run stops now."""
        c = self.checkpointer
        if self.signal is None and c is not None and (name == "SIGTERM" or c.overdue()):
            self.signal = name
            return True
        return False

    def vote(self, timed: bool) -> Tuple[bool, bool]:
        """The ranks of a distributed run agree: a stop asked on any rank (SIGTERM to one
        process) is asked on all, and rank 0's clock says whether a checkpoint is due."""
        votes = distributed.sum_(torch.tensor([float(self.signal is not None), float(timed)]))
        if votes[0] > 0 and self.signal is None:
            self.signal = "SIGTERM"  # another rank's: a cluster stops every process
        return bool(votes[0] > 0), bool(votes[1] > 0)

    def asked(self, step: int) -> bool:
        """Whether a fit stops after optimiser step `step` (the Trainer's FitHooks.stop): a
        stop signal came while a checkpoint can still be written. A single process asks at
        every step (an attribute read); a distributed run's ranks vote every STOP_VOTE_STEPS
        steps (one small all-reduce), so that all stop after the same step."""
        if self.checkpointer is None:
            return False
        if not distributed.current().distributed:
            return self.signal is not None
        return step % STOP_VOTE_STEPS == 0 and self.vote(False)[0]


def stop_now(signal_name: Optional[str]) -> KeyboardInterrupt:
    """What stops the run for a signal: Terminated for SIGTERM, KeyboardInterrupt for Ctrl-C."""
    return Terminated() if signal_name == "SIGTERM" else KeyboardInterrupt()


class Checkpointer:
    """Writes and finds the checkpoints of one run directory. `due()` spaces them at least
    `min_interval_s` apart; a requested stop (SIGTERM, Ctrl-C) forces one, then stops the run.

    Two kinds of file: `ckpt-*.pt`, the method's (journal and state; the newest `keep` kept), and
    `dense.pt`, the dense training's (its fit state and model; one file, overwritten), which a
    resumed run continues from when no cached dense model serves it."""

    DENSE = DENSE_CHECKPOINT

    def __init__(self, run_dir: Path, cfg_hash: str, keep: int = 2, min_interval_s: float = 0.0,
                 writes: bool = True, stop: Optional[StopRequest] = None):
        self.dir = Path(run_dir) / "checkpoints"
        self.stop = stop if stop is not None else StopRequest()  # the run's, from its signals
        self.writes = writes  # False on a distributed run's other ranks: rank 0 writes
        self.cfg_hash = cfg_hash
        self.keep = keep
        self.min_interval_s = min_interval_s
        self.last = time.perf_counter()
        self.count = 0
        self.failing: Optional[str] = None  # why the last write failed (a full disk), if it did

    def overdue(self) -> bool:
        """Whether the work since the last checkpoint (or the start) is older than the interval."""
        return time.perf_counter() - self.last >= self.min_interval_s

    def due(self) -> bool:
        """A checkpoint now? In a distributed run the ranks answer together: rank 0's clock
        spaces the checkpoints, and a stop requested on any rank (SIGTERM to one process) is
        requested on all, so every rank stops after the same checkpoint."""
        timed = self.overdue()
        world = distributed.current()
        if not world.distributed:
            return self.stop.signal is not None or timed
        stop, timed = self.stop.vote(timed and world.main)
        return stop or timed

    def save(self, payload: dict) -> Path:
        """A method checkpoint (the oldest beyond `keep` go)."""
        self.count += 1
        done = len(payload["replay"]["journal"])  # operations done
        path = self.dir / f"ckpt-{done:05d}-{self.count:05d}.pt"
        if self._write(path, payload) and self.writes:  # (refused files are in refused/ by
            for old in self.files()[:-self.keep]:  # now: the rotation reaches this run's own)
                old.unlink(missing_ok=True)
        self._stop_if_requested(path)
        return path

    def save_dense(self, payload: dict) -> Path:
        """The dense training's checkpoint: its fit state, model and RNG, in `dense.pt`."""
        path = self.dir / self.DENSE
        self._write(path, payload)
        self._stop_if_requested(path)
        return path

    def _write(self, path: Path, payload: dict) -> bool:
        """One file: a JSON header line (format, configuration hash, sha256 and size of the
        rest), then the torch-serialised payload, written raw (a second torch.save around the
        bytes would cost ten times the serialisation). A file that cannot be written (a full
        or read-only disk) is said in one line, and the run goes on: False."""
        buf = io.BytesIO()
        torch.save(payload if self.writes else {}, buf)
        data = buf.getbuffer()
        header = json.dumps({"format": FORMAT, "config": self.cfg_hash, "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()}).encode() + b"\n"
        self.last = time.perf_counter()
        if not self.writes:
            return True
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: (f.write(header), f.write(data)), binary=True)
        except OSError as e:
            if self.failing != write_failure(e):  # once per cause, not at every epoch
                log.warning("checkpoint %s not written (%s): the run goes on, and a resume "
                            "would start from the last one written", path, write_failure(e))
            self.failing = write_failure(e)
            return False
        if self.failing is not None:
            log.warning("checkpoints are written again (%s)", path)
            self.failing = None
        return True

    def _stop_if_requested(self, path: Path) -> None:
        signal_name = self.stop.signal
        if signal_name is not None:
            if self.failing is None:
                log.warning("%s: stopped after writing %s", signal_name, path)
            else:  # going on would not save the work either: the job is being stopped
                log.warning("%s: stopped; %s could not be written (%s)", signal_name, path,
                            self.failing)
            raise stop_now(signal_name)

    def files(self) -> List[Path]:
        return sorted(self.dir.glob("ckpt-*.pt")) if self.dir.is_dir() else []

    def latest(self) -> Optional[dict]:
        """The newest method checkpoint that is intact and belongs to this configuration."""
        for path in reversed(self.files()):
            payload = self._read(path, "trying an older one")
            if payload is not None:
                self.count = int(path.stem.rsplit("-", 1)[1])
                return payload
        return None

    def dense(self) -> Optional[dict]:
        """The dense training's checkpoint, if there is a usable one."""
        path = self.dir / self.DENSE
        return self._read(path, "the dense training starts over") if path.is_file() else None

    def _read(self, path: Path, instead: str) -> Optional[dict]:
        """A checkpoint's payload (with its `path`), or None with a warning that says why not."""
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
            if len(data) < header.get("bytes", len(data)):
                raise ValueError(f"it is truncated ({len(data)} of {header['bytes']} bytes: a "
                                 "partial copy or a full disk)")
            if hashlib.sha256(data).hexdigest() != header.get("sha256"):
                raise ValueError("its content hash does not match: the file is corrupt")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:
            log.warning("checkpoint %s is unusable (%s): %s; %s", path, first_line(e), instead,
                        self.set_aside(path))
            return None
        payload["path"] = str(path)
        return payload

    def set_aside(self, path: Path) -> str:
        """Move a checkpoint this run does not use into checkpoints/refused/ (never deleted:
        the rotation of this run's own files cannot reach it); where it went, as words."""
        if not self.writes:
            return "kept"
        refused = self.dir / REFUSED
        refused.mkdir(exist_ok=True)
        target, n = refused / path.name, 1
        while target.exists():
            target, n = refused / f"{path.stem}.{n}{path.suffix}", n + 1
        path.replace(target)
        return f"kept as {target}"

    def set_aside_all(self, why: str) -> None:
        """A fresh run (checkpoint.restart=true) in a folder with an interrupted run's
        checkpoints: each is moved to refused/, said in one line."""
        found = interrupted_checkpoints(self.dir.parent)
        if found and self.writes:
            for path in found:
                self.set_aside(path)
            log.warning("%s: the %d checkpoint(s) of the run that was here are kept in %s",
                        why, len(found), self.dir / REFUSED)

    def clear(self) -> None:
        """This run's checkpoints, once it has finished (refused/ stays)."""
        for path in [*self.files(), self.dir / self.DENSE]:
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


def loaders_of(data) -> list:
    """The loaders whose generators a checkpoint saves and restores."""
    return [data.train, data.val, data.test]


def capture(ctx, fit: Optional[dict] = None) -> dict:
    """Everything needed to continue the run from here: each piece of the context that its
    declaration says a checkpoint keeps (methods.context.piece), and the fit in progress."""
    state = {"fit": fit}
    for f in dataclasses.fields(ctx):
        saved = f.metadata.get("saved")
        if saved == "value":
            state[f.name] = getattr(ctx, f.name)
        elif saved == "state_dict":
            state[f.name] = getattr(ctx, f.name).state_dict()
        elif saved is not None:
            state[f.name] = saved[0](ctx)
    return state


def restore(ctx, state: dict) -> None:
    """Put the run back where `capture` left it, piece by piece in declaration order."""
    for f in dataclasses.fields(ctx):
        saved = f.metadata.get("saved")
        if saved == "value":
            setattr(ctx, f.name, state[f.name])
        elif saved == "state_dict":
            getattr(ctx, f.name).load_state_dict(state[f.name])
        elif saved is not None:
            saved[1](ctx, state[f.name])
    log.info("resumed from %s (%d operations replayed)", state.get("path"),
             len(state["replay"]["journal"]))


class Replay:
    """A method's operations run through the journal. While a resumed run replays, a journaled
    operation returns its recorded result instead of running; where replay ends, the
    checkpoint's state is restored first (`restore`). Without a journal (a fork's side work)
    operations simply run. Operations inside another run directly, unjournaled."""

    def __init__(self, journal: Optional[Journal] = None,
                 checkpointer: Optional[Checkpointer] = None):
        self.journal = journal
        self.checkpointer = checkpointer
        self._fit_state: Optional[dict] = None

    def state_dict(self) -> dict:
        """The journal so far (a resumed run opens its Journal from it)."""
        return {"journal": list(self.journal.results) if self.journal is not None else []}

    def load_state_dict(self, state: dict) -> None:
        """Nothing: the resumed run's journal was opened from this state."""

    def op(self, fn: Callable[[], Any], ctx, checkpoint: bool = False) -> Any:
        """Run `fn` as one operation of `ctx`'s run (the context whose state a checkpoint
        captures and a replay restores)."""
        j = self.journal
        if j is None:
            return fn()
        top = j.depth == 0  # a nested operation is part of the enclosing one
        if top:
            i = j.position
            j.position += 1
            if j.pending is not None and i < j.resume_at:  # replay: the recorded result
                if i == j.resume_at - 1:  # the last one before the checkpoint: the state it
                    self.finish(ctx)  # holds from here, for the code up to the next operation
                return from_journal(j.results[i])
            self.finish(ctx)
        j.depth += 1
        try:
            result = fn()
        finally:
            j.depth -= 1
        if top:
            j.results.append(to_journal(result))
            if checkpoint:
                self.checkpoint(ctx)
        return result

    def finish(self, ctx) -> None:
        """Restore the checkpoint's state if a resumed run's replay has not yet done so."""
        j = self.journal
        if j is not None and j.pending is not None:
            state, j.pending = j.pending, None
            restore(ctx, state)
            self._fit_state = state["fit"]

    def checkpoint(self, ctx, fit: Optional[dict] = None) -> None:
        if self.checkpointer is not None and self.journal is not None and self.checkpointer.due():
            self.checkpointer.save(capture(ctx, fit))

    def in_top_level_op(self) -> bool:
        """Inside a journaled operation that is not nested in another one."""
        return self.journal is not None and self.journal.depth == 1

    def take_fit_state(self) -> Optional[dict]:
        """The state of the fit a resumed run was in (once; then None)."""
        state, self._fit_state = self._fit_state, None
        return state
