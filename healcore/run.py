"""execute(config, store): the one recipe behind the CLI, the grid workers and Ray tasks.

  pre-flight (no folder is written before it passes): config, model config, layer selection, data
  -> lock the run folder -> corrupt -> damage probe + 'before' features -> fine-tune, evaluating every
  epoch (metrics line, best-epoch features, checkpoint) -> summary -> drop the checkpoint.

A completed run is returned as is; an interrupted or failed one resumes from its last checkpoint.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

import numpy as np

from .config import RunConfig
from .corruption import CorruptionSpec, parse_layers
from .data import Splits, load_splits, stratified_take
from .errors import CorruptionSpecError, HealcoreError, Interrupted, TrainingDiverged
from .store import RunHandle, RunStore, now

FEATURE_SEED = 0  # the same test rows are stored for every run of a dataset, so panels compare alike


def preflight(cfg: RunConfig) -> Splits:
    """Everything that can be wrong with the inputs, checked before anything is written."""
    from .models import check_architecture

    cfg.validate()
    L = check_architecture(cfg.model)
    indices = parse_layers(cfg.corrupt).resolve(L)
    if cfg.method == "shuffle" and 0 < len(indices) < 2:
        raise CorruptionSpecError("method=shuffle needs at least 2 chosen layers to permute; choose more layers")
    return load_splits(cfg)


class _StopFlag:
    """Set by SIGTERM/SIGINT; the training loop checks it between steps and stops cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def execute(cfg: RunConfig, store: RunStore, *, show_progress: bool = False,
            on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Run (or reuse, or resume) one healing run; returns its summary."""
    splits = preflight(cfg)
    handle = store.open_run(cfg)
    with handle:
        status = handle.read_status()
        if status.get("state") == "completed" and handle.read_summary() is not None:
            return handle.read_summary()
        stop = _StopFlag()
        stop.install()
        attempt = int(status.get("attempt", 0)) + 1
        handle.set_status("running", started=status.get("started", now()), attempt=attempt)
        handle.log(f"attempt {attempt} started (pid {os.getpid()}); data from {splits.source}; "
                   f"sizes {splits.sizes()}" + "".join(f"; {n}" for n in splits.notes))
        handle.start_heartbeat()
        try:
            summary = _run(cfg, splits, handle, stop, show_progress, on_epoch)
        except Interrupted:
            handle.set_status("interrupted", ended=now())
            handle.log("interrupted; resumable from the last finished epoch")
            raise
        except BaseException as err:  # noqa: BLE001 - every failure is recorded before it propagates
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            if isinstance(err, KeyboardInterrupt):
                handle.set_status("interrupted", ended=now())
                raise
            if type(err).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
                message = ("CUDA out of memory; lower batch_size or max_length, or run fewer runs per GPU "
                           f"(--runs-per-gpu) ({message[:120]})")
            elif isinstance(err, OSError) and getattr(err, "errno", None) == 28:
                message = f"disk full while writing the run ({message}); free space and rerun to resume"
            elif not isinstance(err, HealcoreError):
                message = f"{type(err).__name__}: {message}"
            try:
                handle.set_status("failed", ended=now(), error=message[:500], traceback=traceback.format_exc())
                handle.log(f"failed: {message}")
            except OSError:
                pass  # full disk: the status cannot be written; the exception still reaches the caller
            raise
        finally:
            stop.restore()
        handle.set_status("completed", ended=now())
        handle.log("completed")
        return summary


def _run(cfg: RunConfig, splits: Splits, handle: RunHandle, stop: _StopFlag, show_progress: bool,
         on_epoch: Callable[[dict], None] | None) -> dict:
    import torch
    import transformers

    from . import corruption
    from .batching import encode
    from .evaluate import majority_f1, metrics, probe
    from .models import build_classifier, hardware_name, load_encoder, load_tokenizer, pick_device
    from .train import (eval_max_tokens, load_state, lr_factor, make_optimizer, pooled_features, predict,
                        save_state, train_epoch, use_bf16)

    t0 = time.perf_counter()
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    encoder = load_encoder(cfg.model)
    report = corruption.apply(encoder, CorruptionSpec.from_config(cfg))
    K = len(splits.classes)
    model = build_classifier(encoder, K, cfg.pooling, cfg.seed)
    if cfg.mode == "lora":
        from peft import LoraConfig, get_peft_model

        model.encoder = get_peft_model(model.encoder, LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r,
                                                                 lora_dropout=0.1))
    elif cfg.mode == "linear_probe":
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    model.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cache = handle.store.root / ".cache" / "tokens"
    enc_train = encode(tokenizer, splits.train, cfg.max_length, cache)
    enc_val = encode(tokenizer, splits.validation, cfg.max_length, cache) if len(splits.validation) else None
    enc_test = encode(tokenizer, splits.test, cfg.max_length, cache)
    max_tokens = eval_max_tokens(cfg.batch_size, cfg.max_length)
    sample = stratified_take(enc_test.labels, cfg.feature_samples, np.random.default_rng(FEATURE_SEED))
    setup_s = time.perf_counter() - t0

    # ---- the damage before any fine-tuning: a probe on the frozen (corrupted) body
    probe_result = handle.read_json("probe.json")
    if probe_result is None:
        t = time.perf_counter()
        idx = stratified_take(enc_train.labels, cfg.probe_samples, np.random.default_rng(FEATURE_SEED))
        sub = _subset(enc_train, idx)
        x_train = pooled_features(model, sub, device, pad_id, max_tokens, cfg.precision)
        x_test = pooled_features(model, enc_test, device, pad_id, max_tokens, cfg.precision)
        if not (np.isfinite(x_train).all() and np.isfinite(x_test).all()):
            raise TrainingDiverged("the corrupted model outputs NaN/inf before any fine-tuning; "
                                   "lower the corruption strength (bitflip/noise) or choose fewer layers")
        probe_result = probe(x_train, sub.labels, x_test, enc_test.labels, K) if len(idx) else {}
        probe_result["seconds"] = time.perf_counter() - t
        if len(sample):
            handle.save_features("before", X=_half(x_test[sample]), labels=enc_test.labels[sample],
                                 index=sample)
        handle.write_json("probe.json", probe_result)
        handle.log(f"damage probe (logistic regression on frozen features): F1 {probe_result.get('f1_weighted', float('nan')):.2f}")

    # ---- fine-tuning
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
    steps_per_epoch = -(-len(enc_train) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
    start_epoch, best = 1, {"epoch": None, "score": -float("inf")}
    resumed = handle.latest_checkpoint()
    if resumed is not None:
        epoch_done, folder = resumed
        meta = load_state(folder, model, optimizer, scheduler)
        start_epoch, best = epoch_done + 1, meta["best"]
        handle.log(f"resumed from the checkpoint of epoch {epoch_done}")

    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=(start_epoch - 1) * steps_per_epoch, desc=cfg.run_id[:40], unit="step",
                   file=sys.stderr, dynamic_ncols=True)
    last_report = [0.0]

    def on_step(step: int, steps: int, loss: float, epoch: int = 0) -> None:
        if bar is not None:
            bar.n = (epoch - 1) * steps_per_epoch + step
            bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}")
            bar.refresh()
        if time.time() - last_report[0] > 2.0:
            last_report[0] = time.time()
            handle.progress(epoch=epoch, epochs=cfg.epochs, step=step, steps=steps, loss=loss)

    for epoch in range(start_epoch, cfg.epochs + 1):
        stats = train_epoch(model, enc_train, optimizer, scheduler, epoch=epoch, seed=cfg.seed,
                            batch_size=cfg.batch_size, device=device, pad_id=pad_id,
                            freeze_body=cfg.mode == "linear_probe", precision=cfg.precision, stop=stop,
                            on_step=lambda s, n, l, e=epoch: on_step(s, n, l, e))
        t = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch, **stats, "lr": scheduler.get_last_lr()[0]}
        if enc_val is not None:
            val_pred, _ = predict(model, enc_val, device, pad_id, max_tokens, precision=cfg.precision)
            row["validation"] = metrics(enc_val.labels, val_pred, K)
        test_pred, test_pooled = predict(model, enc_test, device, pad_id, max_tokens, keep_pooled=sample,
                                           precision=cfg.precision)
        row["test"] = metrics(enc_test.labels, test_pred, K)
        row["eval_s"] = time.perf_counter() - t
        score = row[cfg.select_on][cfg.metric]
        if score > best["score"]:
            best = {"epoch": epoch, "score": score}
            if test_pooled is not None:
                handle.save_features("best", X=_half(test_pooled), labels=enc_test.labels[sample],
                                     predictions=test_pred[sample], index=sample, epoch=np.array(epoch))
        handle.append_metrics(row)
        handle.log(f"epoch {epoch}: loss {row['train_loss']:.4f}, "
                   + (f"val F1 {row['validation']['f1_weighted']:.2f}, " if "validation" in row else "")
                   + f"test F1 {row['test']['f1_weighted']:.2f} ({stats['train_s']:.1f}s train, {row['eval_s']:.1f}s eval)")
        handle.progress(epoch=epoch, epochs=cfg.epochs, step=stats["steps"], steps=stats["steps"],
                        loss=row["train_loss"])
        if epoch < cfg.epochs and cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0:
            folder = handle.new_checkpoint_dir(epoch)
            save_state(folder, model, optimizer, scheduler, {"epoch": epoch, "best": best})
            handle.commit_checkpoint(epoch)
        if on_epoch is not None:
            on_epoch(row)
    if bar is not None:
        bar.close()

    rows = handle.epochs()
    best_row = next(r for r in rows if r["epoch"] == best["epoch"])
    train_tokens = sum(r["tokens"] for r in rows)
    train_s = sum(r["train_s"] for r in rows)
    n_params = sum(p.numel() for p in model.parameters())
    summary = {
        "run_id": cfg.run_id,
        "config": cfg.to_dict(),
        "classes": splits.classes,
        "data": {"source": splits.source, "sizes": splits.sizes(), "notes": splits.notes},
        "corruption": report,
        "device": device,
        "hardware": hardware_name(device),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "bf16": use_bf16(device, cfg.precision),
        "params": {"total": n_params, "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)},
        "majority_f1": majority_f1(enc_train.labels, enc_test.labels, K),
        "probe": probe_result,
        "best_epoch": best["epoch"],
        "selected_on": f"{cfg.select_on}/{cfg.metric}",
        "best": {split: {k: best_row[split][k] for k in ("accuracy", "f1_weighted", "f1_macro")}
                 for split in ("validation", "test") if split in best_row},
        "best_on_test": max(r["test"]["f1_weighted"] for r in rows),  # the paper's protocol, for comparison
        "final": {"epoch": rows[-1]["epoch"], "train_loss": rows[-1]["train_loss"],
                  "test_f1_weighted": rows[-1]["test"]["f1_weighted"]},
        "losses": [r["train_loss"] for r in rows],
        "healing": best_row["test"]["f1_weighted"] - probe_result["f1_weighted"] if "f1_weighted" in probe_result else None,
        "timing": {"setup_s": setup_s, "train_s": train_s, "eval_s": sum(r["eval_s"] for r in rows),
                   "tokens_per_s": train_tokens / train_s if train_s else None,
                   "tokens_per_epoch": rows[-1]["tokens"]},
    }
    handle.write_summary(summary)
    handle.drop_checkpoints()  # a completed run keeps metrics, summary and features only
    return summary


def _half(x: np.ndarray) -> np.ndarray:
    """Features are stored as float16 (half the disk; projections need no more), clipped to its range."""
    return np.clip(x, -65504, 65504).astype(np.float16)


def _subset(enc, idx: np.ndarray):
    from .batching import Encoded

    lengths = enc.lengths[idx]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.concatenate([enc.ids[enc.offsets[i]:enc.offsets[i + 1]] for i in idx]) if len(idx) else enc.ids[:0]
    types = None
    if enc.types is not None:
        types = np.concatenate([enc.types[enc.offsets[i]:enc.offsets[i + 1]] for i in idx])
    return Encoded(ids, types, offsets, enc.labels[idx])
