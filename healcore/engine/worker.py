"""A persistent grid worker: one process that executes run after run (`healcore worker`, started by grids/local.py).

Imports, tokenizers, data splits, token ids and pretrained weights are loaded once and kept (resources.Loader);
each run still gets a fresh copy of the model, its own run folder, lock, heartbeat and resume, exactly as a run
in its own process. The protocol is one JSON object per line: a job on stdin {"config": {...}, "store": path},
its results on the result channel, one line: [{"run_id", "state", "error"?, "seconds"}, ...]; stdin closed = exit.
A job {"configs": [...], "store": path} is a fused group (fused.py). The result channel
is the process's original stdout; everything else the process prints goes to stderr (the worker's log), so a
library that prints cannot corrupt the protocol.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time

import torch

from healcore.core.config import RunConfig
from healcore.engine.fused import execute_fused
from healcore.engine.resources import Loader
from healcore.engine.run import outcome
from healcore.store.runs import RunStore


def execute_job(job: dict, loader: Loader) -> list[dict]:
    """One job -> its result lines: a run ({"config": ...}) or a fused group ({"configs": [...]}). Never raises for
    a run's own failure: the grid goes on."""
    if "configs" in job:
        t0 = time.time()
        results = execute_fused([RunConfig.from_dict(c) for c in job["configs"]], RunStore(job["store"]), loader)
        return [{**r, "seconds": time.time() - t0} for r in results]
    return [execute_run(job, loader)]


def execute_run(job: dict, loader: Loader) -> dict:
    t0 = time.time()
    out = outcome(RunConfig.from_dict(job["config"]), RunStore(job["store"]), loader)
    return {**out, "seconds": time.time() - t0}


def main() -> int:
    results = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints land in the log, not in the protocol
    loader = Loader(cache=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        results.write(json.dumps(execute_job(json.loads(line), loader)) + "\n")
        _release_memory()
    return 0


def _release_memory() -> None:
    """Between runs: the finished run's model and optimizer go, and a GPU's cached blocks are returned."""
    gc.collect()
    if "torch" in sys.modules:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
