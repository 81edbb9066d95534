"""Where a grid's runs execute on this machine: persistent local worker processes (Ray clusters: ray_cluster.py).

Both call the same recipe (run.execute). Locally, one `healcore worker` process per slot (a CPU worker, or a
share of a GPU) executes run after run and keeps what it loaded, so a short run does not pay for imports and
model loading again; a crash or an out-of-memory kill costs one run and the worker is replaced. Two grid
commands over one store never run a config twice at once: the run folder's lock decides, and the loser
reports the run as busy.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable

from healcore.core.config import RunConfig
from healcore.core.stopping import SignalFlag
from healcore.grids.execution import Execution, gpu_count
from healcore.core.fusion import fusion_groups
from healcore.grids.progress import fmt_duration
from healcore.store.runs import RunStore


def _progress_line(done: int, failed: int, busy: int, running: int, remaining: int, started: float,
                   durations: list[float], workers: int) -> str:
    eta = ""
    if durations:
        mean = sum(durations) / len(durations)
        eta = f", ETA {fmt_duration(mean * (remaining + running) / max(1, workers))}"
    return (f"[grid] {done} done, {running} running, {failed} failed, {busy} busy, {remaining} remaining, "
            f"{int(time.time() - started)}s elapsed{eta}")


def thread_share(workers: int, environ: dict | None = None) -> dict[str, str]:
    """Thread settings for each of `workers` concurrent runs: the machine's cores split between them.

    torch gives every process as many intra-op threads as there are cores, so N runs at once would ask for
    N x cores threads and spend the difference switching between them (bench/workers_threads.py measures it).
    A value the user set (OMP_NUM_THREADS in the environment) wins; one worker keeps torch's default."""
    environ = os.environ if environ is None else environ
    if workers <= 1 or environ.get("OMP_NUM_THREADS", "").strip():
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}


def gpu_slots(runs_per_gpu: int) -> list[str]:
    """One entry per run that may execute at once on the visible GPUs (each GPU repeated runs_per_gpu times)."""
    return [str(g) for g in range(gpu_count()) for _ in range(max(1, runs_per_gpu))]


# A worker whose memory grew by more than this since its first run is replaced after the run it is on: a leak
# in a library (or a GPU context that keeps growing) then costs one restart, not the grid.
WORKER_GROWTH_LIMIT = 3 << 30


class Worker:
    """One `healcore worker` process, pinned to a GPU slot (or none), executing the runs it is sent."""

    def __init__(self, store: RunStore, slot: str | None, threads: dict[str, str], log: Path, process_per_run: bool):
        env = {**os.environ, **threads}
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as log_file:
            self.proc = subprocess.Popen([sys.executable, "-m", "healcore", "--store", str(store.root), "worker"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, env=env,
                                         text=True, bufsize=1)
        self.store, self.slot, self.log, self.process_per_run = store, slot, log, process_per_run
        self.job: list[RunConfig] | None = None
        self.job_started = 0.0
        self.runs = 0
        self.first_rss: int | None = None

    def send(self, job: list[RunConfig]) -> None:
        """A run, or (several configs) a fused group."""
        self.job, self.job_started = job, time.time()
        payload = {"config": job[0].to_dict()} if len(job) == 1 else {"configs": [c.to_dict() for c in job]}
        self.proc.stdin.write(json.dumps({**payload, "store": str(self.store.root)}) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> list[dict]:
        """The results of the job in hand (call when its stdout is readable); a dead worker's runs failed."""
        line = self.proc.stdout.readline()
        job, self.job = self.job, None
        if line.strip():
            self.runs += 1
            return json.loads(line)
        self.proc.wait()
        error = f"the worker process died (exit code {self.proc.returncode}) during the run; {_tail(self.log)}"
        return [{"run_id": cfg.run_id, "state": "failed", "seconds": time.time() - self.job_started, "error": error}
                for cfg in job]

    def should_retire(self) -> bool:
        if self.process_per_run and self.runs >= 1:
            return True
        rss = _rss_bytes(self.proc.pid)
        if self.first_rss is None:
            self.first_rss = rss
        return rss is not None and self.first_rss is not None and rss - self.first_rss > WORKER_GROWTH_LIMIT

    def retire(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def run_local(configs: list[RunConfig], store: RunStore, execution: Execution = Execution(), poll_s: float = 0.5,
              quiet: bool = False, cancelled: Callable[[], bool] | None = None) -> dict:
    """Execute configs on the execution's slots (Execution.slots: runs_per_gpu per visible GPU, else workers).

    A worker executes run after run, keeping what it loaded (process_per_run gives every run a fresh process, as
    healcore did before workers existed). Crashed workers are replaced; their run is failed. With fuse=K, runs that
    can train fused go to a worker in groups of up to K (fusion.py). `cancelled` (the grid record's stop request,
    which `healcore cancel --grid` writes from any host) stops the grid like SIGTERM does."""
    slots: list[str | None] = gpu_slots(execution.runs_per_gpu) or [None] * execution.workers
    threads = thread_share(len(slots))
    log_dir = store.worker_logs
    fuse = execution.fuse
    queue = deque(fusion_groups(configs, fuse) if fuse > 1 else [[c] for c in configs])
    pool: list[Worker] = []
    result = {"completed": 0, "failed": 0, "busy": 0, "interrupted": 0, "errors": {}}
    durations: list[float] = []
    progress = _ProgressPrinter(quiet, len(slots))
    numbers = itertools.count(1)

    def spawn(slot: str | None) -> Worker:
        return Worker(store, slot, threads, log_dir / f"worker-{os.getpid()}-{next(numbers)}.log",
                      execution.process_per_run)

    with SignalFlag() as stop:  # SIGTERM/SIGINT: stop handing out runs, interrupt those in flight
        try:
            checked = 0.0
            while (queue and not stop.requested) or any(w.job for w in pool):
                if cancelled is not None and time.time() - checked > 2.0:
                    checked = time.time()
                    stop.requested = stop.requested or cancelled()
                if not stop.requested:
                    _fill(pool, queue, slots, spawn)
                if stop.requested:
                    for w in pool:
                        if w.job is not None:
                            w.interrupt()
                for w in _ready(pool, poll_s):
                    for out in w.receive():
                        _count(result, out, stop.requested, durations)
                    if w.proc.poll() is not None or w.should_retire():
                        w.retire()
                        pool.remove(w)
                progress.show(result, sum(len(w.job) for w in pool if w.job), sum(len(j) for j in queue), durations)
        finally:
            for w in pool:
                w.retire()
    result["interrupted"] += sum(len(j) for j in queue) if stop.requested else 0
    return result


def _fill(pool: list[Worker], queue: deque, slots: list, spawn) -> None:
    """Hand the next queued run to every idle worker, starting workers for free slots."""
    for w in pool:
        if w.job is None and queue:
            w.send(queue.popleft())
    used = [w.slot for w in pool]
    for slot in slots:
        if queue and used.count(slot) < slots.count(slot):
            used.append(slot)
            pool.append(spawn(slot))
            pool[-1].send(queue.popleft())


def _ready(pool: list[Worker], timeout: float) -> list[Worker]:
    """Busy workers with a result (or an end) to read, waiting up to `timeout` seconds for one."""
    import selectors

    busy = [w for w in pool if w.job is not None]
    if not busy:
        return []
    with selectors.DefaultSelector() as sel:
        for w in busy:
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        return [key.data for key, _ in sel.select(timeout)]


def _count(result: dict, out: dict, stopping: bool, durations: list[float]) -> None:
    state = out["state"]
    if state == "completed":
        result["completed"] += 1
        durations.append(out.get("seconds", 0.0))
    elif state == "busy":
        result["busy"] += 1
    elif state == "interrupted" or stopping:
        result["interrupted"] += 1
    else:
        result["failed"] += 1
        result["errors"][out["run_id"]] = out.get("error", "")


class _ProgressPrinter:
    """The grid's progress line: printed when a count changes, else once a minute."""

    def __init__(self, quiet: bool, workers: int):
        self.quiet, self.workers = quiet, workers
        self.started, self.last_print, self.last_counts = time.time(), 0.0, None

    def show(self, result: dict, running: int, remaining: int, durations: list[float]) -> None:
        counts = (result["completed"], result["failed"], result["busy"], running, remaining)
        if not self.quiet and (counts != self.last_counts or time.time() - self.last_print > 60):
            self.last_print, self.last_counts = time.time(), counts
            print(_progress_line(*counts, self.started, durations, self.workers), flush=True)


def _tail(path: Path) -> str:
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
        return lines[-1][:300] if lines else "it printed nothing"
    except OSError:
        return "it printed nothing"
