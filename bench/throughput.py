"""Throughput: healcore's trainer against the Hugging Face Trainer, side by side in one process.

Run (CPU):  python bench/throughput.py --device cpu
Run (GPU):  python bench/throughput.py --device cuda   (adds BERT-base/large-sized models and MFU at large batches)

(a) Trainer configured like run_glue.py's defaults: fp32, padding to max length 128, batch 32.
(b) Trainer tuned as its docs allow: dynamic padding, length-grouped sampling, bf16 on GPU.
(c) healcore's training loop (healcore.engine.train.train_epoch with its optimizer and schedule), as every run uses it, at the precision
    precision=auto picks on the device (bf16 autocast on AVX512-BF16/AMX CPUs, fp32 on CUDA); both are printed.
    With --compile (the default on CUDA: reduce-overhead, CUDA graphs) the compiled step is timed too, and c is
    the faster of eager and compiled.
Same model, data, batch size, learning rate and number of optimizer steps. Timing skips the first
`--warmup` steps of each. Prints useful (non-padding) tokens per second and the ratios c/a and c/b, last.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HEALCORE_DATA", str(ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

H100_BF16_PEAK = 790e12  # measured bf16 dense peak of one H100 (FLOP/s), for model FLOP utilisation


def texts(dataset: str, n: int):
    from healcore.core.config import RunConfig
    from healcore.core.data import load_splits

    splits = load_splits(RunConfig(dataset=dataset, max_train=n, val_fraction=0.0, select_on="test"))
    return splits.train, len(splits.classes)


def random_bert(size: str, num_labels: int):
    """A BERT-base- or BERT-large-sized model with random weights (throughput does not need pretraining)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    dims = {"bert-base": (768, 12, 12, 3072), "bert-large": (1024, 24, 16, 4096)}[size]
    cfg = BertConfig(hidden_size=dims[0], num_hidden_layers=dims[1], num_attention_heads=dims[2],
                     intermediate_size=dims[3], num_labels=num_labels)
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg)


def non_embedding_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


class StepTimer:
    """Wall time of steps after the warm-up ones (a TrainerCallback and a plain helper)."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device, self.t0, self.t1, self.step = warmup, device, None, None, 0

    def begin(self) -> None:
        self.step += 1
        if self.step == self.warmup + 1:
            self._sync()
            self.t0 = time.perf_counter()

    def end_all(self) -> None:
        self._sync()
        self.t1 = time.perf_counter()

    def _sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


def _length_grouping(training_args_cls, on: bool) -> dict:
    """transformers renamed group_by_length to train_sampling_strategy during 5.x; use whichever exists."""
    fields = getattr(training_args_cls, "__dataclass_fields__", {})
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length" if on else "random"}
    return {"group_by_length": on}


def run_trainer(model_factory, tok, df, steps, batch, lr, device, tuned: bool, warmup: int):
    from transformers import (DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments,
                              default_data_collator)

    pair = df["text_pair"].tolist() if "text_pair" in df else None
    if tuned:
        enc = tok(df["text"].tolist(), pair, truncation=True, max_length=128)
        collator = DataCollatorWithPadding(tok)
    else:
        enc = tok(df["text"].tolist(), pair, truncation=True, max_length=128, padding="max_length")
        collator = default_data_collator
    labels = df["label"].tolist()
    # A plain list of feature dicts (a map-style dataset): the length-grouped sampler reads each input_ids length.
    ds = [{**{k: enc[k][i] for k in enc.keys()}, "labels": labels[i]} for i in range(len(labels))]
    timer = StepTimer(warmup, device)
    consumed = []

    class Timing(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            timer.begin()

        def on_train_end(self, args, state, control, **kw):
            timer.end_all()

    orig_collate = collator

    def counting_collator(features):
        if len(consumed) >= warmup:
            consumed.append(sum(sum(f["attention_mask"]) for f in features))
        else:
            consumed.append(0)
        feats = [{k: v for k, v in f.items() if k != "length"} for f in features]
        return orig_collate(feats)

    args = TrainingArguments(output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "hc-bench-trainer"),
                             per_device_train_batch_size=batch, learning_rate=lr, max_steps=steps,
                             bf16=tuned and device == "cuda", use_cpu=device == "cpu", report_to="none",
                             save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
                             **_length_grouping(TrainingArguments, tuned),
                             remove_unused_columns=False)
    model = model_factory()
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=counting_collator, callbacks=[Timing()])
    trainer.train()
    useful = sum(consumed[warmup:warmup + steps - warmup])
    del trainer, model
    return useful / timer.seconds, useful


def run_healcore(model_factory, tok, df, steps, batch, lr, device, warmup: int, precision: str = "auto",
                 compile: str = "off"):
    """healcore's real training loop (train.train_epoch, with make_optimizer and the LambdaLR schedule a run
    builds): an untimed warm-up epoch of `warmup` batches, then a timed epoch over every example. Compiled
    (`compile` not off), the warm-up epoch is a whole pass, so that the timed epoch meets no shape (and on CUDA
    no CUDA graph) for the first time: steady-state speed, compile time left out (bench/grid_throughput.py
    counts it)."""
    import torch

    from healcore.engine.batching import encode
    from healcore.engine.run import _subset
    from healcore.engine.train import lr_factor, make_optimizer, train_epoch

    hf_model = model_factory()

    class Wrapped(torch.nn.Module):  # same model as the Trainer's, with the (logits, pooled) a classifier returns
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).logits, None

    model = Wrapped(hf_model).to(device)
    enc = encode(tok, df, 128)
    opt = make_optimizer(model, lr, 0.0, device)
    total = steps + warmup
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, 0, "linear"))
    common = dict(seed=0, batch_size=batch, device=device, pad_id=tok.pad_token_id, precision=precision,
                  compile=compile)
    if compile != "off":
        train_epoch(model, enc, opt, sched, epoch=1, **common)
    elif warmup:
        train_epoch(model, _subset(enc, np.arange(min(len(enc), warmup * batch))), opt, sched, epoch=0, **common)
    stats = train_epoch(model, enc, opt, sched, epoch=1, **common)
    del model, opt
    return stats["tokens"] / stats["train_s"], stats["tokens"]


def bench(label, model_factory, tok, df, args, flops_params=None):
    print(f"\n== {label}: {len(df)} examples, batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up), "
          f"device {args.device}", flush=True)
    a, _ = run_trainer(model_factory, tok, df, args.steps, args.batch_size, args.lr, args.device, False, args.warmup)
    print(f"(a) Trainer, run_glue defaults (fp32, pad to 128): {a:,.0f} useful tokens/s", flush=True)
    b, _ = run_trainer(model_factory, tok, df, args.steps, args.batch_size, args.lr, args.device, True, args.warmup)
    print(f"(b) Trainer, tuned (dynamic padding, length grouping{', bf16' if args.device == 'cuda' else ''}): "
          f"{b:,.0f} useful tokens/s", flush=True)
    from healcore.engine.train import use_bf16

    default = "bf16" if use_bf16(args.device, "auto") else "fp32"  # what precision=auto picks on this device
    speed = {}
    for precision in ("fp32", "bf16"):
        speed[precision], _ = run_healcore(model_factory, tok, df, args.steps, args.batch_size, args.lr, args.device,
                                           args.warmup, precision)
        print(f"(c, {precision}) healcore with --precision {precision}"
              f"{' (the default here: c)' if precision == default else ''}: {speed[precision]:,.0f} useful tokens/s",
              flush=True)
    c = speed[default]
    if args.compile != "off":
        compiled, _ = run_healcore(model_factory, tok, df, args.steps, args.batch_size, args.lr, args.device,
                                   args.warmup, default, args.compile)
        print(f"(c, compiled) healcore with --precision {default} --set compile={args.compile}: "
              f"{compiled:,.0f} useful tokens/s ({compiled / c:.2f}x eager)", flush=True)
        c = max(c, compiled)  # the faster of eager and compiled is what a user would pick
    if flops_params and args.device == "cuda":
        print(f"    healcore model FLOP utilisation: {6 * flops_params * c / H100_BF16_PEAK:.1%} of 790 TFLOP/s")
    print(f"RATIO {label}: c/a = {c / a:.2f}x   c/b = {c / b:.2f}x", flush=True)
    return c / a, c / b


def minilm_classifier(minilm, num_labels):
    """minilm-l6 with its pretrained weights, or with random ones of the same shape where only its tokenizer and
    config travelled (a GPU machine with no network): a step's speed does not depend on the weights' values."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if any((Path(minilm) / name).exists() for name in ("model.safetensors", "pytorch_model.bin")):
        return AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=num_labels)
    print("minilm-l6's weights are absent: random weights of its shape", flush=True)
    return AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(minilm, num_labels=num_labels))


def main() -> None:
    ap = argparse.ArgumentParser(description="healcore vs Hugging Face Trainer throughput")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per trainer [cpu 30, cuda 200]")
    ap.add_argument("--warmup", type=int, default=None, help="steps not timed [cpu 3, cuda 20]")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--datasets", default="sst2,ag_news")
    ap.add_argument("--compile", choices=("off", "default", "reduce-overhead"), default=None,
                    help="also time healcore's step compiled this way [cpu off, cuda reduce-overhead]")
    ap.add_argument("--mfu-batches", default="256,1024",
                    help="cuda only: batch sizes at which healcore alone trains the BERT-base-sized model on the first "
                         "dataset, to report model FLOP utilisation at large batches [256,1024]; '' skips")
    args = ap.parse_args()
    args.steps = args.steps or (30 if args.device == "cpu" else 200)
    args.warmup = args.warmup if args.warmup is not None else (3 if args.device == "cpu" else 20)
    args.compile = args.compile or ("off" if args.device == "cpu" else "reduce-overhead")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from healcore.engine.models import resolve_model_path

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}; {time.strftime('%Y-%m-%d')}")
    minilm = resolve_model_path("minilm-l6")
    tok = AutoTokenizer.from_pretrained(minilm)
    ratios = []
    for dataset in args.datasets.split(","):
        df, k = texts(dataset, args.steps * args.batch_size)
        factory = lambda: minilm_classifier(minilm, k)  # noqa: E731
        ratios.append(bench(f"minilm-l6 / {dataset}", factory, tok, df, args,
                            non_embedding_params(factory()) if args.device == "cuda" else None))
        if args.device == "cuda" and dataset == args.datasets.split(",")[0]:
            for size in ("bert-base", "bert-large"):
                f = lambda s=size: random_bert(s, k)  # noqa: E731
                ratios.append(bench(f"{size} (random weights) / {dataset}", f, tok, df, args, non_embedding_params(f())))
    if args.device == "cuda" and args.mfu_batches:
        dataset = args.datasets.split(",")[0]
        steps = max(args.warmup + 10, args.steps // 2)
        for batch in [int(b) for b in args.mfu_batches.split(",")]:
            df, k = texts(dataset, min(steps * batch, 20000))
            f = lambda: random_bert("bert-base", k)  # noqa: E731
            for compile in sorted({"off", args.compile}):
                c, _ = run_healcore(f, tok, df, steps, batch, args.lr, "cuda", args.warmup, "bf16", compile)
                print(f"\n== bert-base (random weights) / {dataset}, batch {batch}, healcore only, bf16, compile "
                      f"{compile}: {c:,.0f} useful tokens/s, model FLOP utilisation "
                      f"{6 * non_embedding_params(f()) * c / H100_BF16_PEAK:.1%} of 790 TFLOP/s", flush=True)
    print()
    print(f"RATIOS (last run): c/a = {ratios[-1][0]:.2f}x, c/b = {ratios[-1][1]:.2f}x; "
          f"min over runs: c/a = {min(r[0] for r in ratios):.2f}x, c/b = {min(r[1] for r in ratios):.2f}x")


if __name__ == "__main__":
    main()
