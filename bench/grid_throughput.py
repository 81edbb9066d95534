"""Grid throughput: the grid, not the run, as the unit of work. A benchmark script, not a test.

Run (CPU):  HEALCORE_DATA=../shared/data python bench/grid_throughput.py
Run (GPU):  HEALCORE_DATA=../shared/data python bench/grid_throughput.py --device cuda --ks 1,3,9,27 --models bert-base,bert-large \
            --skip-overhead

1. Per-run overhead: a grid of 12 short minilm-l6 runs on SST-2 (the demo's 4 settings x 3 seeds, 1 epoch,
   300 train rows, 100 test rows), one process per run vs persistent workers, one worker. Overhead per run =
   (wall - the runs' training time) / runs; start-up per run also takes out their evaluation and damage probe.
2. Throughput for grids of K runs (K settings x learning rates of one seed: the runs a fused group can take),
   each way: the Hugging Face Trainer with run_glue's defaults (one process per run; the baseline), healcore with
   one process per run, persistent workers, fused, compiled (persistent workers, `compile=--compile`), fused and
   compiled. Prints runs per hour and useful (non-padding) training tokens per second of wall time. Compiled ways
   start from an empty compile cache: their wall time includes compiling.
Ratios are printed last. Each model's runs read the same data; BERT-base/large-sized models get random weights.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HEALCORE_DATA", str(ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SETTINGS = ["none", "bottom:1", "top:1", "bottom:2", "top:2", "bottom:3", "top:3", "bottom:4", "top:4"]
LRS = [5e-5, 2e-5, 1e-5]


def grid(model: str, k: int, base: dict) -> list:
    """k runs of one seed: settings first, then learning rates (what one fused group can hold)."""
    from healcore.core.config import RunConfig

    return [RunConfig.from_dict({**base, "model": model, "corrupt": corrupt, "lr": lr, "seed": 0})
            for lr in LRS for corrupt in SETTINGS][:k]


def measure(configs, store_dir: Path, way: str, compile_mode: str = "reduce-overhead") -> dict:
    """Run the configs one way; wall time and what the runs' summaries say they spent. Compiled ways start
    from an empty compile cache, so their wall time includes compiling."""
    from healcore.grids.execution import Execution
    from healcore.grids.local import run_local
    from healcore.store.runs import RunStore

    store = RunStore(store_dir)
    if "compiled" in way:
        configs = [c.replace(compile=compile_mode) for c in configs]
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(store_dir / "inductor-cache")  # the workers inherit it
    t0 = time.perf_counter()
    if way == "trainer":
        for cfg in configs:
            subprocess.run([sys.executable, __file__, "--trainer-run", json.dumps(cfg.to_dict()), str(store_dir)],
                           check=True, capture_output=True)
    else:
        execution = Execution(process_per_run=way == "process per run", fuse=len(configs) if way.startswith("fused") else 0)
        result = run_local(configs, store, execution, quiet=True)
        assert result["completed"] == len(configs), result
    wall = time.perf_counter() - t0
    if way == "trainer":
        done = [json.loads(p.read_text()) for p in store_dir.glob("trainer-*.json")]
        return {"wall": wall, "tokens": sum(d["tokens"] for d in done), "train_s": sum(d["train_s"] for d in done),
                "work_s": sum(d["train_s"] + d["eval_s"] for d in done)}
    summaries = [store.summary(c.run_id) for c in configs]
    train = sum(s["timing"]["train_s"] for s in summaries)
    work = sum(s["timing"]["train_s"] + s["timing"]["eval_s"] + (s["probe"] or {}).get("seconds", 0.0)
               for s in summaries)
    tokens = sum(s["timing"]["tokens_per_epoch"] * s["config"]["epochs"] for s in summaries)
    return {"wall": wall, "tokens": tokens, "train_s": train, "work_s": work}


def trainer_run(config: dict, out_dir: str) -> None:
    """One run as the Trainer with run_glue.py's defaults does it, in this process: pad every example to the
    max length, fp32, linear decay, evaluate every epoch. Writes its token count and times."""
    import numpy as np
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments,
                              default_data_collator)
    from transformers.utils import logging as hf_logging

    from healcore.core.config import RunConfig
    from healcore.core.data import load_splits
    from healcore.engine.models import resolve_model_path

    hf_logging.set_verbosity_error()
    cfg = RunConfig.from_dict(config)
    splits = load_splits(cfg)
    path = resolve_model_path(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)

    def dataset(df):
        enc = tok(df["text"].tolist(), truncation=True, max_length=cfg.max_length, padding="max_length")
        return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                 "labels": int(df["label"].iloc[i])} for i in range(len(df))], int(np.sum(enc["attention_mask"]))

    train, tokens = dataset(splits.train)
    test, _ = dataset(splits.test)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(splits.classes))
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=cfg.batch_size,
                             learning_rate=cfg.lr, num_train_epochs=cfg.epochs, eval_strategy="epoch",
                             save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
                             use_cpu=cfg.device == "cpu" or not _cuda(), seed=cfg.seed)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test,
                      data_collator=default_data_collator)
    out = trainer.train()
    runtime = float(out.metrics["train_runtime"])
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"trainer-{cfg.run_id}.json").write_text(json.dumps(
        {"tokens": tokens * cfg.epochs, "train_s": runtime, "eval_s": 0.0}))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def random_model_folder(size: str, folder: Path) -> str:
    """A BERT-base- or BERT-large-sized model with random weights, saved with minilm-l6's tokenizer."""
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig

    from healcore.engine.models import resolve_model_path

    dims = {"bert-base": (768, 12, 12, 3072), "bert-large": (1024, 24, 16, 4096)}[size]
    torch.manual_seed(0)
    AutoModel.from_config(BertConfig(hidden_size=dims[0], num_hidden_layers=dims[1], num_attention_heads=dims[2],
                                     intermediate_size=dims[3])).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6")).save_pretrained(folder)
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--ks", default="1,3,9", help="grid sizes K [1,3,9; 27 on a GPU]")
    ap.add_argument("--models", default="minilm-l6", help="minilm-l6, bert-base, bert-large (random weights)")
    ap.add_argument("--ways", default="trainer,process per run,persistent,fused,compiled,fused and compiled",
                    help="comma-separated; compiled ways use --compile")
    ap.add_argument("--compile", choices=("default", "reduce-overhead"), default="reduce-overhead",
                    help="the compile mode of the compiled ways (on CPU both mean inductor kernels, no CUDA graphs)")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--trainer-run", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trainer_run:
        trainer_run(json.loads(args.trainer_run[0]), args.trainer_run[1])
        return
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} cores, "
          f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}; {time.strftime('%Y-%m-%d')}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="hc-grid-bench-"))
    base = {"dataset": "sst2", "epochs": 1, "max_train": 300, "max_test": 100, "max_length": 64,
            "feature_samples": 50, "probe_samples": 100, "analysis_samples": 64, "checkpoint_every": 0,
            "device": args.device}
    ratios = []
    if not args.skip_overhead:
        from healcore.core.config import RunConfig

        demo = [RunConfig.from_dict({**base, "model": "minilm-l6", "corrupt": corrupt, "lr": 5e-5, "seed": seed})
                for seed in (0, 1, 2) for corrupt in ("none", "bottom:3", "top:3", "bottom:6")]
        print(f"\n== per-run overhead: {len(demo)} runs (minilm-l6, SST-2, 1 epoch, 300 train rows), 1 worker", flush=True)
        over = {}
        for way in ("process per run", "persistent"):
            m = measure(demo, work / f"overhead-{way.replace(' ', '-')}", way)
            over[way] = m
            print(f"{way:16s} wall {m['wall']:7.1f}s; overhead per run (wall - training) "
                  f"{(m['wall'] - m['train_s']) / len(demo):5.2f}s; start-up per run (wall - training, evaluation, "
                  f"probe) {(m['wall'] - m['work_s']) / len(demo):5.2f}s", flush=True)
        ratios.append(("per-run start-up, process per run / persistent",
                       (over["process per run"]["wall"] - over["process per run"]["work_s"])
                       / max(1e-9, over["persistent"]["wall"] - over["persistent"]["work_s"])))
    for name in args.models.split(","):
        model = name if name == "minilm-l6" else random_model_folder(name, work / name)
        for k in [int(x) for x in args.ks.split(",")]:
            configs = grid(model, k, base)
            print(f"\n== {name}, grid of K={k} runs (SST-2, 1 epoch, 300 train rows, batch 32)", flush=True)
            got = {}
            for way in args.ways.split(","):
                if way.startswith("fused") and k == 1:
                    continue
                m = measure(configs, work / f"{name}-{k}-{way.replace(' ', '-')}", way, args.compile)
                got[way] = m
                print(f"{way:16s} wall {m['wall']:7.1f}s  {3600 * k / m['wall']:8.1f} runs/hour  "
                      f"{m['tokens'] / m['wall']:9.0f} useful tokens/s", flush=True)
            for way in ("persistent", "fused", "compiled", "fused and compiled"):
                if way in got and "trainer" in got:
                    ratios.append((f"{name} K={k}: {way} / Trainer (runs per hour)", got["trainer"]["wall"] / got[way]["wall"]))
            for way in ("fused", "compiled", "fused and compiled"):
                if way in got and "persistent" in got:
                    ratios.append((f"{name} K={k}: {way} / persistent (runs per hour)",
                                   got["persistent"]["wall"] / got[way]["wall"]))
            if "persistent" in got and "process per run" in got:
                ratios.append((f"{name} K={k}: persistent / process per run (runs per hour)",
                               got["process per run"]["wall"] / got["persistent"]["wall"]))
    print("\nRATIOS")
    for label, value in ratios:
        print(f"  {label}: {value:.2f}x")


if __name__ == "__main__":
    main()
