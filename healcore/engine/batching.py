"""Tokenisation (once per dataset, tokenizer and max length; cached on disk) and length-bucketed batches.

Dynamic padding pads each batch to its own longest example; bucketing puts examples of similar length
together so that little padding is left. Short texts (SST-2 averages ~25 tokens) then cost a fraction of
what padding to 128 costs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from healcore.store.io import atomic_write_npz

BUCKET_BATCHES = 64  # a shuffled window of this many batches is sorted by length, then cut into batches


@dataclass
class Encoded:
    ids: np.ndarray  # all token ids, concatenated (int32)
    types: np.ndarray | None  # token type ids, concatenated, for sentence pairs on models that use them
    offsets: np.ndarray  # example i is ids[offsets[i]:offsets[i+1]]
    labels: np.ndarray  # int64 class index per example

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def cache_key(tokenizer, df, max_length: int) -> str:
    h = hashlib.sha1()
    h.update(f"{type(tokenizer).__name__}|{tokenizer.name_or_path}|{len(tokenizer)}|{max_length}|v1".encode())
    for col in ("text", "text_pair"):
        if col in df.columns:
            h.update(col.encode())
            h.update("\x00".join(df[col]).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:24]


def encode(tokenizer, df, max_length: int, cache_dir: Path | None = None) -> Encoded:
    """Token ids of every row of df (truncated to max_length); labels from df['label']."""
    labels = df["label"].to_numpy().astype(np.int64)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cache_key(tokenizer, df, max_length)}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    types = z["types"] if z["types"].size else None
                    return Encoded(z["ids"], types, z["offsets"], labels)
            except Exception:  # a damaged cache file is rebuilt, never trusted
                pass
    pair = df["text_pair"].tolist() if "text_pair" in df.columns else None
    out = tokenizer(df["text"].tolist(), pair, truncation=True, max_length=max_length, padding=False)
    seqs = out["input_ids"]
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
    types = None
    if pair is not None and "token_type_ids" in out:
        types = np.fromiter((t for s in out["token_type_ids"] for t in s), dtype=np.int8, count=int(offsets[-1]))
    enc = Encoded(ids, types, offsets, labels)
    if path is not None:
        try:
            atomic_write_npz(path, ids=ids, types=types if types is not None else np.zeros(0, np.int8), offsets=offsets)
        except OSError:  # the cache is an optimisation: a read-only or full disk must not fail the run
            pass
    return enc


def train_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled, length-bucketed batches: windows of BUCKET_BATCHES batches are sorted by length."""
    order = rng.permutation(len(lengths))
    window = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Length-sorted batches holding about max_tokens padded tokens each (evaluation needs no shuffling)."""
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * lengths[order[end]] <= max_tokens:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def collate(enc: Encoded, idx: np.ndarray, pad_id: int, device, multiple: int = 1) -> dict:
    """Tensors for the examples idx, padded to the longest of them, rounded up to a multiple of `multiple`
    (compiled steps: fewer distinct shapes)."""
    lengths = enc.lengths[idx]
    width = -(-int(lengths.max()) // multiple) * multiple
    ids = np.full((len(idx), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    types = np.zeros((len(idx), width), dtype=np.int64) if enc.types is not None else None
    for row, (i, n) in enumerate(zip(idx, lengths)):
        a = enc.offsets[i]
        ids[row, :n] = enc.ids[a:a + n]
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = enc.types[a:a + n]
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    non_blocking = str(device).startswith("cuda")
    batch = {k: v.pin_memory().to(device, non_blocking=True) if non_blocking else v for k, v in batch.items()}
    batch["labels"] = torch.from_numpy(enc.labels[idx]).to(device)
    return batch
