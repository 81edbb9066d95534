"""The training loop: Adam(W), the learning-rate schedule, bucketed dynamic-padding batches, bf16 where it pays.

Small pure helpers (`lr_factor`, `make_optimizer`, `predict`) and one `train_epoch`; no trainer class.
bf16 autocast is the default only on CPUs with AVX512-BF16/AMX; on CUDA it measured slower (`use_bf16`).
Batch order for epoch e comes from numpy's generator seeded with (seed, e), so a run resumed at an epoch
boundary sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from healcore.core.errors import Interrupted, StoreError, TrainingDiverged, first_line
from healcore.engine.batching import Encoded, collate, eval_batches, train_batches
from healcore.engine.compiled import begin_step, compiled, width_multiple
from healcore.engine.internals import pool_layers
from healcore.store.io import atomic_write_bytes, atomic_write_json


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The multiplier of the peak learning rate at optimizer step `step` (0-based): linear warm-up to 1 over
    warmup_steps, then constant (the paper's fixed rate), linear decay to 0 at total_steps (run_glue.py's) or a
    half cosine to 0."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    done = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))
    return max(0.0, 1.0 - done)


def schedule_of(n_train: int, batch_size: int, epochs: int, warmup_ratio: float,
                schedule: str) -> tuple[int, int, Callable[[int], float]]:
    """(steps per epoch, total steps, step -> lr factor) of a run: what a single run's scheduler and a fused
    group's optimizer both follow."""
    steps_per_epoch = -(-n_train // batch_size)
    total = steps_per_epoch * epochs
    warmup = int(warmup_ratio * total)
    return steps_per_epoch, total, lambda step: lr_factor(step, total, warmup, schedule)


def decays(name: str, dim: int) -> bool:
    """Whether weight decay applies to a parameter of this name and number of dimensions: not to biases and
    norms (dim is a single model's, without a fused group's member axis)."""
    return dim >= 2 and "norm" not in name.lower()


def make_optimizer(model, lr: float, weight_decay: float, device: str,
                   layer_decay: float = 1.0) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; no decay on biases and norms. weight_decay=0 is plain Adam.
    layer_decay < 1: layer-wise learning-rate decay (layer l of L at lr * decay^(L - l), the embeddings at
    decay^L, the pooler and head at lr), one parameter group per scale."""
    if layer_decay != 1.0:
        return _layer_decayed(model, lr, weight_decay, layer_decay)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if decays(name, p.dim()) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused kernels: one launch per step on CUDA, and a vectorised step on CPU (torch >= 2.4)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=True)


def layer_lr_scales(model, layer_decay: float) -> dict[str, float]:
    """Each trainable parameter's learning-rate scale under layer-wise decay (see make_optimizer)."""
    from healcore.engine.internals import block_of

    blocks = {name: block_of(name) for name, p in model.named_parameters() if p.requires_grad}
    depth = max((int(b.split()[1]) for b in blocks.values() if b.startswith("layer ")), default=0)

    def scale(block: str) -> float:
        if block.startswith("layer "):
            return layer_decay ** (depth - int(block.split()[1]))
        return layer_decay ** depth if block == "embeddings" else 1.0

    return {name: scale(block) for name, block in blocks.items()}


def _layer_decayed(model, lr: float, weight_decay: float, layer_decay: float) -> torch.optim.Optimizer:
    scales = layer_lr_scales(model, layer_decay)
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((decays(name, p.dim()), scales[name]), []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": weight_decay if d else 0.0, "lr": lr * s}
                              for (d, s), ps in groups.items()], lr=lr, fused=True)


def use_bf16(device: str, precision: str = "auto") -> bool:
    """bf16 autocast (weights stay fp32): when asked for, or under 'auto' where it was measured to pay.

    auto = bf16 on CPUs with AVX512-BF16/AMX instructions (about 1.5x there, docs/PERFORMANCE.md) and fp32 on
    CUDA: at batch 32 on an H100, eager bf16 autocast trained 1.5-4x slower than fp32 for minilm-l6, BERT-base and
    BERT-large (bench/throughput.py), these runs being launch-bound; precision=bf16 still turns it on."""
    if precision != "auto":
        return precision == "bf16"
    if device.startswith("cuda"):
        return False
    return native_cpu_bf16()


@lru_cache(maxsize=1)  # asked at every training step and evaluation batch; a CPU's flags do not change
def native_cpu_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX). oneDNN also says yes on AVX-512 CPUs without
    them, and emulates bf16 there: on such a Xeon bf16 autocast trained 3x slower than fp32 (bench/throughput.py,
    docs/PERFORMANCE.md). Linux's /proc/cpuinfo decides; elsewhere oneDNN's answer stands."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        flags = None
    if flags is None:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: str, precision: str = "auto", bf16: bool | None = None):
    """bf16 autocast where use_bf16 says so (or bf16, decided by the caller: compiled steps decide outside)."""
    if use_bf16(device, precision) if bf16 is None else bf16:
        return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return nullcontext()


def eval_max_tokens(batch_size: int, max_length: int) -> int:
    return max(batch_size * max_length * 2, 8192)


@dataclass
class Prediction:
    labels: np.ndarray  # predicted class per example
    pooled: np.ndarray | None  # pooled features (float32) of the rows asked for, in their order
    layers: np.ndarray | None  # (L+1, rows, H) per-layer representations of the rows asked for, in their order


@torch.inference_mode()
def predict(model, enc: Encoded, device: str, pad_id: int, max_tokens: int, keep_pooled: np.ndarray | None = None,
            precision: str = "auto", keep_layers: np.ndarray | None = None) -> Prediction:
    """Predicted class per example and, for the rows keep_pooled, their pooled features; for the rows keep_layers,
    every hidden state mean-pooled over the example's tokens (internals.pool_layers)."""
    was_training = model.training
    model.eval()
    preds = np.zeros(len(enc), dtype=np.int64)
    wanted = {}
    for name, rows in (("pooled", keep_pooled), ("layers", keep_layers)):
        if rows is not None and len(rows):
            position = np.full(len(enc), -1, dtype=np.int64)
            position[rows] = np.arange(len(rows))
            wanted[name] = position
    kept: dict[str, np.ndarray] = {}
    for idx in eval_batches(enc.lengths, max_tokens):
        batch = collate(enc, idx, pad_id, device)
        batch.pop("labels")
        want_layers = "layers" in wanted and (wanted["layers"][idx] >= 0).any()
        with autocast(device, precision):
            out = model(**batch, hidden_states=True) if want_layers else model(**batch)
        logits, pooled = out[0], out[1]
        preds[idx] = logits.argmax(-1).cpu().numpy()
        if "pooled" in wanted and (wanted["pooled"][idx] >= 0).any():
            sel = wanted["pooled"][idx] >= 0
            values = pooled[torch.from_numpy(sel).to(pooled.device)].float().cpu().numpy()
            if "pooled" not in kept:
                kept["pooled"] = np.zeros((len(keep_pooled), values.shape[-1]), dtype=np.float32)
            kept["pooled"][wanted["pooled"][idx][sel]] = values
        if want_layers:
            sel = wanted["layers"][idx] >= 0
            values = pool_layers(out[2], batch["attention_mask"], torch.from_numpy(np.flatnonzero(sel)).to(pooled.device))
            if "layers" not in kept:
                kept["layers"] = np.zeros((values.shape[0], len(keep_layers), values.shape[-1]), dtype=np.float32)
            kept["layers"][:, wanted["layers"][idx][sel]] = values
    model.train(was_training)
    return Prediction(preds, kept.get("pooled"), kept.get("layers"))


@torch.inference_mode()
def pooled_features(model, enc: Encoded, device: str, pad_id: int, max_tokens: int,
                    precision: str = "auto") -> np.ndarray:
    return predict(model, enc, device, pad_id, max_tokens, keep_pooled=np.arange(len(enc)), precision=precision).pooled


def cross_entropy(logits, labels):
    """The training loss of one batch's logits, in fp32: every step's, a single run's and each fused member's (the
    one seam a test replaces to make a loss diverge or to record it)."""
    return F.cross_entropy(logits.float(), labels)


def batch_loss(model, input_ids, attention_mask, token_type_ids, labels, device: str, bf16: bool):
    """Mean cross-entropy of one batch: the part of a step that `compile` compiles (compiled.py)."""
    with autocast(device, bf16=bf16):
        logits, _ = model(input_ids, attention_mask, token_type_ids)
    return cross_entropy(logits, labels)


SYNC_EVERY = 25  # steps between host syncs (the loss is read, checked and reported)


class EpochPass:
    """One epoch's pass over the training batches, shared by a single run (train_epoch) and a fused group: the batch
    order (seed and epoch alone, so fused members see a single run's batches), stop requests between steps,
    collation, useful and padded token counts, and when to sync with the host."""

    def __init__(self, enc: Encoded, *, epoch: int, seed: int, batch_size: int, device: str, pad_id: int,
                 compile: str, stop: Callable[[], bool]):
        self.enc, self.epoch, self.device, self.pad_id, self.compile, self.stop = enc, epoch, device, pad_id, compile, stop
        self.batches = train_batches(enc.lengths, batch_size, np.random.default_rng([seed, epoch]))
        self.multiple = width_multiple(compile)
        self.useful = self.padded = 0
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        """(step index, collated batch), a stop request honoured before each step."""
        start = time.perf_counter()
        for step, idx in enumerate(self.batches):
            if self.stop():
                raise Interrupted("stop requested")
            batch = collate(self.enc, idx, self.pad_id, self.device, self.multiple)
            begin_step(self.compile, self.device)
            self.useful += int(self.enc.lengths[idx].sum())
            self.padded += int(batch["input_ids"].numel())
            yield step, batch
            self.seconds = time.perf_counter() - start

    def syncs(self, step: int) -> bool:
        return (step + 1) % SYNC_EVERY == 0 or step + 1 == len(self.batches)

    def diverged(self, loss: float, step: int) -> TrainingDiverged:
        """The one reason a run (or a fused member) ends when its loss is no longer finite."""
        return TrainingDiverged(f"training loss became {loss} at epoch {self.epoch} step {step + 1}; lower the "
                                f"learning rate (lr) or check the corruption strength")

    def stats(self, loss_sum: float) -> dict:
        return {"train_loss": loss_sum / max(1, len(self)), "steps": len(self), "tokens": self.useful,
                "padded_tokens": self.padded, "train_s": self.seconds}


def train_epoch(model, enc: Encoded, optimizer, scheduler, *, epoch: int, seed: int, batch_size: int,
                device: str, pad_id: int, freeze_body: bool = False, precision: str = "auto", compile: str = "off",
                stop: Callable[[], bool] = lambda: False, on_step: Callable[[int, int, float], None] | None = None) -> dict:
    """One pass over enc. Returns mean loss, steps, useful (non-pad) tokens and padded tokens."""
    loss_of = compiled(batch_loss, compile, dynamic=True)
    bf16 = use_bf16(device, precision)
    model.train()
    if freeze_body:  # a linear probe reads features of the frozen body: no dropout inside it
        model.encoder.eval()
    batches = EpochPass(enc, epoch=epoch, seed=seed, batch_size=batch_size, device=device, pad_id=pad_id,
                        compile=compile, stop=stop)
    loss_sum = torch.zeros((), device=device)
    for step, batch in batches:
        loss = loss_of(model, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                       batch["labels"], device, bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach()
        if batches.syncs(step):
            mean = float(loss_sum) / (step + 1)
            if not math.isfinite(mean):
                raise batches.diverged(mean, step)
            if on_step is not None:
                on_step(step + 1, len(batches), mean)
    return batches.stats(float(loss_sum))


# ------------------------------------------------------------------------------------------ checkpoints
def save_state(folder: Path, model, optimizer, scheduler, extra: dict) -> None:
    """Model and optimizer tensors as safetensors, everything else as JSON (no pickle anywhere), each file written
    whole or not at all (a full disk is one line, DiskFullError, and the previous checkpoint stays the latest)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / "model.safetensors", save_tensors(tensors))
    opt = optimizer.state_dict()
    opt_tensors, opt_meta = {}, {"param_groups": opt["param_groups"], "state": {}}
    for pid, state in opt["state"].items():
        opt_meta["state"][str(pid)] = []
        for key, value in state.items():
            opt_tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous().clone() \
                if torch.is_tensor(value) else torch.tensor(value)
            opt_meta["state"][str(pid)].append(key)
    opt_tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        opt_tensors["rng.cuda"] = torch.cuda.get_rng_state()
    atomic_write_bytes(folder / "optimizer.safetensors", save_tensors(opt_tensors))
    atomic_write_json(folder / "state.json", {"optimizer": opt_meta, "scheduler": scheduler.state_dict(), **extra})


def load_state(folder: Path, model, optimizer, scheduler) -> dict:
    """Resume from a checkpoint. Every file is read before anything is loaded, so a damaged one (StoreError) leaves
    the model, optimizer and scheduler as they were, to start again from scratch."""
    try:
        meta = json.loads((folder / "state.json").read_text())
        weights = load_file(str(folder / "model.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
    except Exception as err:  # noqa: BLE001 - every way a checkpoint can be broken is one answer: damaged
        raise StoreError(f"checkpoint/{folder.name} is damaged ({type(err).__name__}: {first_line(err)[:80]})") from None
    model.load_state_dict(weights)
    opt_meta = meta.pop("optimizer")
    state = {int(pid): {k: tensors[f"{pid}.{k}"] for k in keys} for pid, keys in opt_meta["state"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
    scheduler.load_state_dict(meta.pop("scheduler"))
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta
