"""Writing files so that a reader never sees half of one: a temp file beside the target, then an
atomic rename. Every file a run or a checkpoint leaves is written through `atomic_write`."""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Callable, List, Optional


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


WRITE_FAILURES = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
                  errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded",
                  errno.EPERM: "operation not permitted"}


def write_failure(e: OSError) -> str:
    """What stopped a write, in words ("no space left on device", "read-only file system")."""
    return WRITE_FAILURES.get(e.errno) or e.strerror or str(e)


TRUNCATED = "it is truncated (it ends before its zip directory: a partial copy or a full disk)"


def torch_file_problem(path: str) -> Optional[str]:
    """None if the file is whole as torch.save writes it (a zip archive with its directory, or a
    legacy pickle); else what it is instead, read from its bytes: a check that costs no torch
    import."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04"):
        return None if zipfile.is_zipfile(path) else TRUNCATED
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return None
    if not head:
        return "it is empty"
    if head.startswith(b"\x1f\x8b"):
        return "it is a gzip archive: unpack it first"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {head[:4].hex(' ')}"
    if text.lstrip().startswith(("{", "[")):
        return "it is a JSON or text file"
    return "it is a text file"
