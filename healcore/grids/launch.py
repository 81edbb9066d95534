"""Running grids: in the foreground (`healcore grid`), in the background (the dashboard's Start), their records,
cancelling them, and the store's status. Each function returns data; cli.py prints it and the pages render it.

A grid's record, <store>/.grids/<name>.json, says who runs it (pid, host, executor, Ray address and job), its
state, its runs' ids and configs (so runs not started yet show as queued), and its result when it ends.
`cancel` writes a stop request that the grid's driver and each run honour wherever they execute (the store is
shared), and signals the processes it can reach on this host at once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from healcore.core.errors import ConfigError, RunBusyError, StoreError
from healcore.grids.local import run_local
from healcore.grids.plan import GridPlan
from healcore.results import flags
from healcore.results.cell_table import cells
from healcore.results.runs_table import load_runs
from healcore.store.grids import grid_records, live_grid
from healcore.store.io import (HOST, atomic_write_bytes, atomic_write_json, now, pid_alive, read_json, release_lock,
                               try_lock, update_json)
from healcore.store.runs import HEARTBEAT_S, RunStore, rerun_plan


START_WAIT_S = 30.0  # how long a Start waits for another Start of the same grid (a spawn takes well under a second)


def grid_record(plan: GridPlan, state: str, pid: int | None) -> dict:
    """A grid's record (.grids/<name>.json): who runs it and how (its execution, with the runs at a time its ETA
    divides by), its state, and every run's config, so runs not started yet read as queued from the first moment
    (the dashboard's Start and the driver write the same)."""
    return {"name": plan.grid.name, "pid": pid, "host": HOST, "started": now(), "state": state,
            **plan.execution.record(), "run_ids": [c.run_id for c in plan.grid.configs],
            "configs": {c.run_id: c.to_dict() for c in plan.grid.configs},
            # the estimate shown before Start, per run: the ETA calibrates it, the end checks it (estimate_check)
            "estimates": {k: round(v, 2) for k, v in plan.estimates.items()},
            "estimated_wall_s": plan.wall_s, "estimate_note": plan.cost_note, "prior": plan.prior,
            "notes": list(plan.grid.notes)}


def estimate_check(record: dict, ended: float) -> dict | None:
    """How the estimate shown before Start compares with the wall time the grid took: written into the record at
    the end, so that estimates can be checked and improved (None where there was none)."""
    estimated, started = record.get("estimated_wall_s"), record.get("started")
    if not isinstance(estimated, (int, float)) or estimated <= 0 or not isinstance(started, (int, float)):
        return None
    took = max(0.0, ended - started)
    return {"estimated_s": round(estimated, 1), "took_s": round(took, 1), "ratio": round(took / estimated, 3)}


def already_running(store: RunStore, name: str, record: dict | None = None) -> ConfigError:
    record = record or live_grid(store, name) or {}
    where = f"pid {record.get('pid')} on {record.get('host')}" if record.get("pid") else "another process"
    return ConfigError(f"grid {name} is already running ({where}); follow it with healcore status, or stop it with "
                       f"healcore cancel --grid {name} before starting it again")


def run_grid(plan: GridPlan, store: RunStore) -> dict:
    """Execute a plan's runs to do as its execution says, keeping the grid's record up to date; returns the
    executor's counts. One driver per grid name: a second one is refused in one line before it writes anything."""
    if plan.problem is not None:
        raise plan.problem
    store.ensure()
    execution = plan.execution
    if execution.executor == "ray":  # the cluster answers and every node can write the store, before any write
        from healcore.grids.ray_cluster import check_store_on_every_node, connect

        check_store_on_every_node(connect(execution.address), str(store.root))
    name = plan.grid.name
    launched = live_grid(store, name)  # a Start spawns its driver before that driver can take the lock: its record
    if launched and launched.get("state") == "starting" and launched.get("pid") != os.getpid() \
            and launched.get("host") == HOST:  # ... names it, and no other driver may slip in between
        raise already_running(store, name, launched)
    lock = try_lock(store.grid_lock_path(name))
    if lock is None:
        raise already_running(store, name)
    try:
        return _drive(plan, store)
    finally:
        release_lock(lock)


def _drive(plan: GridPlan, store: RunStore) -> dict:
    path = store.grid_record_path(plan.grid.name)
    execution = plan.execution
    record = grid_record(plan, "running", os.getpid())
    launched = read_json(path, {}) or {}
    if launched.get("state") == "starting" and launched.get("host") == HOST and launched.get("pid") in (None, os.getpid()):
        # the Start that spawned this driver: its clock (elapsed never goes back) and the estimate it showed
        record.update({k: launched[k] for k in ("started", "estimates", "estimated_wall_s", "estimate_note")
                       if k in launched})
    try:
        atomic_write_json(path, record)
    except OSError as err:
        raise StoreError(f"cannot write the grid's record {path} ({err.strerror or err}); the run store must be a "
                         f"writable folder") from None
    beating = _heartbeat(store.grid_heartbeat_path(plan.grid.name))
    try:
        if execution.executor == "ray":
            from healcore.grids.ray_cluster import run_ray

            # runs another driver left "running" are submitted too: still held, they come back busy and wait
            result = run_ray(plan.todo + plan.parts["running"], store, address=execution.address,
                             runs_per_gpu=execution.runs_per_gpu, record=path)
        else:
            result = run_local(plan.todo, store, execution, cancelled=lambda: _cancel_requested(path))
    except BaseException:
        update_json(path, state="failed", ended=now())
        raise
    finally:
        beating.set()
    ended = now()
    update_json(path, result=result, ended=ended, state="interrupted" if result["interrupted"] else "finished",
                estimate_check=estimate_check(record, ended))
    return result


def _heartbeat(path: Path) -> threading.Event:
    """Touch `path` every HEARTBEAT_S until the returned event is set (a driver's sign of life for other hosts)."""
    done = threading.Event()

    def beat() -> None:
        while True:
            try:
                path.touch()
            except OSError:
                pass  # a full or read-only disk must not stop the grid from a side thread
            if done.wait(HEARTBEAT_S):
                return

    threading.Thread(target=beat, name="healcore-grid-heartbeat", daemon=True).start()
    return done


def _cancel_requested(path: Path) -> bool:
    return bool((read_json(path, {}) or {}).get("cancel_requested"))


def launch(plan: GridPlan, store_root: str | Path, retry_failed: bool = False) -> dict:
    """Start `healcore grid` on a planned grid as a detached process (the dashboard's Start button).

    A plan with a problem starts nothing (its error is raised). The spec is written under <store>/.grids/specs/,
    and the process gets its own session so a restart of the caller never stops it. The grid process checks each
    model's architecture once more (with torch) before its first run.
    """
    import yaml

    if plan.problem is not None:
        raise plan.problem
    store = RunStore(store_root)
    name, execution = plan.grid.name, plan.execution
    store.ensure()
    # one Start at a time per grid name (a double click runs this twice): check, record and spawn under a mutex
    mutex, deadline = None, time.monotonic() + START_WAIT_S
    while mutex is None:
        mutex = try_lock(store.grids_dir / f".{name}.starting")
        if mutex is None:
            if time.monotonic() > deadline:
                raise RunBusyError(f"grid {name!r} is being started by another Start that has not finished in "
                                   f"{START_WAIT_S:g} s; wait for it, then look at healcore status")
            time.sleep(0.05)
    try:
        if live_grid(store, name):
            raise already_running(store, name)
        spec_path = store.grid_spec_path(name)
        atomic_write_bytes(spec_path, yaml.safe_dump(plan.grid.spec, sort_keys=False).encode())
        log_path = store.grid_log_path(name)
        cmd = [sys.executable, "-m", "healcore", "--store", str(store.root), "grid", str(spec_path),
               "--workers", str(execution.workers), "--runs-per-gpu", str(execution.runs_per_gpu),
               "--executor", execution.executor, "--launched"]
        if execution.address:
            cmd += ["--address", execution.address]
        if retry_failed:
            cmd.append("--retry-failed")
        if execution.fuse > 1:
            cmd += ["--fuse", str(execution.fuse)]
        if execution.process_per_run:
            cmd.append("--process-per-run")
        record_path = store.grid_record_path(name)
        # until the grid process writes its own: a grid that stops before its first run stays visible, and its
        # runs read as queued at once
        atomic_write_json(record_path, grid_record(plan, "starting", None))
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=str(store.root.parent))
        if (read_json(record_path, {}) or {}).get("pid") is None:  # the driver may have written its own already
            update_json(record_path, pid=proc.pid)
    finally:
        release_lock(mutex)
    return {"name": name, "pid": proc.pid, "runs": len(plan.grid.configs), "log": str(log_path)}


def grid_error(store: RunStore, name: str) -> str | None:
    """The one-line error a background grid stopped with before running (its log's last `healcore: error`)."""
    try:
        lines = store.grid_log_path(name).read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.split("healcore: error: ", 1)[1] for line in lines if "healcore: error: " in line]
    return errors[-1] if errors else None


# ------------------------------------------------------------------------------------------ cancel
@dataclass
class Cancelled:
    signalled: int  # processes on this host sent SIGTERM
    requested: int  # runs (and grids) given a stop request, honoured wherever they execute

    def line(self) -> str:
        return (f"stop requested for {self.requested} run(s) or grid(s), {self.signalled} process(es) on this host "
                f"signalled; stopped runs become 'interrupted' and resume on the next run or grid command")


def cancel(store: RunStore, grid: str | None = None, run_ids: list[str] | tuple = ()) -> Cancelled:
    """Stop a grid (its driver and its runs) or the given running runs (none given: every running run)."""
    pids: set[int] = set()
    requested = 0
    if grid:
        record_path = store.grid_record_path(grid)
        record = read_json(record_path)
        if not isinstance(record, dict):
            raise ConfigError(f"no grid named {grid!r} in {store.root}; see healcore status")
        if record.get("state") == "running":
            update_json(record_path, cancel_requested=now())
            requested += 1
            if record.get("host") == HOST and isinstance(record.get("pid"), int) and pid_alive(record["pid"]):
                pids.add(record["pid"])
        ids = list(record.get("run_ids", []))
    else:
        for run_id in run_ids:
            store.path(run_id)  # invalid ids (.., slashes) are refused with a one-line error
        ids = list(run_ids) or store.run_ids()
    for run_id in ids:
        if not store.has_run(run_id):
            continue
        status = store.status(run_id)
        if status.get("effective_state") == "running":
            store.request_stop(run_id)
            requested += 1
            if status.get("host") == HOST and isinstance(status.get("pid"), int):
                pids.add(status["pid"])
    signalled = 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled += 1
        except ProcessLookupError:
            pass
    return Cancelled(signalled, requested)


# ------------------------------------------------------------------------------------------ status
def store_status(store: RunStore) -> dict:
    """The store at a glance: runs by state, each grid's progress, and the runs that need a look."""
    runs = load_runs(store.root)
    states = runs["state"].value_counts().to_dict() if len(runs) else {}
    grids = []
    by_id = runs.set_index("run_id")["state"].to_dict() if len(runs) else {}
    for rec in grid_records(store):
        ids = rec.get("run_ids", [])
        grids.append({"name": rec.get("name"), "state": rec.get("state"), "alive": rec.get("alive"),
                      "pid": rec.get("pid"), "host": rec.get("host"), "executor": rec.get("executor", "local"),
                      "address": rec.get("address"), "runs": len(ids), "damaged": rec.get("damaged"),
                      "completed": sum(1 for i in ids if by_id.get(i) == "completed")})
    attention = []
    if len(runs):
        needs = runs["state"].isin(["running", "failed", "interrupted"]) | runs["damaged"].map(bool) | runs["failed"] \
            | runs["flagged"]
        for r in runs[needs].itertuples():
            attention.append({"run_id": r.run_id, "state": r.state, "error": r.error if r.state == "failed" else None,
                              "damaged": list(r.damaged),
                              "rerun": rerun_plan(r.damaged) if r.damaged and r.state != "running" else None,
                              "failures": [f for f in [*r.failures, *r.flags] if not
                                           f.startswith(("failed", "damaged", "diverged"))]})
    counts = flags.summary(runs, cells(runs)) if len(runs) else flags.summary(runs, runs.iloc[0:0])
    return {"store": str(store.root), "runs": len(runs), "states": states, "grids": grids, "attention": attention,
            "flags": counts}


def status_lines(status: dict) -> list[str]:
    lines = [f"store {status['store']}: {status['runs']} runs"
             + "".join(f", {n} {s}" for s, n in sorted(status["states"].items()))]
    for g in status["grids"]:
        if g.get("damaged"):
            lines.append(f"  grid {g['name']}: damaged: {g['damaged']}")
            continue
        where = f"on Ray at {g['address']}" if g["executor"] == "ray" else f"pid {g['pid']}"
        lines.append(f"  grid {g['name']}: {g['completed']}/{g['runs']} completed; "
                     + (f"running ({where})" if g["alive"] else "not running"))
    if status["runs"]:
        lines.append("  " + flags.summary_line(status["flags"]))
    for a in status["attention"]:
        extra = f": {a['error']}" if a["error"] else ""
        extra += "".join(f"; damaged {d}" for d in a["damaged"])
        extra += f"; a rerun of its grid (or healcore run) heals it: {a['rerun']}" if a.get("rerun") else ""
        extra += "".join(f"; {f}" for f in a.get("failures", []))
        lines.append(f"  {a['state']:11s} {a['run_id']}{extra}")
    return lines
