"""The run store: one folder per run, written so that a crash or a kill never leaves a broken file.

This module is the only code that knows where things live (RunFiles for a run folder, RunStore for the
store-level folders):

runs/<run_id>/
  .lock           flock held by the one process executing the run
  config.json     canonical RunConfig (written once)
  status.json     state, pid, host, node, started, heartbeat, ended, attempt, layers, progress, error, traceback
  stop            present while someone asks the run to stop (healcore cancel); the run ends interrupted
  metrics.jsonl   one line per finished epoch, append-only; readers keep the last line of each epoch
                  and skip a damaged line
  probe.json      the pre-fine-tuning damage probe
  summary.json    best epoch, selected metrics, probe, corruption report, data sizes, timings, weight movement
  analysis.npz    per-layer representations of a fixed test sample at the best epoch, CKA to the pretrained model
  analysis-cka-vs-<run_id>.npy  debiased CKA to the clean fine-tuned run <run_id> (a cache, made by analysis.py)
  features/       before.npz, best.npz: X, labels, predictions (numpy, no pickle);
                  <which>.<tsne|umap>.npz: projection caches
  checkpoint/     latest.json -> epoch-N/ (safetensors + JSON); removed when the run completes
  log.txt

runs/.grids/      <name>.json (a grid's record), <name>.heartbeat (its driver's sign of life), <name>.log,
                  specs/<name>.yaml (grids started from the dashboard), workers/ (each local worker's log)
runs/.cache/      tokens/ (tokenisation cache)

Every JSON file is written to a temp file in the same folder and renamed over the target. One process
executes a run at a time: it holds an exclusive flock on <run>/.lock for the whole run.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healcore.core.config import DATA_OPTION_FIELDS, RunConfig, valid_run_id
from healcore.core.errors import HealcoreError, RunBusyError, StoreError
from healcore.core.model_facts import safetensors_problem
from healcore.core.paths import fits
from healcore.store.io import (HOST, append_json_line, append_text, atomic_write_bytes, atomic_write_json,
                               atomic_write_npz, epoch_rows, now, npz_problem, pid_alive, read_json,
                               read_json_checked, read_npz_checked)

STATES = ("queued", "running", "completed", "failed", "interrupted")
RESERVE_BYTES = 64 * 1024  # enough for a failed status.json and a log line when the disk fills
HEARTBEAT_S = 10.0  # how often a live run touches status.json (and looks for a stop request)
STALE_S = 90.0  # a 'running' status with no heartbeat for this long is read as interrupted


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
        try:
            beat = float(status.get("heartbeat", 0) or 0)
        except (TypeError, ValueError):
            beat = 0.0
        if at - beat > STALE_S:
            return "interrupted"
    return state if state in STATES else "queued"


# ------------------------------------------------------------------------------------------ layout
_STATUS, _SUMMARY, _GRIDS = "status.json", "summary.json", ".grids"


class RunFiles:
    """Where each part of one run folder lives."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.lock = run_dir / ".lock"
        self.config = run_dir / "config.json"
        self.status = run_dir / _STATUS
        self.stop_request = run_dir / "stop"
        self.metrics = run_dir / "metrics.jsonl"
        self.probe = run_dir / "probe.json"
        self.summary = run_dir / _SUMMARY
        self.analysis = run_dir / "analysis.npz"
        self.log = run_dir / "log.txt"
        self.checkpoints = run_dir / "checkpoint"
        self.reserve = run_dir / ".reserve"  # space held while the run is live (RunHandle.reserve_space)

    def features(self, which: str) -> Path:
        """Pooled features of the stored test sample: which = before (the corrupted body) | best (best epoch)."""
        return self.dir / "features" / f"{which}.npz"

    def confusion(self, epoch: int) -> Path:
        """The confusion matrices of an epoch with more classes than fit a metrics line (sparse, compressed)."""
        return self.dir / "confusion" / f"epoch-{epoch}.npz"

    def similarity_cache(self, other_run_id: str) -> Path:
        """CKA of this run's layers against another run's (analysis.py, debiased), cached. (The name changed with
        the estimator: a cache of the older, biased one is never read.)"""
        return self.dir / f"analysis-cka-vs-{other_run_id}.npy"

    def projection(self, which: str, method: str) -> Path:
        """The 2-D projection cache of features(which)."""
        return self.dir / "features" / f"{which}.{method}.npz"


@dataclass
class StoredRun:
    """Everything small a reader needs from one run folder, and which of its files were damaged."""

    run_id: str
    config: dict | None
    status: dict
    summary: dict | None
    probe: dict | None
    damaged: list[str] = field(default_factory=list)  # "summary.json: not valid JSON (...)"

    @property
    def state(self) -> str:
        return effective_state(self.status)


def fingerprint(root: str | Path) -> tuple[int, float]:
    """(run folders, newest status/summary/grid-record time): changes whenever a reader's tables would; a scan of
    directory entries, no file read (the dashboard's cache key)."""
    p = Path(root)
    if not p.is_dir():
        return (0, 0.0)
    latest, n = 0.0, 0
    with os.scandir(p) as entries:
        for e in entries:
            if e.is_dir() and not e.name.startswith("."):
                n += 1
                for name in (_STATUS, _SUMMARY):
                    try:
                        latest = max(latest, os.stat(os.path.join(e.path, name)).st_mtime)
                    except OSError:
                        pass
    for rec in (p / _GRIDS).glob("*.json"):
        try:
            latest = max(latest, rec.stat().st_mtime)
        except OSError:
            pass
    return (n, latest)


# ------------------------------------------------------------------------------------------ store
class RunStore:
    def __init__(self, root: str | Path = "runs"):
        fits(Path(root), "runs folder (--store)")  # a path the system cannot hold is one line, not an OSError
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

    # -- store-level folders -----------------------------------------------------------------------
    @property
    def grids_dir(self) -> Path:
        return self.root / _GRIDS

    def grid_record_path(self, name: str) -> Path:
        return self.grids_dir / f"{name}.json"

    def grid_heartbeat_path(self, name: str) -> Path:
        """Touched by a running grid's driver every HEARTBEAT_S: readers on other hosts tell a live grid by it."""
        return self.grids_dir / f"{name}.heartbeat"

    def grid_lock_path(self, name: str) -> Path:
        """flock held by a grid's driver for its whole life: one driver per grid name and store at a time."""
        return self.grids_dir / f"{name}.lock"

    def grid_log_path(self, name: str) -> Path:
        return self.grids_dir / f"{name}.log"

    def grid_spec_path(self, name: str) -> Path:
        return self.grids_dir / "specs" / f"{name}.yaml"

    @property
    def worker_logs(self) -> Path:
        """Each local worker's log (what it printed; the last line explains a crash)."""
        return self.grids_dir / "workers"

    @property
    def tokens_cache(self) -> Path:
        return self.root / ".cache" / "tokens"

    # -- runs ----------------------------------------------------------------------------------------
    def path(self, run_id: str) -> Path:
        if not valid_run_id(run_id):
            raise StoreError(f"invalid run id {run_id!r}; run ids use letters, digits, '.', '_' and '-' only")
        p = (self.root / run_id).resolve()
        if p.parent != self.root:
            raise StoreError(f"run id {run_id!r} points outside the store")
        return p

    def files(self, run_id: str) -> RunFiles:
        return RunFiles(self.path(run_id))

    def has_run(self, run_id: str) -> bool:
        return RunFiles(self.root / run_id).config.is_file() if valid_run_id(run_id) else False

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and valid_run_id(p.name) and RunFiles(p).config.is_file())

    def looks_like_a_store(self) -> bool:
        """A folder healcore can read as a run store: missing or empty (a new store), or holding run folders or grid
        records. A folder of other things (a home directory, a dataset) is not one."""
        if not self.root.is_dir():
            return True
        entries = [p for p in self.root.iterdir() if not p.name.startswith(".") or p.name == ".grids"]
        return not entries or (self.root / ".grids").is_dir() or bool(self.run_ids()) or \
            all(p.name in ("README.md",) for p in entries)

    def config(self, run_id: str) -> dict | None:
        return read_json(self.files(run_id).config)

    def status(self, run_id: str) -> dict:
        st = read_json(self.files(run_id).status, {})
        st = st if isinstance(st, dict) else {}
        return {**st, "effective_state": effective_state(st)}

    def summary(self, run_id: str) -> dict | None:
        return read_json(self.files(run_id).summary)

    def epochs(self, run_id: str) -> list[dict]:
        return epoch_rows(self.files(run_id).metrics)

    def confusion(self, run_id: str, row: dict, split: str = "test"):
        """An epoch's confusion matrix as a numpy array of counts: inline in its metrics line (up to 50 classes, and
        every run stored before the matrices moved out), or from the file the line names; None when unreadable."""
        import numpy as np

        value = (row.get(split) or {}).get("confusion")
        if isinstance(value, list):
            return np.asarray(value, dtype=np.int64)
        if not isinstance(value, str):
            return None
        arrays, _ = read_npz_checked(self.files(run_id).dir / value)
        if arrays is None or f"{split}_rows" not in arrays:
            return None
        n = int(arrays[f"{split}_classes"])
        matrix = np.zeros((n, n), dtype=np.int64)
        np.add.at(matrix, (arrays[f"{split}_rows"], arrays[f"{split}_cols"]), arrays[f"{split}_counts"])
        return matrix

    def read(self, run_id: str) -> StoredRun:
        """A run's small files, each read once; a damaged file is reported, never raised."""
        files = self.files(run_id)
        values, damaged = {}, []
        for name, path in (("config", files.config), ("status", files.status), ("summary", files.summary),
                           ("probe", files.probe)):
            value, problem = read_json_checked(path)
            if problem is None and value is not None and not isinstance(value, dict):
                problem = f"holds a JSON {type(value).__name__}, not an object"
            if problem:
                damaged.append(f"{path.name}: {problem}")
                value = None
            values[name] = value
        status = values["status"] or {}
        if status and status.get("state") not in STATES:
            damaged.append(f"status.json: unknown state {status.get('state')!r}")
        if status.get("state") == "completed" and values["summary"] is None and not any(
                d.startswith("summary.json") for d in damaged):
            damaged.append("summary.json: missing although the run completed")
        if status.get("state") == "completed" and isinstance(values["summary"], dict):
            damaged += self.record_problems(run_id, values["summary"])
        damaged += self.artefact_problems(run_id)
        return StoredRun(run_id, values["config"], status, values["summary"], values["probe"], damaged)

    def record_problems(self, run_id: str, summary: dict) -> list[str]:
        """A completed run's epoch records that are lost: metrics.jsonl lines (a torn line of a resumed epoch is
        normal, an epoch with no readable line is not) and the confusion files those lines name."""
        files = self.files(run_id)
        ran = len(summary.get("losses") or [])
        rows = epoch_rows(files.metrics)
        missing = sorted(set(range(1, ran + 1)) - {r["epoch"] for r in rows})
        out = []
        if missing:
            what = "missing" if not files.metrics.is_file() else f"no readable line for epoch(s) {missing[:5]}"
            out.append(f"metrics.jsonl: {what}")
        named = {r[split].get("confusion") for r in rows for split in ("validation", "test")
                 if isinstance(r.get(split), dict) and isinstance(r[split].get("confusion"), str)}
        for name in sorted(named):
            problem = npz_problem(files.dir / name) or (None if (files.dir / name).is_file() else "missing")
            if problem:
                out.append(f"{name}: {problem}")
        return out

    def artefact_problems(self, run_id: str) -> list[str]:
        """The run's arrays (features, layer analysis) and checkpoint that cannot be read, each with why (cheap
        checks: a zip's end, a safetensors header)."""
        files, out = self.files(run_id), []
        for path in (files.features("best"), files.features("before"), files.analysis):
            problem = npz_problem(path)
            if problem:
                out.append(f"{path.relative_to(files.dir)}: {problem}")
        problem = checkpoint_problem(files)
        if problem:
            out.append(problem)
        return out

    def experiments(self) -> dict[str, RunConfig]:
        """experiment id -> stored config, of every run folder (RunConfig.experiment_id, with the layer count the
        run recorded): finds a run stored under another spelling of the same layers (bottom:50% for bottom:3) and,
        where the run recorded its data options' one spelling, of the same columns and splits (text_column review
        for a blank one that found review): each run is listed under both ids."""
        out = {}
        for run_id in self.run_ids():
            config, status = read_json(self.files(run_id).config), read_json(self.files(run_id).status, {})
            try:
                cfg = RunConfig.from_stored(config)
            except HealcoreError:
                continue
            status = status if isinstance(status, dict) else {}
            L = status.get("num_layers") if isinstance(status.get("num_layers"), int) else None
            out.setdefault(cfg.experiment_id(L), cfg)
            options = recorded_options(status)
            if options is not None:
                out.setdefault(cfg.experiment_id(L, options), cfg)
        return out

    def request_stop(self, run_id: str) -> None:
        """Ask a run to stop, wherever it executes: it looks for this file with every heartbeat."""
        files = self.files(run_id)
        if files.dir.is_dir():
            atomic_write_bytes(files.stop_request, f"{HOST} {now()}\n".encode())

    def open_run(self, config: RunConfig) -> "RunHandle":
        """Create (or reopen) the run folder and take its lock. RunBusyError if another process has it."""
        self.ensure()
        files = self.files(config.run_id)
        existing, problem = read_json_checked(files.config)
        if existing is not None and existing != config.to_dict() and \
                RunConfig.from_stored(existing).canonical_json() != config.canonical_json():
            raise StoreError(f"run folder {files.dir} holds a different config; it was not touched")
        created = not files.dir.exists()
        files.dir.mkdir(exist_ok=True)
        fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            st = read_json(files.status, {}) or {}
            raise RunBusyError(f"run {config.run_id} is already running (pid {st.get('pid')} on {st.get('host')})") from None
        handle = RunHandle(self, config, files, fd)
        try:
            if problem:  # the folder's name is this config's hash: the config asked for is the one it held
                handle.set_aside("config.json", problem)
            if existing is None:
                atomic_write_json(files.config, config.to_dict())
            if problem:
                handle.log("config.json written again from the config asked for (its hash names this folder)")
        except OSError:  # a full disk before the run began leaves no folder behind
            handle.close()
            if created:
                shutil.rmtree(files.dir, ignore_errors=True)
            raise
        return handle


class RunHandle:
    """A run folder held by this process: status, heartbeat, stop requests, metrics, artefacts, checkpoints."""

    def __init__(self, store: RunStore, config: RunConfig, files: RunFiles, lock_fd: int):
        self.store, self.config, self.files, self._fd = store, config, files, lock_fd
        self.dir = files.dir
        self._status_lock = threading.Lock()
        self._stop = threading.Event()
        self.stop_requested = threading.Event()  # set when a stop file appears (healcore cancel, any host)
        self.space_needed: int | None = None  # bytes the run writes at most, once known (a full disk's message)
        self._beat: threading.Thread | None = None

    # -- status ----------------------------------------------------------------------------------
    def read_status(self) -> dict:
        st = read_json(self.files.status, {})
        return st if isinstance(st, dict) else {}

    def set_status(self, state: str, **fields: Any) -> None:
        assert state in STATES
        with self._status_lock:
            st = self.read_status()
            st.update(fields, state=state, pid=os.getpid(), host=HOST, heartbeat=now())
            if state == "running":
                for stale in ("error", "traceback", "ended", "progress"):
                    st.pop(stale, None)
                self.files.stop_request.unlink(missing_ok=True)  # an old request must not stop a new attempt
            atomic_write_json(self.files.status, st)

    def update_status(self, **fields: Any) -> None:
        """Facts about the attempt under way (its layers, say) merged into status.json, the state unchanged."""
        with self._status_lock:
            st = self.read_status()
            st.update(fields)
            atomic_write_json(self.files.status, st)

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                if self.files.stop_request.exists():
                    self.stop_requested.set()
                with self._status_lock:
                    st = self.read_status()
                    if st.get("state") != "running":
                        return
                    st["heartbeat"] = now()
                    try:
                        atomic_write_json(self.files.status, st)
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
            atomic_write_json(self.files.status, st)

    # -- records ---------------------------------------------------------------------------------
    def append_metrics(self, row: dict) -> None:
        """The epoch's line of metrics.jsonl; a sparse confusion matrix (many classes) goes to
        confusion/epoch-N.npz first, the line naming that file (readers: RunStore.confusion)."""
        sparse = {split: row[split]["confusion"] for split in ("validation", "test")
                  if isinstance(row.get(split), dict) and isinstance(row[split].get("confusion"), dict)}
        if sparse:
            path = self.files.confusion(int(row["epoch"]))
            atomic_write_npz(path, compressed=True, **{f"{split}_{k}": v for split, m in sparse.items()
                                                     for k, v in m.items()})
            row = {**row, **{split: {**row[split], "confusion": path.relative_to(self.dir).as_posix()}
                             for split in sparse}}
        append_json_line(self.files.metrics, row)

    def epochs(self) -> list[dict]:
        return epoch_rows(self.files.metrics)

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.files.summary, summary)

    def read_summary(self) -> dict | None:
        return read_json(self.files.summary)

    def write_probe(self, probe: dict) -> None:
        atomic_write_json(self.files.probe, probe)

    def read_probe(self) -> dict | None:
        return read_json(self.files.probe)

    def save_features(self, which: str, **arrays) -> None:
        atomic_write_npz(self.files.features(which), **arrays)

    def save_analysis(self, **arrays) -> None:
        atomic_write_npz(self.files.analysis, **arrays)

    def log(self, message: str) -> None:
        append_text(self.files.log, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    # -- checkpoints -----------------------------------------------------------------------------
    def new_checkpoint_dir(self, epoch: int) -> Path:
        d = self.files.checkpoints / f"epoch-{epoch}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def commit_checkpoint(self, epoch: int) -> None:
        """Point latest.json at epoch-N (atomic), then remove older checkpoint folders."""
        atomic_write_json(self.files.checkpoints / "latest.json", {"epoch": epoch, "dir": f"epoch-{epoch}"})
        for d in self.files.checkpoints.glob("epoch-*"):
            if d.name != f"epoch-{epoch}" and not d.name.endswith(".damaged"):
                shutil.rmtree(d, ignore_errors=True)

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        """(epoch, folder) of the last whole checkpoint. A damaged one is set aside (epoch-N.damaged) and logged,
        never loaded (a torn checkpoint would fail every resume after it)."""
        problem = checkpoint_problem(self.files)
        if problem:
            self.set_aside_checkpoint(problem)
            return None
        pointer = read_json(self.files.checkpoints / "latest.json")
        if not isinstance(pointer, dict) or "dir" not in pointer:
            return None
        d = self.files.checkpoints / str(pointer["dir"])
        return (int(pointer["epoch"]), d) if d.is_dir() else None

    def set_aside_checkpoint(self, why: str) -> None:
        """Move the checkpoint out of the way (kept as epoch-N.damaged to look at), so the run starts again."""
        folder = self.files.checkpoints
        pointer = read_json(folder / "latest.json")
        name = str(pointer.get("dir")) if isinstance(pointer, dict) and pointer.get("dir") else None
        if name and (folder / name).is_dir():
            target = folder / f"{name}.damaged"
            shutil.rmtree(target, ignore_errors=True)
            (folder / name).rename(target)
        (folder / "latest.json").unlink(missing_ok=True)
        self.log(f"{why}: set aside; the run starts again from scratch")

    def set_aside(self, relative: str, why: str) -> None:
        """A damaged file of the run moved to <name>.damaged (so nothing reads it, and it can be looked at)."""
        path = self.files.dir / relative
        if path.exists():
            path.replace(path.with_name(path.name + ".damaged"))
        self.log(f"{relative} is damaged ({why}): set aside")

    def reserve_space(self) -> None:
        """Hold a little disk space for the run's last words: on a full disk it is freed so that status.json can
        still say 'failed: disk full' (an unwritable status would read as an unexplained interruption)."""
        atomic_write_bytes(self.files.reserve, bytes(RESERVE_BYTES))

    def release_space(self) -> None:
        self.files.reserve.unlink(missing_ok=True)

    def drop_checkpoints(self) -> None:
        shutil.rmtree(self.files.checkpoints, ignore_errors=True)

    # -- end -------------------------------------------------------------------------------------
    def close(self) -> None:
        self.release_space()
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


def recorded_options(record: dict | None) -> dict[str, str] | None:
    """The data options' one spelling a run recorded (status.json's or summary.json's data `options`), or None."""
    options = (record or {}).get("data_options") if isinstance(record, dict) else None
    if isinstance(options, dict) and set(options) == set(DATA_OPTION_FIELDS) and \
            all(isinstance(v, str) for v in options.values()):
        return dict(options)
    return None


def damaged_results(damaged: list[str]) -> list[str]:
    """Of a run's damaged files (StoredRun.damaged), those a rerun writes again from scratch: all but the
    checkpoint's, which is set aside when the run resumes (RunHandle.latest_checkpoint)."""
    return [d for d in damaged if not d.startswith("checkpoint")]


def rerun_plan(damaged: list[str]) -> str:
    """What running a run again does, given its damaged files (healcore status says it; the engine's
    finished_summary and RunHandle.latest_checkpoint do it)."""
    if damaged_results(damaged):
        return ("its damaged files are set aside (as <name>.damaged) and the run starts again from scratch, "
                "writing them again")
    if damaged:
        return "its damaged checkpoint is set aside and the run starts again from scratch"
    return "nothing: its files are whole"


def checkpoint_problem(files: RunFiles) -> str | None:
    """Why the run's checkpoint cannot be resumed from (its pointer, its state, its tensors' headers), or None when
    there is none or it looks whole. Cheap: headers only."""
    folder = files.checkpoints
    if not (folder / "latest.json").exists():
        return None
    pointer, problem = read_json_checked(folder / "latest.json")
    if problem or not isinstance(pointer, dict) or "dir" not in pointer or "epoch" not in pointer:
        return f"checkpoint/latest.json: {problem or 'not a checkpoint pointer'}"
    d = folder / str(pointer["dir"])
    if not d.is_dir():
        return f"checkpoint/{pointer['dir']}: missing"
    _, problem = read_json_checked(d / "state.json")
    if problem or not (d / "state.json").is_file():
        return f"checkpoint/{d.name}/state.json: {problem or 'missing'}"
    for name in ("model.safetensors", "optimizer.safetensors"):
        problem = safetensors_problem(d / name) if (d / name).is_file() else "missing"
        if problem:
            return f"checkpoint/{d.name}/{name}: {problem}"
    return None
