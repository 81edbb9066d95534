"""What a run records about the inside of its model, for "where does healing happen" (analysis.py reads it).

- Per-layer representations: for a fixed sample of test rows, each hidden state (the embedding output, then
  every layer's output) mean-pooled over the example's tokens. Kept for the pretrained model before it is
  corrupted and for the fine-tuned model at its best epoch; linear CKA between them is computed in the run.
- Layer transitions, before fine-tuning (the damage a run starts from): per layer, how far it turns its input,
  for the pretrained model and the damaged one (angular distance, Gromov et al. 2024; Block Influence, ShortGPT).
- Weight movement: per block (embeddings, each layer, pooler, head), ||W_T - W_0|| / ||W_0|| over the block's
  trainable weights, W_0 at the start of fine-tuning (after the corruption) and W_T at the end.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

from healcore.core.families import EMBEDDING_PREFIXES, LAYER_INDEX, POOLER_PREFIXES
from healcore.engine.batching import collate, eval_batches
from healcore.engine.models import takes_token_types

def block_of(param_name: str) -> str:
    """The block a classifier parameter ("encoder.<body's name>" or "head.*") belongs to: embeddings, layer <i>
    (1-based), pooler, head or other (a final norm), by the family table's names."""
    if param_name.startswith("head."):
        return "head"
    m = LAYER_INDEX.search(param_name)
    if m:
        return f"layer {int(m.group(1)) + 1}"
    body = param_name.split("encoder.", 1)[1] if param_name.startswith("encoder.") else param_name
    body = body.removeprefix("base_model.model.")  # LoRA's wrapper
    if body.startswith(EMBEDDING_PREFIXES):
        return "embeddings"
    if body.startswith(POOLER_PREFIXES):
        return "pooler"
    return "other"


def snapshot(model) -> dict[str, torch.Tensor]:
    """A CPU copy of the trainable weights (W_0 for weight_movement)."""
    return {n: p.detach().to("cpu", torch.float32, copy=True) for n, p in model.named_parameters() if p.requires_grad}


def weight_movement(initial: dict[str, torch.Tensor], model) -> dict[str, float]:
    """Per block, the relative distance of the current trainable weights from `initial`, in block order."""
    moved: dict[str, float] = {}
    base: dict[str, float] = {}
    current = dict(model.named_parameters())
    for name, w0 in initial.items():
        wt = current[name].detach().to("cpu", torch.float32)
        block = block_of(name)
        moved[block] = moved.get(block, 0.0) + float((wt - w0).pow(2).sum())
        base[block] = base.get(block, 0.0) + float(w0.pow(2).sum())
    return {b: (moved[b] ** 0.5) / (base[b] ** 0.5) if base[b] > 0 else float("nan") for b in _ordered(moved)}


def _ordered(blocks) -> list[str]:
    def key(b: str):
        if b == "embeddings":
            return (0, 0)
        if b.startswith("layer "):
            return (1, int(b.split()[1]))
        return (2, ["pooler", "head", "other"].index(b) if b in ("pooler", "head", "other") else 3)

    return sorted(blocks, key=key)


def pool_layers(states, attention_mask: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    """(L+1, len(rows), H) float32: each hidden state of the batch rows `rows`, mean-pooled over real tokens."""
    mask = attention_mask[rows].unsqueeze(-1).float()
    denom = mask.sum(1).clamp(min=1.0)
    return torch.stack([(h[rows].float() * mask).sum(1) / denom for h in states]).cpu().numpy()


@torch.inference_mode()
def _body_batch(encoder, enc, idx, pad_id: int, device: str) -> dict:
    """A batch as a bare body takes it: token types only where the classifier passes them (takes_token_types), and
    no key/value cache for a decoder."""
    batch = collate(enc, idx, pad_id, device)
    batch.pop("labels")
    if "token_type_ids" in batch and not takes_token_types(encoder):
        batch.pop("token_type_ids")
    if "use_cache" in inspect.signature(encoder.forward).parameters:
        batch["use_cache"] = False
    return batch


def layer_transitions(encoder, enc, device: str, pad_id: int, max_tokens: int) -> dict[str, list[float]]:
    """Per layer l = 1..L, how far it turns its input, over every real token of `enc` (see read_layers)."""
    return read_layers(encoder, enc, device, pad_id, max_tokens, keep_layers=False)[1]


@torch.inference_mode()
def read_layers(encoder, enc, device: str, pad_id: int, max_tokens: int,
                keep_layers: bool = True) -> tuple[np.ndarray | None, dict[str, list[float]]]:
    """One pass of a bare encoder over every row of `enc`, giving both what set-up reads of the pretrained model:
    - (L+1, n, H) per-layer representations (pooled per row; None with keep_layers=False);
    - per layer l = 1..L, how far it turns its input, over every real token: the mean angular distance
      arccos(cos(x_{l-1}, x_l)) / pi between its input and output (Gromov et al. 2024, "The Unreasonable
      Ineffectiveness of the Deeper Layers") and the mean Block Influence 1 - cos(x_{l-1}, x_l) (ShortGPT). A
      decoder's last hidden state includes its final norm, as transformers returns it."""
    was_training = encoder.training
    encoder.eval()
    out = angular = block_influence = None
    tokens = 0
    for idx in eval_batches(enc.lengths, max_tokens):
        batch = _body_batch(encoder, enc, idx, pad_id, device)
        states = encoder(**batch, output_hidden_states=True).hidden_states
        if keep_layers:
            pooled = pool_layers(states, batch["attention_mask"],
                                 torch.arange(len(idx), device=batch["attention_mask"].device))
            if out is None:
                out = np.zeros((pooled.shape[0], len(enc), pooled.shape[2]), dtype=np.float32)
            out[:, idx] = pooled
        real = batch["attention_mask"].bool()
        cos = torch.stack([torch.nn.functional.cosine_similarity(states[i - 1][real].float(), states[i][real].float(),
                                                                 dim=-1) for i in range(1, len(states))]).clamp(-1, 1)
        a, b = (torch.arccos(cos) / np.pi).sum(1), (1 - cos).sum(1)
        angular = a if angular is None else angular + a
        block_influence = b if block_influence is None else block_influence + b
        tokens += int(real.sum())
    encoder.train(was_training)
    if angular is None or not tokens:
        return out, {"angular": [], "block_influence": []}
    return out, {"angular": (angular / tokens).tolist(), "block_influence": (block_influence / tokens).tolist()}
