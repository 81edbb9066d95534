"""The same 16-run grid on the local executor (2 workers) and on a 3-node local Ray cluster (a head with no CPU
for tasks and 2 worker nodes of 1 CPU each): wall time and per-run scheduling overhead. A benchmark, not a test.

Run:  HEALCORE_DATA=../shared/data python bench/ray_grid.py [--runs 16]

Per-run overhead = (wall x 2 slots - the runs' own time, first status to last) / runs: what scheduling, process
start-up and the grid's bookkeeping cost each run. For Ray it also prints task start minus submit for the first
task of each slot (process start-up plus scheduling) and for the rest (waiting for a free slot, then scheduling).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HEALCORE_DATA", str(ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def configs(n: int) -> list:
    from healcore.core.config import RunConfig

    settings = ["none", "bottom:1", "top:1", "bottom:2", "top:2", "bottom:3", "top:3", "bottom:6"]
    return [RunConfig(model="minilm-l6", dataset="sst2", corrupt=settings[i % len(settings)], seed=i // len(settings),
                      lr=5e-5, epochs=1, max_train=200, max_test=100, max_length=64, feature_samples=50,
                      probe_samples=100, analysis_samples=64, checkpoint_every=0) for i in range(n)]


def runs_time(store, cfgs) -> float:
    """The runs' own time: from each run's start (status started) to its end."""
    total = 0.0
    for cfg in cfgs:
        st = store.status(cfg.run_id)
        total += float(st["ended"]) - float(st["started"])
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=16)
    args = ap.parse_args()
    from ray.cluster_utils import Cluster

    from healcore.grids.execution import Execution
    from healcore.grids.local import run_local
    from healcore.grids.ray_cluster import run_ray
    from healcore.store.runs import RunStore

    work = Path(tempfile.mkdtemp(prefix="hc-ray-bench-"))
    cfgs = configs(args.runs)
    print(f"{args.runs} runs: minilm-l6, SST-2, 1 epoch, 200 train rows; {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d')}", flush=True)
    store = RunStore(work / "local")
    t0 = time.perf_counter()
    out = run_local(cfgs, store, Execution(workers=2), quiet=True)
    local_wall = time.perf_counter() - t0
    assert out["completed"] == args.runs, out
    local_over = (2 * local_wall - runs_time(store, cfgs)) / args.runs
    print(f"local executor, 2 workers: wall {local_wall:.1f}s; per-run overhead {local_over:.2f}s", flush=True)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for name in ("a", "b"):
        cluster.add_node(num_cpus=1, resources={f"node_{name}": 1})
    cluster.wait_for_nodes()
    try:
        store = RunStore(work / "ray")
        t0 = time.perf_counter()
        out = run_ray(cfgs, store, address=cluster.address, quiet=True)
        ray_wall = time.perf_counter() - t0
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    assert out["completed"] == args.runs, out
    ray_over = (2 * ray_wall - runs_time(store, cfgs)) / args.runs
    queued = sorted(out["queued_s"])
    print(f"Ray, 3 nodes (2 x 1 CPU): wall {ray_wall:.1f}s; per-run overhead {ray_over:.2f}s; task start - submit: "
          f"first task of each slot {queued[0]:.1f}s and {queued[1]:.1f}s (worker process start-up); the others "
          f"waited for a slot", flush=True)
    print(f"\nRATIOS\n  wall, Ray / local: {ray_wall / local_wall:.2f}x\n  per-run overhead, Ray - local: "
          f"{ray_over - local_over:+.2f}s")


if __name__ == "__main__":
    main()
