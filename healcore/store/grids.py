"""Grid records (`.grids/<name>.json`): every grid started on a store, and whether its driver is alive."""
from __future__ import annotations

import time

from healcore.store.io import HOST, pid_alive, read_json
from healcore.store.runs import STALE_S, RunStore


def grid_records(store: RunStore) -> list[dict]:
    """Every grid started on this store, newest first, each with whether its driver is alive: on this host, its
    process; on another, its heartbeat file touched within STALE_S (or, just started, its record)."""
    records = []
    folder = store.grids_dir
    for p in folder.glob("*.json") if folder.is_dir() else []:
        rec = read_json(p, {})
        if not isinstance(rec, dict) or not rec.get("name"):
            continue
        pid = rec.get("pid")
        running = rec.get("state") in ("running", "starting") and isinstance(pid, int)
        if running and rec.get("host") == HOST:
            rec["alive"] = pid_alive(pid)
        elif running:
            beat = store.grid_heartbeat_path(rec["name"])
            last = beat.stat().st_mtime if beat.exists() else float(rec.get("started") or 0)
            rec["alive"] = time.time() - last < STALE_S
        else:
            rec["alive"] = False
        records.append(rec)
    return sorted(records, key=lambda r: r.get("started", 0) or 0, reverse=True)


def live_grid(store: RunStore, name: str) -> dict | None:
    """The record of the grid called `name` while its driver is alive, else None."""
    return next((r for r in grid_records(store) if r.get("name") == name and r["alive"]), None)
