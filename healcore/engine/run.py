"""execute(config, store): the one recipe behind the CLI, the grid workers and Ray tasks.

  preflight (no folder is written before it passes): config, model and its weights, layer selection, data
  -> lock the run folder -> set_up: load, record the pretrained layers, corrupt, build the classifier
  -> damage_probe: a probe on the frozen corrupted body + 'before' features
  -> fine_tune: every epoch a metrics line; at a new best epoch its features and layer representations;
     a checkpoint every `checkpoint_every` epochs
  -> summarise: summary.json (with weight movement and per-class F1) -> drop the checkpoint.

A completed run is returned as is; an interrupted or failed one resumes from its last checkpoint.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import transformers

from healcore.core.config import RunConfig
from healcore.core.data import Splits, stratified_take
from healcore.core.errors import (DiskFullError, HealcoreError, Interrupted, RunBusyError, StoreError,
                                  TrainingDiverged, first_line)
from healcore.core.layers import chosen_layers
from healcore.core.model_facts import check_model_settings, check_weights, family
from healcore.core.stopping import SignalFlag
from healcore.engine import corruption
from healcore.engine.batching import Encoded
from healcore.engine.corruption import CorruptionSpec
from healcore.engine.evaluate import majority_f1, metrics, probe
from healcore.engine.internals import layer_transitions, read_layers, snapshot, weight_movement
from healcore.engine.models import build_classifier, check_architecture, hardware_name, pick_device
from healcore.engine.resources import Loader
from healcore.engine.train import (eval_max_tokens, load_state, make_optimizer, pooled_features, predict, save_state,
                                   schedule_of, train_epoch, use_bf16)
from healcore.results.analysis import cka_matrix
from healcore.store.io import NO_SPACE, disk_full, human, now
from healcore.store.runs import RunHandle, RunStore, damaged_results

FEATURE_SEED = 0  # the same test rows are stored for every run of a dataset, so panels compare alike
ANALYSIS_SEED = 1  # and the same rows (another draw) carry the per-layer representations


def preflight(cfg: RunConfig, loader: Loader | None = None) -> Splits:
    """Everything that can be wrong with the inputs, checked before anything is written."""
    loader = loader or Loader()
    L = check_architecture(cfg.model)  # (the config itself was validated when it was built)
    check_weights(cfg.model)  # whole, and saying what config.json says (layers, width)
    # [CLS] of a decoder, a head the model lacks: refused
    check_model_settings(cfg.model, cfg.pooling, cfg.method, cfg.damaged_heads)
    chosen_layers(cfg.layers, cfg.method, L)
    loader.tokenizer(cfg.model)  # loaded now, as the run will (a garbage tokenizer file is one line, no folder)
    return loader.splits(cfg)


class StopFlag:
    """Set by SIGTERM/SIGINT (in the main thread) or by a stop file in the run folder (any host); the training
    loop checks it between steps and stops cleanly."""

    def __init__(self, *handles: RunHandle) -> None:
        self.handles = handles  # a fused group stops when any of its runs is asked to
        self.signals = SignalFlag()

    def __call__(self) -> bool:
        return self.signals.requested or any(h.stop_requested.is_set() for h in self.handles)

    def __enter__(self) -> "StopFlag":
        self.signals.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.signals.__exit__(*exc)


@dataclass(frozen=True)
class RunObserver:
    """What a caller (a test, a profiler) may watch a run through without patching the engine: each callback gets
    what the run has just made, and must leave it as it is."""

    set_up: Callable[[Any], None] | None = None  # the Setup (corrupted model, data), before the damage probe
    optimizer: Callable[[torch.optim.Optimizer], None] | None = None  # the optimizer, before its first step
    trained: Callable[[Any], None] | None = None  # the Setup after the last epoch, before summary.json


def execute(cfg: RunConfig, store: RunStore, *, show_progress: bool = False,
            on_epoch: Callable[[dict], None] | None = None, loader: Loader | None = None,
            observer: RunObserver | None = None) -> dict:
    """Run (or reuse, or resume) one healing run; returns its summary."""
    observer = observer or RunObserver()
    loader = loader or Loader()
    splits = preflight(cfg, loader)
    handle = store.open_run(cfg)
    with handle:
        done = finished_summary(handle)
        if done is not None:
            return done
        with StopFlag(handle) as stop:
            begin_attempt(handle, splits)
            try:
                setup = set_up(cfg, splits, handle, loader)
                if observer.set_up:
                    observer.set_up(setup)
                probe = damage_probe(cfg, setup, handle)
                best = fine_tune(cfg, setup, handle, stop, show_progress, on_epoch, observer.optimizer)
                if observer.trained:
                    observer.trained(setup)
                summary = summarise(cfg, setup, handle, probe, best)
            except BaseException as err:  # noqa: BLE001 - every failure is recorded before it propagates
                record_failure(handle, err)
                raise
        handle.set_status("completed", ended=now())
        handle.log("completed")
        return summary


def finished_summary(handle: RunHandle) -> dict | None:
    """The summary of a run that is complete and whole, to reuse; else None, with any damaged file set aside first
    (kept as <name>.damaged). A run with a damaged file (summary, probe, metrics, features, layer analysis) starts
    again from scratch, deterministic, and writes them all again: the best epoch's model that made them is gone once
    a run completes (and a resumed run writes features only at a new best epoch). A torn checkpoint alone is set
    aside when the run resumes (RunHandle.latest_checkpoint), which then starts from scratch."""
    stored = handle.store.read(handle.config.run_id)
    damaged = damaged_results(stored.damaged)
    if stored.state == "completed" and stored.summary is not None and not damaged:
        handle.drop_checkpoints()  # (a completed run keeps none; a stray one is no reason to run it again)
        return stored.summary
    if not damaged:
        return None  # an unfinished run resumes (its checkpoint is checked then)
    for problem in damaged:
        relative, why = problem.split(": ", 1)
        handle.set_aside(relative, why)
    handle.drop_checkpoints()
    handle.log("the run starts again from scratch to write its damaged files again")
    return None


def outcome(cfg: RunConfig, store: RunStore, loader: Loader | None = None) -> dict:
    """execute() as a result instead of an exception: {"run_id", "state", "error"?}; what a worker or a Ray task
    reports for a run while the grid goes on."""
    out = {"run_id": cfg.run_id}
    try:
        execute(cfg, store, loader=loader)
        out["state"] = "completed"
    except RunBusyError:
        out["state"] = "busy"
    except (Interrupted, KeyboardInterrupt):
        out["state"] = "interrupted"
    except HealcoreError as err:
        out.update(state="failed", error=first_line(err))
    except Exception as err:  # noqa: BLE001 - a run's own error is its result
        out.update(state="failed", error=f"{type(err).__name__}: {first_line(err)}")
    return out


def begin_attempt(handle: RunHandle, splits: Splits, note: str = "") -> None:
    """A new attempt of the run: status running (attempt + 1), a log line, the heartbeat."""
    handle.reserve_space()
    status = handle.read_status()
    attempt = int(status.get("attempt", 0) or 0) + 1
    handle.set_status("running", started=status.get("started", now()), attempt=attempt, node=_ray_node())
    handle.log(f"attempt {attempt} started (pid {os.getpid()}){note}; data from {splits.source}; "
               f"sizes {splits.sizes()}" + "".join(f"; {n}" for n in splits.notes))
    handle.start_heartbeat()


def record_failure(handle: RunHandle, err: BaseException) -> None:
    """The run's end state for an exception: interrupted (a stop request) or failed with a one-line reason."""
    if isinstance(err, (Interrupted, KeyboardInterrupt)):
        handle.set_status("interrupted", ended=now())
        handle.log("interrupted; resumable from the last finished epoch")
        return
    message = first_line(err)
    library_full = isinstance(err, OSError) and getattr(err, "errno", None) in NO_SPACE  # a library's own write
    full = library_full or isinstance(err, DiskFullError)
    if type(err).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
        message = ("CUDA out of memory; lower batch_size or max_length, or run fewer runs per GPU "
                   f"(--runs-per-gpu) ({message[:120]})")
    elif isinstance(err, DiskFullError):
        needed = handle.space_needed
        message = message + " (it resumes from its last checkpoint" + (
            f"; this run writes about {human(needed)} in all)" if needed else ")")
    elif library_full:
        message = f"{disk_full(handle.dir, 0, err)} ({first_line(err)[:80]})"
    elif not isinstance(err, HealcoreError):
        message = f"{type(err).__name__}: {message}"
    if full:
        handle.release_space()  # what was held for these last words
    try:
        handle.set_status("failed", ended=now(), error=message[:500],
                          traceback="" if full else traceback.format_exc())
        handle.log(f"failed: {message}")
    except OSError:
        pass  # full disk: the status cannot be written; the exception still reaches the caller


def _ray_node() -> str | None:
    """The Ray node executing this run, when it is a Ray task (one host can carry several nodes)."""
    if "ray" not in sys.modules:
        return None
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - only a label for status.json
        return None


# ------------------------------------------------------------------------------------------ set-up
@dataclass
class Setup:
    """A run's model and data, ready to train."""

    model: Any
    device: str
    pad_id: int
    classes: list[str]
    train: Any  # batching.Encoded
    validation: Any  # Encoded or None
    test: Any
    feature_rows: np.ndarray  # test rows whose pooled features are stored
    analysis_rows: np.ndarray  # test rows whose per-layer representations are stored
    max_tokens: int  # evaluation batch budget
    corruption: dict  # corruption.apply's report
    data: dict  # where the rows came from, split sizes, what was dropped or capped
    initial: dict | None  # trainable weights at the start of fine-tuning (weight movement)
    pretrained_layers: np.ndarray | None  # (L+1, analysis rows, H) of the model before corruption
    seconds: float


def set_up(cfg: RunConfig, splits: Splits, handle: RunHandle, loader: Loader) -> Setup:
    t0 = time.perf_counter()
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    tokenizer = loader.tokenizer(cfg.model)
    encoder = loader.encoder(cfg.model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cache = handle.store.tokens_cache
    train = loader.encode(tokenizer, splits.train, cfg.max_length, cache)
    validation = loader.encode(tokenizer, splits.validation, cfg.max_length, cache) if len(splits.validation) else None
    test = loader.encode(tokenizer, splits.test, cfg.max_length, cache)
    max_tokens = eval_max_tokens(cfg.batch_size, cfg.max_length)
    feature_rows = stratified_take(test.labels, cfg.feature_samples, np.random.default_rng(FEATURE_SEED))
    analysis_rows = np.sort(stratified_take(test.labels, cfg.analysis_samples, np.random.default_rng(ANALYSIS_SEED)))
    measured = _subset(test, analysis_rows) if len(analysis_rows) else None  # the damage, on the analysis sample
    # layer k of a pruned model is not layer k of the pretrained one: no per-layer CKA after removal
    keep = cfg.method != "remove" and cfg.mode != "lora"
    pretrained, before = (read_layers(encoder.to(device), measured, device, pad_id, max_tokens, keep_layers=keep)
                          if measured else (None, None))  # one pass: the pretrained layers and their turns
    if cfg.method == "remove":
        analysis_rows = analysis_rows[:0]
    report = corruption.apply(encoder.to("cpu"), CorruptionSpec.from_config(cfg))
    if before is not None:  # each layer's turn of its input, before fine-tuning: pretrained beside damaged
        report["transitions"] = {"pretrained": before,
                                 "damaged": layer_transitions(encoder.to(device), measured, device, pad_id, max_tokens)}
    # readers place the run by its layers, and match it across spellings by its data options' one spelling
    handle.update_status(layers=report["layers"], num_layers=report["num_layers"], data_options=splits.options)
    model = build_classifier(encoder, len(splits.classes), cfg.pooling, cfg.seed)
    if cfg.mode == "lora":
        from peft import LoraConfig, get_peft_model

        fam = family(cfg.model)  # its attention projections (families.py), Conv1D's stored (in, out) in GPT-2
        model.encoder = get_peft_model(model.encoder, LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r,
                                                                 lora_dropout=0.1, target_modules=list(fam.lora),
                                                                 fan_in_fan_out=fam.transposed))
    elif cfg.mode == "linear_probe":
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    elif cfg.train_layers != "all":
        freeze_all_but(model, cfg.train_layers, report["layers"], report["num_layers"], cfg.method)
    initial = snapshot(model) if cfg.mode != "lora" else None  # LoRA adapters start at 0: no relative movement
    model.to(device)
    handle.space_needed = space_needed(cfg, model, report["num_layers"])
    data = {"source": splits.source, "sizes": splits.sizes(), "notes": splits.notes, "columns": splits.columns,
            "splits": splits.split_names, "options": splits.options}
    return Setup(model, device, pad_id, list(splits.classes), train, validation, test, feature_rows, analysis_rows,
                 max_tokens, report, data, initial, pretrained, time.perf_counter() - t0)


def freeze_all_but(model, train_layers: str, damaged: list[int], num_layers: int, method: str) -> None:
    """Which parameters heal (train_layers): `damaged` trains the corrupted layers and the head, `intact` every
    other layer, the embeddings, the pooler and the head, `head` the head alone; the rest is frozen. (Removed
    layers are gone: RunConfig refuses `damaged` with method=remove.)"""
    from healcore.engine.internals import block_of

    damaged_blocks = {f"layer {i}" for i in damaged} if method != "remove" else set()
    for name, p in model.named_parameters():
        block = block_of(name)
        if block == "head":
            continue
        trains = (block in damaged_blocks) if train_layers == "damaged" else \
            (block not in damaged_blocks) if train_layers == "intact" else False
        p.requires_grad_(trains)


def space_needed(cfg: RunConfig, model, num_layers: int) -> int:
    """Bytes the run writes at most: a checkpoint (fp32 weights and Adam's two moments), the stored features
    before and after (fp16), the layer representations, and small files (what a full disk's message names)."""
    params = sum(p.numel() for p in model.parameters())
    hidden = model.head.in_features
    checkpoint = 12 * params if cfg.checkpoint_every else 0
    arrays = 2 * 2 * cfg.feature_samples * hidden + 2 * cfg.analysis_samples * (num_layers + 1) * hidden
    return checkpoint + arrays + (1 << 20)


# ------------------------------------------------------------------------------------------ damage probe
def damage_probe(cfg: RunConfig, setup: Setup, handle: RunHandle) -> dict:
    """How much task signal the corrupted, frozen body still carries: logistic regression on its features."""
    done = handle.read_probe()
    if done is not None:
        return done
    t = time.perf_counter()
    idx = stratified_take(setup.train.labels, cfg.probe_samples, np.random.default_rng(FEATURE_SEED))
    sub = _subset(setup.train, idx)
    x_train = pooled_features(setup.model, sub, setup.device, setup.pad_id, setup.max_tokens, cfg.precision)
    x_test = pooled_features(setup.model, setup.test, setup.device, setup.pad_id, setup.max_tokens, cfg.precision)
    if not (np.isfinite(x_train).all() and np.isfinite(x_test).all()):
        raise TrainingDiverged("the corrupted model outputs NaN/inf before any fine-tuning; "
                               "lower the corruption strength (bitflip/noise) or choose fewer layers")
    result = probe(x_train, sub.labels, x_test, setup.test.labels, len(setup.classes)) if len(idx) else {}
    result["seconds"] = time.perf_counter() - t
    rows = setup.feature_rows
    if len(rows):
        handle.save_features("before", X=_half(x_test[rows]), labels=setup.test.labels[rows], index=rows)
    handle.write_probe(result)
    handle.log(f"damage probe (logistic regression on frozen features): F1 {result.get('f1_weighted', float('nan')):.2f}")
    return result


# ------------------------------------------------------------------------------------------ fine-tuning
def fine_tune(cfg: RunConfig, setup: Setup, handle: RunHandle, stop: Callable[[], bool], show_progress: bool,
              on_epoch: Callable[[dict], None] | None,
              on_optimizer: Callable[[torch.optim.Optimizer], None] | None = None) -> dict:
    """The epoch loop, resumed from the last checkpoint; returns the best epoch {epoch, score}."""
    model = setup.model
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, setup.device, cfg.lr_layer_decay)
    if on_optimizer:
        on_optimizer(optimizer)
    steps_per_epoch, total, factor = schedule_of(len(setup.train), cfg.batch_size, cfg.epochs, cfg.warmup_ratio,
                                                 cfg.lr_schedule)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    # dropout and batch order draw from here on: the same stream however the model was loaded (cached or not)
    torch.manual_seed(cfg.seed)
    start_epoch, best = 1, {"epoch": None, "score": -float("inf")}
    resumed = handle.latest_checkpoint()  # a damaged one is set aside there
    if resumed is not None:
        epoch_done, folder = resumed
        try:
            meta = load_state(folder, model, optimizer, scheduler)
            start_epoch, best = epoch_done + 1, meta["best"]
            handle.log(f"resumed from the checkpoint of epoch {epoch_done}")
        except StoreError as err:  # its tensors unreadable past a whole header: nothing was loaded
            handle.set_aside_checkpoint(str(err))
    progress = ProgressReporter(cfg, handle, steps_per_epoch, total, start_epoch, show_progress)
    for epoch in range(start_epoch, cfg.epochs + 1):
        row, improved = train_and_evaluate(cfg, setup, handle, optimizer, scheduler, epoch, best, stop, progress)
        if improved:
            best = {"epoch": epoch, "score": row[cfg.select_on][cfg.metric]}
        progress.epoch_done(epoch, row)
        if checkpoint_due(cfg, epoch):
            save_state(handle.new_checkpoint_dir(epoch), model, optimizer, scheduler, {"epoch": epoch, "best": best})
            handle.commit_checkpoint(epoch)
        if on_epoch is not None:
            on_epoch(row)
    progress.close()
    return best


def checkpoint_due(cfg: RunConfig, epoch: int) -> bool:
    """Whether a checkpoint follows this epoch: every checkpoint_every epochs, never after the last."""
    return epoch < cfg.epochs and bool(cfg.checkpoint_every) and epoch % cfg.checkpoint_every == 0


def train_and_evaluate(cfg: RunConfig, setup: Setup, handle: RunHandle, optimizer, scheduler, epoch: int,
                       best: dict, stop: Callable[[], bool], progress: "ProgressReporter") -> tuple[dict, bool]:
    """One epoch: train, then evaluate_epoch. Returns (metrics row, whether it is the new best)."""
    stats = train_epoch(setup.model, setup.train, optimizer, scheduler, epoch=epoch, seed=cfg.seed,
                        batch_size=cfg.batch_size, device=setup.device, pad_id=setup.pad_id,
                        freeze_body=cfg.mode == "linear_probe", precision=cfg.precision, compile=cfg.compile,
                        stop=stop, on_step=lambda s, n, loss: progress.step(epoch, s, n, loss))
    return evaluate_epoch(cfg, setup, handle, epoch, {**stats, "lr": scheduler.get_last_lr()[0]}, best)


def evaluate_epoch(cfg: RunConfig, setup: Setup, handle: RunHandle, epoch: int, stats: dict,
                   best: dict) -> tuple[dict, bool]:
    """After an epoch's training: evaluate on validation and test and log the metrics line; at a new best epoch
    keep its features and layer representations. Returns (metrics row, whether it is the new best)."""
    K = len(setup.classes)
    t = time.perf_counter()
    row: dict[str, Any] = {"epoch": epoch, **stats}
    if setup.validation is not None:
        val = predict(setup.model, setup.validation, setup.device, setup.pad_id, setup.max_tokens,
                      precision=cfg.precision)
        row["validation"] = metrics(setup.validation.labels, val.labels, K)
    keep_layers = setup.analysis_rows if len(setup.analysis_rows) and cfg.mode != "lora" else None
    test = predict(setup.model, setup.test, setup.device, setup.pad_id, setup.max_tokens, keep_pooled=setup.feature_rows,
                   precision=cfg.precision, keep_layers=keep_layers)
    row["test"] = metrics(setup.test.labels, test.labels, K)
    improved = row[cfg.select_on][cfg.metric] > best["score"]
    if improved:
        rows = setup.feature_rows
        if test.pooled is not None:
            handle.save_features("best", X=_half(test.pooled), labels=setup.test.labels[rows],
                                 predictions=test.labels[rows], index=rows, epoch=np.array(epoch))
        if test.layers is not None:
            save_analysis(handle, setup, test.layers, epoch)
    row["eval_s"] = time.perf_counter() - t
    handle.append_metrics(row)
    handle.log(f"epoch {epoch}: loss {row['train_loss']:.4f}, "
               + (f"val F1 {row['validation']['f1_weighted']:.2f}, " if "validation" in row else "")
               + f"test F1 {row['test']['f1_weighted']:.2f} ({row['train_s']:.1f}s train, {row['eval_s']:.1f}s eval)")
    return row, improved


def save_analysis(handle: RunHandle, setup: Setup, layers: np.ndarray, epoch: int) -> None:
    """analysis.npz at the best epoch: the per-layer representations and their CKA to the pretrained model."""
    arrays = {"layers": _half(layers), "index": setup.analysis_rows, "epoch": np.array(epoch),
              "corrupted_layers": np.array(setup.corruption["layers"], dtype=np.int64)}
    if setup.pretrained_layers is not None:
        arrays["cka_pretrained"] = cka_matrix(layers, setup.pretrained_layers).astype(np.float32)
        arrays["cka_debiased"] = np.array(1)  # the estimator (readers set an older, biased matrix aside)
    handle.save_analysis(**arrays)


class ProgressReporter:
    """Live progress: status.json for watchers (at most every 2 s) and, on a terminal, a tqdm bar."""

    def __init__(self, cfg: RunConfig, handle: RunHandle, steps_per_epoch: int, total: int, start_epoch: int,
                 show: bool):
        self.cfg, self.handle, self.steps_per_epoch = cfg, handle, steps_per_epoch
        self.last = 0.0
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=(start_epoch - 1) * steps_per_epoch, desc=cfg.run_id[:40],
                            unit="step", file=sys.stderr, dynamic_ncols=True)

    def step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.n = (epoch - 1) * self.steps_per_epoch + step
            self.bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}")
            self.bar.refresh()
        if time.time() - self.last > 2.0:
            self.last = time.time()
            self.handle.progress(epoch=epoch, epochs=self.cfg.epochs, step=step, steps=steps, loss=loss)

    def epoch_done(self, epoch: int, row: dict) -> None:
        self.handle.progress(epoch=epoch, epochs=self.cfg.epochs, step=row["steps"], steps=row["steps"],
                             loss=row["train_loss"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------ summary
def summarise(cfg: RunConfig, setup: Setup, handle: RunHandle, probe_result: dict, best: dict) -> dict:
    """summary.json from the metrics lines, the probe and the model as fine-tuning left it."""
    rows = handle.epochs()
    best_row = next(r for r in rows if r["epoch"] == best["epoch"])
    train_tokens = sum(r["tokens"] for r in rows)
    train_s = sum(r["train_s"] for r in rows)
    model = setup.model
    n_params = sum(p.numel() for p in model.parameters())
    summary = {
        "run_id": cfg.run_id,
        "config": cfg.to_dict(),
        "classes": setup.classes,
        "data": setup.data,
        "corruption": setup.corruption,
        "device": setup.device,
        "hardware": hardware_name(setup.device),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "bf16": use_bf16(setup.device, cfg.precision),
        "params": {"total": n_params, "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)},
        "majority_f1": majority_f1(setup.train.labels, setup.test.labels, len(setup.classes)),
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
        "per_class": {"classes": setup.classes, "probe": probe_result.get("f1_per_class"),
                      "best": best_row["test"].get("f1_per_class")},
        "weight_movement": weight_movement(setup.initial, model) if setup.initial is not None else None,
        "timing": {"setup_s": setup.seconds, "train_s": train_s, "eval_s": sum(r["eval_s"] for r in rows),
                   "tokens_per_s": train_tokens / train_s if train_s else None,
                   "tokens_per_epoch": rows[-1]["tokens"]},
    }
    handle.write_summary(summary)
    handle.drop_checkpoints()  # a completed run keeps metrics, summary, features and analysis only
    return summary


def _half(x: np.ndarray) -> np.ndarray:
    """Features are stored as float16 (half the disk; projections need no more), clipped to its range."""
    return np.clip(x, -65504, 65504).astype(np.float16)


def _subset(enc, idx: np.ndarray):
    lengths = enc.lengths[idx]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.concatenate([enc.ids[enc.offsets[i]:enc.offsets[i + 1]] for i in idx]) if len(idx) else enc.ids[:0]
    types = None
    if enc.types is not None:
        types = np.concatenate([enc.types[enc.offsets[i]:enc.offsets[i + 1]] for i in idx])
    return Encoded(ids, types, offsets, enc.labels[idx])
