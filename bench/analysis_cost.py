"""What the layer analyses cost a run: the demo grid with them (analysis_samples=512, the default) and without
(analysis_samples=0), side by side. A benchmark script, not a test.

Run: HEALCORE_DATA=../shared/data python bench/analysis_cost.py [--epochs 3]

The analyses are: the pretrained model's per-layer representations of 512 test sentences (one forward before
the corruption), the same for the fine-tuned model kept from the test evaluation at each new best epoch, CKA
between them, and the weight movement per block at the end. Each way runs the demo grid (minilm-l6, SST-2, 1,000
rows; clean, bottom/top 50%, all) in a fresh store with one persistent worker; the ways alternate run by run so
that the machine's drift falls on both. Prints each run's wall time and the ratio (target: at most 1.10).
"""
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    from healcore.grids.local import run_local
    from healcore.grids.spec import expand
    from healcore.store.runs import RunStore

    configs = [c.replace(epochs=args.epochs, checkpoint_every=0) for c in expand("demo").configs]
    work = Path(tempfile.mkdtemp(prefix="hc-analysis-cost-"))
    walls = {"with": [], "without": []}
    print(f"demo grid: {len(configs)} runs, {args.epochs} epochs; {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
    for i, cfg in enumerate(configs):
        for way in (("with", "without") if i % 2 == 0 else ("without", "with")):
            run = cfg.replace(analysis_samples=512 if way == "with" else 0)
            store = RunStore(work / way)
            t = time.perf_counter()
            out = run_local([run], store, quiet=True)
            assert out["completed"] == 1, out
            walls[way].append(time.perf_counter() - t)
            print(f"  {cfg.run_id[:48]:48s} {way:7s} analyses: {walls[way][-1]:6.1f}s", flush=True)
    with_, without = sum(walls["with"]), sum(walls["without"])
    print(f"\ntotal with analyses {with_:.1f}s, without {without:.1f}s")
    print(f"RATIO with / without: {with_ / without:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
