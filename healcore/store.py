"""The run store: one folder per run, written so that a crash or a kill never leaves a broken file.

runs/<run_id>/
  config.json     canonical RunConfig (written once)
  status.json     state, pid, host, started, heartbeat, ended, error, traceback (atomic rewrite)
  metrics.jsonl   one line per finished epoch, append-only; readers keep the last line of each epoch
                  and skip a partial last line
  summary.json    best epoch, selected metrics, probe, corruption report, data sizes, timings
  features/       before.npz, best.npz: X, labels, predictions (numpy, no pickle)
  checkpoint/     latest.json -> epoch-N/ (safetensors + JSON); removed when the run completes
  log.txt

Every JSON file is written to a temp file in the same folder and renamed over the target. One process
executes a run at a time: it holds an exclusive flock on <run>/.lock for the whole run.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from .config import RunConfig, valid_run_id
from .errors import RunBusyError, StoreError

STATES = ("queued", "running", "completed", "failed", "interrupted")
HEARTBEAT_S = 10.0  # how often a live run touches status.json
STALE_S = 90.0  # a 'running' status with no heartbeat for this long is read as interrupted
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


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def effective_state(status: dict | None, at: float | None = None) -> str:
    """The state a reader should believe: a 'running' run whose process is gone is 'interrupted'."""
    if not status:
        return "queued"
    state = status.get("state", "queued")
    if state == "running":
        at = now() if at is None else at
        pid, host = status.get("pid"), status.get("host")
        if host == HOST and isinstance(pid, int) and not pid_alive(pid):
            return "interrupted"
        if at - float(status.get("heartbeat", 0) or 0) > STALE_S:
            return "interrupted"
    return state


# ------------------------------------------------------------------------------------------ store
class RunStore:
    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"runs folder {self.root} is a file; pass --store a folder path")

    def ensure(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create runs folder {self.root} ({err.strerror}); choose a writable --store") from None
        if not os.access(self.root, os.W_OK):
            raise StoreError(f"runs folder {self.root} is not writable; fix its permissions or choose another --store")

    def path(self, run_id: str) -> Path:
        if not valid_run_id(run_id):
            raise StoreError(f"invalid run id {run_id!r}; run ids use letters, digits, '.', '_' and '-' only")
        p = (self.root / run_id).resolve()
        if p.parent != self.root:
            raise StoreError(f"run id {run_id!r} points outside the store")
        return p

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and valid_run_id(p.name) and (p / "config.json").is_file())

    def config(self, run_id: str) -> dict | None:
        return read_json(self.path(run_id) / "config.json")

    def status(self, run_id: str) -> dict:
        st = read_json(self.path(run_id) / "status.json", {}) or {}
        return {**st, "effective_state": effective_state(st)}

    def summary(self, run_id: str) -> dict | None:
        return read_json(self.path(run_id) / "summary.json")

    def epochs(self, run_id: str) -> list[dict]:
        return epoch_rows(self.path(run_id) / "metrics.jsonl")

    def is_completed(self, run_id: str) -> bool:
        try:
            return (read_json(self.path(run_id) / "status.json", {}) or {}).get("state") == "completed"
        except StoreError:
            return False

    def open_run(self, config: RunConfig) -> "RunHandle":
        """Create (or reopen) the run folder and take its lock. RunBusyError if another process has it."""
        self.ensure()
        run_dir = self.path(config.run_id)
        existing = read_json(run_dir / "config.json")
        if existing is not None and existing != config.to_dict() and \
                RunConfig.from_dict(existing).canonical_json() != config.canonical_json():
            raise StoreError(f"run folder {run_dir} holds a different config; it was not touched")
        run_dir.mkdir(exist_ok=True)
        fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            st = read_json(run_dir / "status.json", {}) or {}
            raise RunBusyError(f"run {config.run_id} is already running (pid {st.get('pid')} on {st.get('host')})") from None
        if existing is None:
            atomic_write_json(run_dir / "config.json", config.to_dict())
        return RunHandle(self, config, run_dir, fd)


class RunHandle:
    """A run folder held by this process: status, heartbeat, metrics, artefacts, checkpoints."""

    def __init__(self, store: RunStore, config: RunConfig, run_dir: Path, lock_fd: int):
        self.store, self.config, self.dir, self._fd = store, config, run_dir, lock_fd
        self._status_lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- status ----------------------------------------------------------------------------------
    def read_status(self) -> dict:
        return read_json(self.dir / "status.json", {}) or {}

    def set_status(self, state: str, **fields: Any) -> None:
        assert state in STATES
        with self._status_lock:
            st = self.read_status()
            st.update(fields, state=state, pid=os.getpid(), host=HOST, heartbeat=now())
            if state == "running":
                st.pop("error", None)
                st.pop("traceback", None)
                st.pop("ended", None)
            atomic_write_json(self.dir / "status.json", st)

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                with self._status_lock:
                    st = self.read_status()
                    if st.get("state") != "running":
                        return
                    st["heartbeat"] = now()
                    try:
                        atomic_write_json(self.dir / "status.json", st)
                    except OSError:
                        pass  # a full disk must not kill the run from a side thread

        self._beat = threading.Thread(target=beat, name="healcore-heartbeat", daemon=True)
        self._beat.start()

    def progress(self, **fields: Any) -> None:
        """Small live facts (epoch, step, loss) merged into status.json for watchers."""
        with self._status_lock:
            st = self.read_status()
            st.setdefault("progress", {}).update(fields)
            st["heartbeat"] = now()
            atomic_write_json(self.dir / "status.json", st)

    # -- records ---------------------------------------------------------------------------------
    def append_metrics(self, row: dict) -> None:
        line = json.dumps(row, sort_keys=True, allow_nan=True) + "\n"
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def epochs(self) -> list[dict]:
        return epoch_rows(self.dir / "metrics.jsonl")

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.dir / "summary.json", summary)

    def read_summary(self) -> dict | None:
        return read_json(self.dir / "summary.json")

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.dir / name, obj)

    def read_json(self, name: str) -> Any:
        return read_json(self.dir / name)

    def save_features(self, name: str, **arrays) -> None:
        import io

        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.dir / "features" / f"{name}.npz", buf.getvalue())

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(f"{stamp} {message}\n")

    # -- checkpoints -----------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.dir / "checkpoint"

    def new_checkpoint_dir(self, epoch: int) -> Path:
        d = self.checkpoint_root / f"epoch-{epoch}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def commit_checkpoint(self, epoch: int) -> None:
        """Point latest.json at epoch-N (atomic), then remove older checkpoint folders."""
        atomic_write_json(self.checkpoint_root / "latest.json", {"epoch": epoch, "dir": f"epoch-{epoch}"})
        for d in self.checkpoint_root.glob("epoch-*"):
            if d.name != f"epoch-{epoch}":
                shutil.rmtree(d, ignore_errors=True)

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        pointer = read_json(self.checkpoint_root / "latest.json")
        if not pointer:
            return None
        d = self.checkpoint_root / pointer["dir"]
        return (int(pointer["epoch"]), d) if d.is_dir() else None

    def drop_checkpoints(self) -> None:
        shutil.rmtree(self.checkpoint_root, ignore_errors=True)

    # -- end -------------------------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        except OSError:
            pass

    def __enter__(self) -> "RunHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_runs(root: str | Path) -> Iterator[Path]:
    store = RunStore(root)
    for run_id in store.run_ids():
        yield store.path(run_id)
