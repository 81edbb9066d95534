"""Several runs at once on one machine: every run with all the cores' threads vs the cores split between them.

Run: HEALCORE_DATA=../shared/data python bench/workers_threads.py [--workers 2] [--runs 4]
On one GPU: HEALCORE_DATA=../shared/data python bench/workers_threads.py --runs-per-gpu 16 --runs 32 --max-train 2000

Executes the same small grid (minilm-l6 on SST-2, real data and weights, 1 epoch) twice into fresh stores with
`healcore grid --workers N` (or `--runs-per-gpu N` on one GPU): (a) each run given OMP_NUM_THREADS=<cores>
(torch's default: what a grid did before runs shared the cores), (b) the grid's own thread share (cores // N per
run; executors.thread_share).
Prints the wall time of each grid and the ratio (a)/(b); above 1 means the share is faster.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def grid_wall(spec: Path, store: Path, concurrency: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "healcore", "--store", str(store), "grid", str(spec),
                           *concurrency, "--set", "checkpoint_every=0"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"grid failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="runs at a time [2]")
    ap.add_argument("--runs", type=int, default=4, help="runs in the grid (seeds) [4]")
    ap.add_argument("--runs-per-gpu", type=int, default=0,
                    help="on a GPU machine: runs sharing one card at a time (replaces --workers) [0: CPU]")
    ap.add_argument("--max-train", type=int, default=600, help="train rows per run [600]")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    at_once = args.runs_per_gpu or args.workers
    concurrency = ["--runs-per-gpu", str(args.runs_per_gpu)] if args.runs_per_gpu else ["--workers", str(args.workers)]
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "grid.yaml"
        spec.write_text(
            "name: workers-threads\nmodels: [minilm-l6]\ndatasets: [sst2]\ncorruption:\n  sides: [top]\n"
            f"  levels: [0]\nlrs: [5e-5]\nseeds: {list(range(args.runs))}\n"
            f"base:\n  epochs: 1\n  max_train: {args.max_train}\n  max_test: 300\n  max_length: 64\n"
            "  feature_samples: 0\n  probe_samples: 300\n")
        base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        # (b) first: any one-time cost (files coming into the page cache) falls on the share, not against it
        shared = grid_wall(spec, Path(tmp) / "b", concurrency, base)
        oversubscribed = grid_wall(spec, Path(tmp) / "a", concurrency, {**base, "OMP_NUM_THREADS": str(cores)})
    print(f"{args.runs} runs, {at_once} at a time ({' '.join(concurrency)}), {cores} cores")
    print(f"(a) {cores} threads per run:            {oversubscribed:7.1f} s")
    print(f"(b) {max(1, cores // at_once)} thread(s) per run (the share): {shared:7.1f} s")
    print(f"ratio (a)/(b): {oversubscribed / shared:.2f}x")


if __name__ == "__main__":
    main()
