"""The paper's Table 1 BERT-base row on one machine: measure a slice, extrapolate the row. A benchmark script.

Run (GPU):  HEALCORE_DATA=../shared/data python bench/table1_slice.py --device cuda --fuse 27 --compile reduce-overhead
Run (CPU, a small check of the script itself):
            HEALCORE_DATA=../shared/data python bench/table1_slice.py --model minilm-l6 --train-rows 320 --test-rows 100 \\
            --settings 3 --lrs 1

The row (healcore/presets/paper-table1.yaml, BERT-base only): 6 datasets x 9 corruption settings (clean; bottom and top at
25/50/75/100% of the layers) x 3 learning rates = 162 runs of 10 epochs, constant rate, batch 32, max length 128,
at the paper's split sizes (Table 2).

The slice: the 27 runs of one dataset (default SST-2), 1 epoch on --train-rows training rows, executed as healcore
executes a grid (persistent workers; with --fuse K fused groups; with --compile a compiled step). BERT-base-sized
models get random weights (the hub is out of reach here); the cost of a step does not depend on the weights.
From the slice's run summaries it prices
- a training token (the runs' train_s over the tokens they trained on; a fused member's train_s is its share),
- an evaluated token (eval_s over the validation and test tokens evaluated each epoch),
- the rest of a run (wall time x slots minus training and evaluation, per run: start-up, damage probe, features),
and extrapolates each dataset of the row from its paper sizes and its mean tokens per example, measured on the
local copy under HEALCORE_DATA (Twitter Financial News Topic is not there: it takes Emotion's, also short tweets).
With --compile, compiling happens inside the first steps and counts in the price of a training token, which the
extrapolation multiplies by 10 epochs: the estimate errs high by up to 9x the compile time per worker.
Prints the slice, the prices and the row in hours, last.
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
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HEALCORE_DATA", str(ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROW_DATASETS = ("sst2", "imdb", "ag_news", "emotion", "dbpedia_14", "twitter_financial_news_topic")
STAND_IN = {"twitter_financial_news_topic": "emotion"}  # not in the local data: tweets, like Emotion's texts
LEVELS = ("50%", "100%", "25%", "75%")  # 50% and 100% first: --settings 5 or fewer fits a 6-layer model
LRS = (1e-5, 2e-5, 5e-5)
ROW_EPOCHS = 10
TARGET_HOURS = 3.0  # the throughput issue's target for the row on one H100


def slice_configs(model: str, dataset: str, settings: int, lrs: int, base: dict) -> list:
    """The row's runs of one dataset: clean, then bottom/top at each level; x learning rates."""
    from healcore.core.config import RunConfig

    corrupt = ["none"] + [f"{side}:{level}" for level in LEVELS for side in ("bottom", "top")]
    return [RunConfig.from_dict({**base, "model": model, "dataset": dataset, "corrupt": c, "lr": lr})
            for lr in LRS[:lrs] for c in corrupt[:settings]]


def mean_tokens(dataset: str, tokenizer, max_length: int, sample: int = 2000) -> float:
    """Mean tokens per example (truncated at max_length) over up to `sample` training rows of the local copy."""
    from healcore.core.config import RunConfig
    from healcore.core.data import load_splits
    from healcore.engine.batching import encode

    splits = load_splits(RunConfig(dataset=STAND_IN.get(dataset, dataset), max_train=sample, val_fraction=0.0,
                                   select_on="test"))
    return float(encode(tokenizer, splits.train, max_length).lengths.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--model", default="bert-base", help="bert-base (random weights, BERT-base size) or minilm-l6")
    ap.add_argument("--dataset", default="sst2", help="the row's dataset the slice trains on [sst2]")
    ap.add_argument("--train-rows", type=int, default=0, help="training rows of the slice [0: all local rows]")
    ap.add_argument("--test-rows", type=int, default=0, help="test rows of the slice [0: all local rows]")
    ap.add_argument("--settings", type=int, default=9, help="corruption settings of the slice (of 9) [9]")
    ap.add_argument("--lrs", type=int, default=3, help="learning rates of the slice (of 3) [3]")
    ap.add_argument("--fuse", type=int, default=0, help="fuse up to K runs (healcore grid --fuse K) [0]")
    ap.add_argument("--compile", choices=("off", "default", "reduce-overhead"), default="off")
    ap.add_argument("--runs-per-gpu", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="CPU: runs at a time [1]")
    args = ap.parse_args()

    import torch
    from grid_throughput import random_model_folder
    from transformers import AutoTokenizer

    from healcore.core.data import REGISTRY, load_splits
    from healcore.engine.batching import encode
    from healcore.engine.models import resolve_model_path
    from healcore.grids.execution import Execution
    from healcore.grids.local import run_local
    from healcore.store.runs import RunStore

    work = Path(tempfile.mkdtemp(prefix="hc-table1-"))
    model = args.model if args.model == "minilm-l6" else random_model_folder(args.model, work / args.model)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, "
          f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}; {time.strftime('%Y-%m-%d')}; "
          f"model {args.model}; fuse {args.fuse}; compile {args.compile}", flush=True)
    base = {"epochs": 1, "batch_size": 32, "max_length": 128, "lr_schedule": "constant", "select_on": "test",
            "max_train": args.train_rows, "max_test": args.test_rows, "checkpoint_every": 0, "seed": 0,
            "device": args.device, "compile": args.compile}
    configs = slice_configs(model, args.dataset, args.settings, args.lrs, base)
    store = RunStore(work / "runs")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor-cache")  # compiling is part of the slice's time
    t0 = time.perf_counter()
    execution = Execution(workers=args.workers, runs_per_gpu=args.runs_per_gpu, fuse=args.fuse)
    result = run_local(configs, store, execution, quiet=True)
    wall = time.perf_counter() - t0
    if result["completed"] != len(configs):
        raise SystemExit(f"the slice did not complete: {result}; see {store.root}")
    slots = execution.slots() if args.device == "cuda" else execution.slots(gpus=0)

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"))  # BERT's uncased WordPiece vocabulary
    summaries = [store.summary(c.run_id) for c in configs]
    train_s = sum(s["timing"]["train_s"] for s in summaries)
    eval_s = sum(s["timing"]["eval_s"] for s in summaries)
    train_tokens = sum(s["timing"]["tokens_per_epoch"] for s in summaries)
    sizes = summaries[0]["data"]["sizes"]
    splits = load_splits(configs[0])
    eval_tokens = len(summaries) * sum(int(encode(tokenizer, df, 128).lengths.sum())
                                       for df in (splits.validation, splits.test) if len(df))
    per_train_token, per_eval_token = train_s / train_tokens, eval_s / eval_tokens
    rest_per_run = max(0.0, wall * slots - train_s - eval_s) / len(configs)
    print(f"\n== slice: {len(configs)} runs of {args.dataset}, 1 epoch, {sizes['train']} train / "
          f"{sizes['validation']} validation / {sizes['test']} test rows, {slots} slot(s): wall {wall:.1f} s "
          f"({3600 * len(configs) / wall:.0f} runs/hour)")
    print(f"price of a training token  {1e6 * per_train_token:9.2f} us  ({1 / per_train_token:,.0f} useful tok/s per slot)")
    print(f"price of an evaluated token {1e6 * per_eval_token:8.2f} us")
    print(f"rest of a run (start-up, damage probe, features; compiling if any) {rest_per_run:.1f} s")

    val_fraction = configs[0].val_fraction
    print(f"\n== the row: {len(ROW_DATASETS)} datasets x 27 runs x {ROW_EPOCHS} epochs at the paper's sizes")
    total = 0.0
    for name in ROW_DATASETS:
        n_train, n_test = REGISTRY[name].paper_sizes
        m = mean_tokens(name, tokenizer, 128)
        train_tok = n_train * (1 - val_fraction) * m
        eval_tok = (n_train * val_fraction + n_test) * m
        run_s = rest_per_run + ROW_EPOCHS * (train_tok * per_train_token + eval_tok * per_eval_token)
        total += 27 * run_s / slots
        print(f"{name:30s} {n_train:6d}/{n_test:<6d} rows, {m:5.1f} tokens/example"
              f"{' (Emotion stands in)' if name in STAND_IN else ''}: {27 * run_s / slots / 3600:6.2f} h")
    print(f"\nROW ESTIMATE: {total / 3600:.2f} hours on this machine (target on one H100: <= {TARGET_HOURS:g} h)")


if __name__ == "__main__":
    main()
