"""Live progress of runs and grids: elapsed time, epoch x/N and step y/M, and an ETA (torch-free).

A run's ETA comes from its own pace (elapsed time over the share of its steps done). A grid's comes from the one
model of its time: the per-run estimates shown before Start (plan.run_estimates, kept in the grid's record),
scaled by how long this grid's runs actually took against their estimates (finished runs, else running runs past a
tenth of their steps), over the runs at a time. So the ETA starts at the estimate and moves only as far as the
measurements move it. Records without estimates (older grids) use the mean wall time of finished runs.
"""
from __future__ import annotations

import math

import pandas as pd

from healcore.grids.execution import recorded_slots
from healcore.store.io import now


def run_progress(row, at: float | None = None) -> dict:
    """For one row of results.load_runs: the share of its steps done, elapsed seconds and ETA seconds."""
    at = now() if at is None else at
    progress = row.get("progress") if isinstance(row.get("progress"), dict) else {}
    epochs = int(progress.get("epochs") or row.get("epochs") or 1)
    epoch, step, steps = int(progress.get("epoch") or 0), int(progress.get("step") or 0), int(progress.get("steps") or 0)
    if row.get("state") == "completed":
        share = 1.0
    elif epoch:
        share = min(1.0, ((epoch - 1) + (step / steps if steps else 0.0)) / epochs)
    else:
        share = 0.0
    started = _number(row.get("started"))
    ended = _number(row.get("ended"))
    elapsed = ((ended if row.get("state") != "running" and ended else at) - started) if started else None
    eta = elapsed * (1 - share) / share if elapsed and row.get("state") == "running" and share > 0.02 else None
    # running, no epoch begun: loading the model, tokenising, the damage probe (no step, loss or pace to show yet)
    starting = row.get("state") == "running" and not epoch
    return {"share": share, "epoch": epoch, "epochs": epochs, "step": step, "steps": steps, "elapsed_s": elapsed,
            "eta_s": eta, "starting": starting}


def grid_progress(record: dict, runs: pd.DataFrame, at: float | None = None) -> dict:
    """A grid's counts by state, elapsed time and ETA, from its record and the store's runs table."""
    at = now() if at is None else at
    ids = list(record.get("run_ids", []))
    mine = runs[runs["run_id"].isin(ids)] if len(runs) else runs
    states = mine["state"].value_counts().to_dict() if len(mine) else {}
    done, failed = states.get("completed", 0), states.get("failed", 0)
    running = states.get("running", 0)
    remaining = max(0, len(ids) - done - failed - running)
    started = _number(record.get("started"))
    ended = _number(record.get("ended"))
    elapsed = ((ended if not record.get("alive") and ended else at) - started) if started else None
    workers = recorded_slots(record)
    finished_here = mine[mine["state"] == "completed"] if len(mine) else mine
    if started is not None and len(finished_here):  # this grid's runs, not earlier ones it reused
        finished_here = finished_here[finished_here["ended"].astype(float).fillna(0) >= started]
    eta = None
    running_rows = mine[mine["state"] == "running"].to_dict("records") if len(mine) else []
    in_flight = [run_progress(r, at) for r in running_rows]
    estimates = record.get("estimates") if isinstance(record.get("estimates"), dict) else {}
    if record.get("alive") and estimates:
        factor = _calibration(estimates, finished_here, running_rows, in_flight)
        active = {r["run_id"] for r in running_rows}
        settled = set(finished_here["run_id"]) if len(finished_here) else set()
        settled |= set(mine[mine["state"] == "failed"]["run_id"]) if len(mine) else set()
        queued = [i for i in ids if i not in active and i not in settled]
        left = [p["eta_s"] if p["eta_s"] is not None else
                max(0.0, float(estimates.get(r["run_id"], 0.0)) * factor - (p["elapsed_s"] or 0.0))
                for r, p in zip(running_rows, in_flight)]
        eta = sum(float(estimates.get(i, 0.0)) for i in queued) * factor / workers + max(left or [0.0])
    elif record.get("alive"):
        per_run = _mean_wall(finished_here)
        if per_run is None and in_flight and all(p["eta_s"] is not None for p in in_flight):
            per_run = max(p["elapsed_s"] + p["eta_s"] for p in in_flight)
        if per_run is None:  # nothing of this grid measured yet: the store's other runs of its models
            models = {c.get("model") for c in (record.get("configs") or {}).values()}
            per_run = _mean_wall(runs[(runs["state"] == "completed") & runs["model"].isin(models)]) if len(runs) else None
        if per_run is not None:
            eta = per_run * remaining / workers + max([p["eta_s"] or 0.0 for p in in_flight] or [0.0])
    return {"name": record.get("name"), "alive": bool(record.get("alive")), "state": record.get("state"),
            "runs": len(ids), "completed": done, "failed": failed, "running": running, "queued": remaining,
            "interrupted": states.get("interrupted", 0), "elapsed_s": elapsed, "eta_s": eta,
            "share": (done + failed) / max(1, len(ids))}


def _calibration(estimates: dict, finished: pd.DataFrame, running_rows: list[dict], in_flight: list[dict]) -> float:
    """How much longer (>1) or shorter this grid's runs take than estimated: over its finished runs, else over
    running runs past a tenth of their steps (their pace projected to the end), else 1 (the estimate as shown)."""
    done = finished[finished["run_id"].isin(list(estimates)) & finished["ended"].notna() & finished["started"].notna()] \
        if len(finished) else finished
    if len(done):
        took = float((done["ended"].astype(float) - done["started"].astype(float)).sum())
        guessed = float(sum(float(estimates[i]) for i in done["run_id"]))
        if guessed > 0:
            return took / guessed
    paced = [(p["elapsed_s"] / p["share"], float(estimates[r["run_id"]])) for r, p in zip(running_rows, in_flight)
             if r["run_id"] in estimates and p["elapsed_s"] and p["share"] >= 0.1]
    if paced and sum(g for _, g in paced) > 0:
        return sum(t for t, _ in paced) / sum(g for _, g in paced)
    return 1.0


def _mean_wall(done: pd.DataFrame) -> float | None:
    """Mean wall time of finished runs (started to ended), or None when there are none."""
    if not len(done):
        return None
    done = done[done["ended"].notna() & done["started"].notna()]
    return float((done["ended"].astype(float) - done["started"].astype(float)).mean()) if len(done) else None


def fmt_duration(seconds: float | None, missing: str = "–") -> str:
    """A duration as every view writes it: 1h05m, 3m07s, 42s; `missing` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return missing
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _number(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
