"""A grid on an existing Ray cluster (`healcore grid --executor ray --address ...`): each run is a Ray task.

Ray schedules; healcore never does. What healcore adds is what a run needs to survive a cluster:
- A task lost to its node or worker process (NodeDiedError, WorkerCrashedError, the node's OOM killer) is retried
  by Ray (`max_retries`); the retry opens the same run folder on the shared store and resumes from its last
  checkpoint (attempt + 1). A run's own errors (bad data, NaN loss) are results, never retried. A task that
  still fails becomes a `failed` run with the reason, and the grid goes on.
- Before any task, one probe is pinned to every alive node (NodeAffinitySchedulingStrategy) to prove that node
  can write the store; the grid is refused, naming the nodes that cannot.
- The grid's record (.grids/<name>.json) holds the Ray address and job id; `healcore cancel --grid` (from any
  host that mounts the store) sets `cancel_requested` there, and the driver cancels its tasks and asks each
  running run to stop (its stop file): they end `interrupted`, resumable.
- A run another process holds (a task of a driver that was killed and is still winding down) comes back
  `busy`; the driver submits it again a little later, so a restarted grid never runs a config twice at once.
Ray reuses worker processes between tasks, so a worker keeps what it loaded (resources.Loader) like a local one.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from functools import lru_cache
from pathlib import Path

from healcore.core.config import RunConfig
from healcore.core.errors import ConfigError, StoreError, first_line
from healcore.core.stopping import on_stop_signals, raise_interrupt
from healcore.store.io import now, read_json, update_json
from healcore.store.runs import RunStore

MAX_RETRIES = 3  # system failures (a node or a worker process lost) per run; a run's own errors are not retried
BUSY_RETRY_S = 15.0  # a run held by another process is submitted again after this long
POLL_S = 2.0


@lru_cache(maxsize=1)
def _loader():
    """What a Ray worker process loaded (resources.Loader), kept across the tasks it executes."""
    from healcore.engine.resources import Loader

    return Loader(cache=True)


def connect(address: str | None):
    """ray.init on the cluster at `address` (None: a local single-node Ray), or one line saying what to do."""
    import ray

    if ray.is_initialized():
        return ray
    answered = False
    if address and address not in ("auto", "local") and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
            answered = True
        except (OSError, ValueError):
            raise ConfigError(_unreachable(address, "nothing answers there")) from None
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, TimeoutError) as err:
        if answered:  # the cluster is there and turned this process away: most often its token authentication
            raise ConfigError(f"the Ray cluster at {address} answered but refused this process "
                              f"({first_line(err)}); if it uses token authentication (ray start's default), set "
                              f"RAY_AUTH_MODE=token here and give this process the cluster's token (RAY_AUTH_TOKEN, "
                              f"or the head's ~/.ray/auth_token)") from None
        raise ConfigError(_unreachable(address, first_line(err))) from None
    except RuntimeError as err:
        text = str(err)
        if "Version mismatch" in text:
            cluster = text.split("Ray:", 1)[1].split()[0] if "Ray:" in text else "another version"
            raise ConfigError(f"Ray version mismatch: the cluster at {address} runs Ray {cluster}, this process Ray "
                              f"{ray.__version__}; install ray=={cluster} here, or start the cluster with this "
                              f"version") from None
        raise
    return ray


def _unreachable(address: str | None, why: str) -> str:
    return (f"cannot reach a Ray cluster at {address} ({why}); start one with `ray start --head` on the head node "
            f"and `ray start --address <head>:6379` on the others, then pass --address <head>:6379 (or auto on a node "
            f"of the cluster)")


def task_environment() -> dict[str, str]:
    """What a run reads from its environment, from the driver's: healcore's settings (HEALCORE_DATA...) and the
    Hugging Face offline and cache switches; a node started without them then behaves like this machine."""
    keep = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_HUB_CACHE")
    return {k: v for k, v in os.environ.items() if k.startswith("HEALCORE_") or k in keep}


def check_store_on_every_node(ray, root: str) -> list[str]:
    """One probe pinned to each alive node writes and removes a file in the store; returns the node ids probed.
    StoreError naming the nodes that cannot write it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    probe = ray.remote(num_cpus=0)(_probe_store)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(root)
            for n in nodes]
    answers = ray.get(refs, timeout=120)
    bad = [f"{n.get('NodeManagerAddress')} (node {n['NodeID'][:12]}): {problem}"
           for n, (_, problem) in zip(nodes, answers) if problem]
    if bad:
        raise StoreError(f"the run store {root} cannot be written from {len(bad)} Ray node(s): {'; '.join(bad)}; put "
                         f"the store on storage every node mounts at the same path (NFS, Lustre) and pass it with "
                         f"--store")
    return [node for node, _ in answers]


def _probe_store(root: str) -> tuple[str, str | None]:
    import ray

    node = ray.get_runtime_context().get_node_id()
    probe = RunStore(root).grids_dir / f".ray-probe-{node[:12]}-{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
        return node, None
    except OSError as err:
        return node, err.strerror or str(err)


def run_task(config: dict, root: str, submitted: float) -> dict:
    """A Ray task: one run, through the same recipe as everywhere (a retry resumes from the checkpoint)."""
    from healcore.engine.run import outcome

    started = time.time()
    out = outcome(RunConfig.from_dict(config), RunStore(root), _loader())
    return {**out, "queued_s": started - submitted, "run_s": time.time() - started}


def run_ray(configs: list[RunConfig], store: RunStore, address: str | None = None, runs_per_gpu: int = 1,
            cpus_per_run: float = 1.0, quiet: bool = False, record: Path | None = None,
            max_retries: int = MAX_RETRIES) -> dict:
    """Submit each run as a Ray task (a fractional GPU with runs_per_gpu > 1); returns the grid's counts."""
    ray = connect(address)
    check_store_on_every_node(ray, str(store.root))  # again: nodes may have joined since the grid checked
    gpus = ray.cluster_resources().get("GPU", 0)
    task = ray.remote(num_cpus=cpus_per_run, num_gpus=1.0 / max(1, runs_per_gpu) if gpus else 0,
                      max_retries=max_retries, retry_exceptions=False,
                      runtime_env={"env_vars": task_environment()})(run_task)
    if record is not None:
        update_json(record, address=address or "local", ray_job_id=ray.get_runtime_context().get_job_id(),
                    ray_version=ray.__version__)
    by_id = {c.run_id: c for c in configs}
    pending = {task.remote(c.to_dict(), str(store.root), time.time()): c for c in configs}
    result = {"completed": 0, "failed": 0, "busy": 0, "interrupted": 0, "errors": {}, "queued_s": []}
    with on_stop_signals(raise_interrupt, signals=(signal.SIGTERM,)):
        return _drive(ray, task, store, record, pending, by_id, result, quiet)


def _drive(ray, task, store: RunStore, record: Path | None, pending: dict, by_id: dict, result: dict,
           quiet: bool) -> dict:
    """Wait for the tasks, resubmitting busy runs, until all are done or the grid is cancelled."""
    later: list[tuple[float, RunConfig]] = []  # busy runs, submitted again after BUSY_RETRY_S
    started, cancelled = time.time(), False
    try:
        while pending or later:
            if not cancelled and record is not None and (read_json(record, {}) or {}).get("cancel_requested"):
                cancelled = True
                _cancel(ray, pending, store)
                result["interrupted"] += len(later)
                later = []
            now_s = time.time()
            for due, cfg in [x for x in later if x[0] <= now_s]:
                later.remove((due, cfg))
                pending[task.remote(cfg.to_dict(), str(store.root), now_s)] = cfg
            if not pending:
                time.sleep(min(POLL_S, max(0.0, min(d for d, _ in later) - now_s)))
                continue
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in done:
                cfg = pending.pop(ref)
                out = _outcome(ray, ref, cfg, store, cancelled)
                if out["state"] == "busy" and not cancelled:
                    later.append((time.time() + BUSY_RETRY_S, by_id[out["run_id"]]))
                    continue
                key = out["state"] if out["state"] in ("completed", "busy", "interrupted") else "failed"
                result[key] += 1
                if key == "failed":
                    result["errors"][out["run_id"]] = out.get("error", "")
                if "queued_s" in out:
                    result["queued_s"].append(out["queued_s"])
            if not quiet and done:
                print(f"[grid/ray] {result['completed']} done, {result['failed']} failed, {len(pending)} submitted, "
                      f"{len(later)} waiting (busy elsewhere), {int(time.time() - started)}s elapsed", flush=True)
    except KeyboardInterrupt:  # SIGINT/SIGTERM of the driver: the same as a cancel
        _cancel(ray, pending, store)
        ray.wait(list(pending), num_returns=len(pending), timeout=30)  # the runs write `interrupted` first
        result["interrupted"] += len(pending) + len(later)
    return result


def _outcome(ray, ref, cfg: RunConfig, store: RunStore, cancelled: bool) -> dict:
    """A finished task's result; a task Ray gave up on (retries spent, or cancelled) as a result too."""
    from ray.exceptions import RayError, TaskCancelledError

    try:
        return ray.get(ref)
    except TaskCancelledError:
        return {"run_id": cfg.run_id, "state": "interrupted"}
    except RayError as err:
        if cancelled:
            return {"run_id": cfg.run_id, "state": "interrupted"}
        reason = f"Ray gave up on the task ({type(err).__name__}: {first_line(err)[:200]})"
        _mark_failed(store, cfg, reason)
        return {"run_id": cfg.run_id, "state": "failed", "error": reason}


def _mark_failed(store: RunStore, cfg: RunConfig, reason: str) -> None:
    """Write `failed` into the run folder, if no process holds it (its node is gone, say)."""
    from healcore.core.errors import RunBusyError

    try:
        handle = store.open_run(cfg)
    except (RunBusyError, StoreError):
        return
    with handle:
        if handle.read_status().get("state") != "completed":
            handle.set_status("failed", ended=now(), error=reason[:500])
            handle.log(f"failed: {reason}")


def _cancel(ray, pending: dict, store: RunStore) -> None:
    """Stop every submitted task: each running run is asked to stop (its stop file, read on any node), then Ray
    cancels the tasks (a KeyboardInterrupt inside them); they end interrupted and resumable."""
    for cfg in pending.values():
        if store.has_run(cfg.run_id) and store.status(cfg.run_id).get("effective_state") == "running":
            store.request_stop(cfg.run_id)
    for ref in pending:
        ray.cancel(ref, force=False)
