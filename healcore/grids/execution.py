"""How a grid executes: its options, checked once for every front end (CLI, Launch page, library), and how many
runs execute at once (the one formula the executor, the cost estimate and the progress line share). Torch-free.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass

from healcore.core.errors import ConfigError
from healcore.core.fusion import MAX_MEMBERS

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Execution:
    executor: str = "local"  # local (worker processes on this machine) | ray (tasks on an existing Ray cluster)
    address: str | None = None  # Ray cluster address (auto, ray://head:10001, head:6379); None = a local Ray
    workers: int = 1  # runs at a time on this machine without GPUs
    runs_per_gpu: int = 1  # runs sharing each visible GPU (local), or each task's GPU share 1/N (Ray)
    fuse: int = 0  # train up to this many runs that differ only in damage and lr as one model (local only; 0 = off)
    process_per_run: bool = False  # a fresh process for every run instead of persistent workers

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor {self.executor!r} is not valid; choose one of {', '.join(EXECUTORS)}")
        for name, value, hi in (("workers", self.workers, 1024), ("runs_per_gpu", self.runs_per_gpu, 64),
                                ("fuse", self.fuse, MAX_MEMBERS)):
            if not isinstance(value, int) or isinstance(value, bool) or not (0 if name == "fuse" else 1) <= value <= hi:
                raise ConfigError(f"{name}={value!r} is out of range; use a whole number in "
                                  f"[{0 if name == 'fuse' else 1}, {hi}]")
        if self.fuse > 1 and self.executor == "ray":
            raise ConfigError("fusing runs (fuse) works with the local executor only; set fuse to 0 or run locally")

    def slots(self, gpus: int | None = None) -> int:
        """Runs executing at once: runs_per_gpu on each visible GPU, else `workers` (a Ray cluster decides its own,
        counted here as the workers this driver asked for)."""
        gpus = gpu_count() if gpus is None else gpus
        if self.executor == "local" and gpus:
            return gpus * self.runs_per_gpu
        return self.workers

    def record(self, gpus: int | None = None) -> dict:
        """What a grid's record keeps of its execution (readers compute its ETA from `slots`)."""
        return {**asdict(self), "slots": self.slots(gpus)}


def gpu_count() -> int:
    """Visible NVIDIA GPUs, without importing torch (the grid process itself never trains)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() not in ("", "-1")])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def recorded_slots(record: dict) -> int:
    """Runs at once of a grid from its record; records written before `slots` was kept name workers and runs per
    GPU only (their GPU count unknown: taken as none)."""
    if isinstance(record.get("slots"), int) and record["slots"] > 0:
        return record["slots"]
    return max(1, int(record.get("workers") or 1))
