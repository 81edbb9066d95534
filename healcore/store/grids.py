"""Grid records (`.grids/<name>.json`): every grid started on a store, and whether its driver is alive."""
from __future__ import annotations

import time

from healcore.store.io import HOST, pid_alive, read_json
from healcore.store.runs import STALE_S, RunStore


# a record's fields and the type each must have; a record of another format (older, or written by hand) is read as
# damaged: named by `healcore status` and the Launch page, its runs and configs ignored, never raised on
RECORD_TYPES = {"name": str, "run_ids": list, "configs": dict, "started": (int, float), "pid": int, "state": str}


def record_problem(rec: dict) -> str | None:
    """Why a grid record cannot be read as one (a field of the wrong type), or None."""
    for key, kind in RECORD_TYPES.items():
        value = rec.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return f"its {key!r} is a {type(value).__name__}, not a {getattr(kind, '__name__', 'number')}"
    if not all(isinstance(i, str) for i in rec.get("run_ids") or []):
        return "its 'run_ids' are not all run ids"
    if not all(isinstance(c, dict) for c in (rec.get("configs") or {}).values()):
        return "its 'configs' are not all run configs"
    return None


def grid_records(store: RunStore) -> list[dict]:
    """Every grid started on this store, newest first, each with whether its driver is alive: on this host, its
    process; on another, its heartbeat file touched within STALE_S (or, just started, its record). A record of
    another format keeps its name with `damaged` saying why, and no runs."""
    records = []
    folder = store.grids_dir
    for p in folder.glob("*.json") if folder.is_dir() else []:
        rec = read_json(p, {})
        if not isinstance(rec, dict):
            continue
        problem = record_problem(rec)
        if problem:
            records.append({"name": str(rec.get("name") or p.stem), "state": "damaged", "alive": False,
                            "run_ids": [], "configs": {}, "started": 0,
                            "damaged": f"grid record {p.name}: {problem}; it is ignored (delete it, or run the "
                                       f"grid again to write a new one)"})
            continue
        if not rec.get("name"):
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
