"""Writing files so that a reader never sees half of one: a temp file beside the target, then an
atomic rename. Every file a run or a checkpoint leaves is written through `atomic_write`."""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, List


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: Path) -> str:
    """A temp file next to `path` (same filesystem, so os.replace is atomic), with the permissions
    a plain open() would give it (mkstemp makes files private)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return tmp


def atomic_write(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """`write(f)` into a temp file beside `path`, synced, then renamed over `path`; on any
    failure the temp file is removed and `path` is untouched."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, rows: List[dict]) -> None:
    """Rows with possibly different keys: the header is the union, in first-seen order."""
    fields: List[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(path, write)
