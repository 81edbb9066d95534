"""Where a grid's runs execute: local worker processes, or tasks on a Ray cluster.

Both call the same recipe (run.execute). Locally each run is its own process (`healcore exec`), so a crash,
an out-of-memory kill or a cancel touches one run only, and GPU memory is returned when it ends. Two grid
commands over one store never run a config twice at once: the run folder's lock decides, and the loser
reports the run as busy.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from .config import RunConfig
from .errors import StoreError
from .store import RunStore, read_json

EXIT_BUSY = 3  # `healcore exec` exit code when another process holds the run


def _gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() != ""])
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def _progress_line(done: int, failed: int, busy: int, running: int, remaining: int, started: float,
                   durations: list[float], workers: int) -> str:
    eta = ""
    if durations:
        mean = sum(durations) / len(durations)
        eta = f", ETA {int(mean * (remaining + running) / max(1, workers) // 60)} min"
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


def run_local(configs: list[RunConfig], store: RunStore, workers: int = 1, runs_per_gpu: int = 1,
              poll_s: float = 0.5, quiet: bool = False) -> dict:
    """Execute configs in up to `workers` child processes (GPU slots: runs_per_gpu per visible GPU)."""
    gpus = _gpu_count()
    slots = [str(g) for g in range(gpus) for _ in range(max(1, runs_per_gpu))] if gpus else []
    if slots:
        workers = len(slots)
    queue = deque(configs)
    config_dir = store.root / ".grids" / "configs"
    config_dir.mkdir(parents=True, exist_ok=True)
    running: dict[subprocess.Popen, tuple[RunConfig, str | None, float]] = {}
    result = {"completed": 0, "failed": 0, "busy": 0, "interrupted": 0, "errors": {}}
    durations: list[float] = []
    stop = {"requested": False}

    def on_signal(signum, frame):
        stop["requested"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    started, last_print, last_counts = time.time(), 0.0, None
    try:
        while (queue and not stop["requested"]) or running:
            while queue and len(running) < workers and not stop["requested"]:
                cfg = queue.popleft()
                path = config_dir / f"{cfg.run_id}.json"
                path.write_text(json.dumps(cfg.to_dict()))
                env = {**os.environ, **thread_share(workers)}
                slot = None
                if slots:
                    used = [s for (_, s, _) in running.values()]
                    slot = next(s for s in sorted(set(slots)) if used.count(s) < slots.count(s))
                    env["CUDA_VISIBLE_DEVICES"] = slot
                log = open(store.root / ".grids" / f"{cfg.run_id}.out", "ab")
                proc = subprocess.Popen([sys.executable, "-m", "healcore", "--store", str(store.root), "exec",
                                         str(path)], stdout=log, stderr=subprocess.STDOUT, env=env)
                log.close()
                running[proc] = (cfg, slot, time.time())
            if stop["requested"]:
                for proc in running:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
            for proc in [p for p in running if p.poll() is not None]:
                cfg, _, t0 = running.pop(proc)
                code = proc.returncode
                if code == 0:
                    result["completed"] += 1
                    durations.append(time.time() - t0)
                elif code == EXIT_BUSY:
                    result["busy"] += 1
                else:
                    st = read_json(store.root / cfg.run_id / "status.json", {}) or {}
                    if st.get("state") == "interrupted" or stop["requested"]:
                        result["interrupted"] += 1
                    else:
                        result["failed"] += 1
                        result["errors"][cfg.run_id] = st.get("error") or _tail(store.root / ".grids" / f"{cfg.run_id}.out")
            counts = (result["completed"], result["failed"], result["busy"], len(running), len(queue))
            if not quiet and (counts != last_counts or time.time() - last_print > 60):  # on change, else once a minute
                last_print, last_counts = time.time(), counts
                line = _progress_line(*counts, started, durations, workers)
                print(line, flush=True)
            time.sleep(poll_s)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    result["interrupted"] += len(queue) if stop["requested"] else 0
    return result


def _tail(path: Path) -> str:
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
        return lines[-1][:300] if lines else "exited without a message"
    except OSError:
        return "exited without a message"


# ------------------------------------------------------------------------------------------ Ray
def _ray_execute(config: dict, root: str) -> dict:
    from .errors import HealcoreError, RunBusyError
    from .run import execute

    cfg = RunConfig.from_dict(config)
    try:
        summary = execute(cfg, RunStore(root))
        return {"run_id": cfg.run_id, "state": "completed", "f1": summary["best"]["test"]["f1_weighted"]}
    except RunBusyError:
        return {"run_id": cfg.run_id, "state": "busy"}
    except HealcoreError as err:
        return {"run_id": cfg.run_id, "state": "failed", "error": str(err)}
    except Exception as err:  # noqa: BLE001 - reported per run; the grid goes on
        return {"run_id": cfg.run_id, "state": "failed", "error": f"{type(err).__name__}: {err}"}


def _ray_check_store(root: str) -> str | None:
    import socket

    probe = Path(root) / ".grids" / f".ray-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
        return None
    except OSError as err:
        return f"{socket.gethostname()}: {err.strerror or err}"


def run_ray(configs: list[RunConfig], store: RunStore, address: str | None = None, runs_per_gpu: int = 1,
            cpus_per_run: float = 1.0, quiet: bool = False) -> dict:
    """Submit each run as a Ray task (fractional GPUs allowed). The store must be on storage every node sees."""
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    num_gpus = 1.0 / max(1, runs_per_gpu) if gpus else 0
    check = ray.remote(num_cpus=0.01)(_ray_check_store)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    problems = [p for p in ray.get([check.remote(str(store.root)) for _ in nodes]) if p]
    if problems:
        raise StoreError(f"Ray workers cannot write the run store {store.root} ({'; '.join(problems)}); put the "
                         f"store on storage that every node mounts at the same path and pass it with --store")
    task = ray.remote(num_cpus=cpus_per_run, num_gpus=num_gpus, max_retries=0)(_ray_execute)
    pending = [task.remote(c.to_dict(), str(store.root)) for c in configs]
    result = {"completed": 0, "failed": 0, "busy": 0, "interrupted": 0, "errors": {}}
    started = time.time()
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=5.0)
            for ref in done:
                out = ray.get(ref)
                key = {"completed": "completed", "busy": "busy"}.get(out["state"], "failed")
                result[key] += 1
                if key == "failed":
                    result["errors"][out["run_id"]] = out.get("error", "")
            if not quiet:
                print(f"[grid/ray] {result['completed']} done, {result['failed']} failed, {len(pending)} pending, "
                      f"{int(time.time() - started)}s elapsed", flush=True)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        result["interrupted"] = len(pending)
    return result
