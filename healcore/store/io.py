"""Writing and reading a store's files so that a crash, a kill or a full disk never leaves a broken one.

Every file is written to a temp file in the same folder and renamed over the target (atomic_write_*); readers
report a damaged file instead of raising. Also the process facts the store needs: this host, pid liveness, locks.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from healcore.core.errors import StoreError, first_line

HOST = socket.gethostname()


def now() -> float:
    return time.time()


# ------------------------------------------------------------------------------------------ atomic io
def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, allow_nan=True) + "\n").encode())


def atomic_write_npz(path: Path, **arrays) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def json_line(row: dict) -> str:
    """One line of an append-only JSON log (metrics.jsonl)."""
    return json.dumps(row, sort_keys=True, allow_nan=True) + "\n"


def append_json_line(path: Path, row: dict) -> None:
    """Append one line and fsync: a kill mid-write leaves at most a partial last line, which readers skip."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json_line(row))
        f.flush()
        os.fsync(f.fileno())


def update_json(path: Path, **fields) -> None:
    """Set fields of a JSON object file (a grid's record), keeping the others; written atomically."""
    current = read_json(path, {}) or {}
    current.update(fields)
    atomic_write_json(path, current)


def read_npz(path: Path) -> dict | None:
    """The arrays of an .npz file (never pickled objects), or None when it is missing or unreadable."""
    import numpy as np

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def read_json_checked(path: Path) -> tuple[Any, str | None]:
    """(value, None) for a readable file, (None, None) for a missing one, (None, why) for a damaged one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as err:
        return None, f"unreadable ({getattr(err, 'strerror', None) or err})"
    try:
        return json.loads(text), None
    except ValueError as err:
        return None, f"not valid JSON ({'empty file' if not text.strip() else first_line(err)})"


def read_json(path: Path, default: Any = None) -> Any:
    value, _ = read_json_checked(path)
    return default if value is None else value


def read_jsonl(path: Path) -> list[dict]:
    """Lines of an append-only log; a partial or damaged line (a kill mid-write) is skipped."""
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except OSError:
        pass
    return rows


def epoch_rows(path: Path) -> list[dict]:
    """metrics.jsonl with one row per epoch (the last written wins: a resumed epoch is re-logged)."""
    by_epoch: dict[int, dict] = {}
    for row in read_jsonl(path):
        if isinstance(row.get("epoch"), int):
            by_epoch[row["epoch"]] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def pid_alive(pid: int) -> bool:
    """Whether a process of this host runs: a zombie (dead, not yet reaped, as a killed worker whose parent died
    too can stay in a container without an init) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def try_lock(path: Path) -> int | None:
    """An exclusive flock on `path` (created), its descriptor; None when another process holds it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise StoreError(f"cannot create {path} ({err.strerror or err}); the run store must be a writable folder") \
            from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def release_lock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    except OSError:
        pass
