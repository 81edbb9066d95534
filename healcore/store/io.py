"""Writing and reading a store's files so that a crash, a kill or a full disk never leaves a broken one.

One writer: every file healcore writes (run files, checkpoints, arrays, reports and their figures, exports) goes
through atomic_write_bytes: a temp file in the same folder, fsynced, renamed over the target, so a failed write
leaves the old file as it was; a full disk or quota is one line (DiskFullError) naming the disk and what was being
written. One reader per kind that never raises: a damaged file is reported with its reason (read_json_checked,
read_npz_checked, npz_problem), whatever the library underneath raises. Also the process facts the store needs: this
host, pid liveness, locks.
"""
from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

from healcore.core.errors import DiskFullError, StoreError, first_line

HOST = socket.gethostname()


def now() -> float:
    return time.time()


# ------------------------------------------------------------------------------------------ atomic io
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: the old file stays until the new one is on disk."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in NO_SPACE:
            raise disk_full(path, len(data), err) from None
        raise
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def disk_full(path: Path, size: int, err: OSError) -> DiskFullError:
    """The one line a full disk (or quota) costs: which disk, what was being written, how much it needed."""
    mount = mount_point(path)
    try:
        free = shutil.disk_usage(mount).free
    except OSError:
        free = 0
    what = "no quota left" if err.errno == errno.EDQUOT else "disk full"
    return DiskFullError(f"{what} on {mount} ({human(free)} free) writing {Path(path).name} ({human(size)}); free "
                         f"space and run the same command again")


def mount_point(path: Path) -> Path:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def human(n: float) -> str:
    """A size in words: 3.2 MB, 1.4 GB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, allow_nan=True) + "\n").encode())


def atomic_write_npz(path: Path, compressed: bool = False, **arrays) -> None:
    import numpy as np

    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def json_line(row: dict) -> str:
    """One line of an append-only JSON log (metrics.jsonl)."""
    return json.dumps(row, sort_keys=True, allow_nan=True) + "\n"


def append_json_line(path: Path, row: dict) -> None:
    """Append one line and fsync: a kill or a full disk mid-write leaves at most a partial last line, which readers
    skip (the line is written again when the epoch is)."""
    line = json_line(row)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        if err.errno in NO_SPACE:
            raise disk_full(path, len(line), err) from None
        raise


def append_text(path: Path, text: str) -> None:
    """Append to a log; a full disk loses the line, never the run (a log is no result)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        pass


def update_json(path: Path, **fields) -> None:
    """Set fields of a JSON object file (a grid's record), keeping the others; written atomically."""
    current = read_json(path, {}) or {}
    current.update(fields)
    atomic_write_json(path, current)


def read_npz(path: Path) -> dict | None:
    """The arrays of an .npz file (never pickled objects), or None when it is missing or unreadable."""
    return read_npz_checked(path)[0]


def read_npz_checked(path: Path) -> tuple[dict | None, str | None]:
    """(arrays, None) for a readable .npz, (None, None) for a missing one, (None, why) for a damaged one, whatever
    numpy and zipfile raise (BadZipFile, EOFError, ValueError, OSError, a CRC error...)."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, None
    except Exception as err:  # noqa: BLE001 - every way an archive can be broken is one answer: damaged
        return None, f"unreadable archive ({type(err).__name__}: {first_line(err)[:80]})"


ZIP_END = b"PK\x05\x06"  # a zip's end-of-directory record: the last 22 bytes of every .npz numpy writes


def npz_problem(path: Path) -> str | None:
    """Why an .npz cannot be read, from its end alone (cheap enough for every run of a store: a truncated or garbage
    file has no zip directory at its end); None when it looks whole or is missing."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() >= 22:
                f.seek(-22, os.SEEK_END)
                if f.read(4) == ZIP_END:
                    return None
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    try:  # an archive with a comment, or a broken one: ask zipfile
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except Exception as err:  # noqa: BLE001 - BadZipFile, OSError, EOFError...: damaged
        return f"unreadable archive ({type(err).__name__}: {first_line(err)[:80]})"
    return None if names else "an empty archive"


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
