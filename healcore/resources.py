"""What a run loads before it trains: data splits, tokenizer, token ids and the pretrained encoder.

`Loader()` loads everything afresh, as a one-run process needs. `Loader(cache=True)` keeps what it loaded for the
next run of the same process (a persistent grid worker, executors.py): the splits and token ids are read-only
inputs, and every run gets its own deep copy of the pristine pretrained encoder, so nothing a run changes
reaches the next one.
"""
from __future__ import annotations

import copy
from pathlib import Path

from .config import RunConfig
from .data import Splits, load_splits


class Loader:
    def __init__(self, cache: bool = False):
        self.cache = cache
        self._splits: dict[tuple, Splits] = {}
        self._tokenizers: dict[str, object] = {}
        self._encoders: dict[str, object] = {}
        self._encoded: dict[tuple, object] = {}

    def splits(self, cfg: RunConfig) -> Splits:
        import os

        key = (cfg.dataset, cfg.split, cfg.max_train, cfg.max_test, cfg.val_fraction, os.environ.get("HEALCORE_DATA"))
        if not self.cache:
            return load_splits(cfg)
        if key not in self._splits:
            self._splits[key] = load_splits(cfg)
        return self._splits[key]

    def tokenizer(self, model: str):
        from .models import load_tokenizer

        if not self.cache:
            return load_tokenizer(model)
        if model not in self._tokenizers:
            self._tokenizers[model] = load_tokenizer(model)
        return self._tokenizers[model]

    def encoder(self, model: str):
        """A pretrained encoder this run may corrupt and train (a fresh copy when cached)."""
        from .models import load_encoder

        if not self.cache:
            return load_encoder(model)
        if model not in self._encoders:
            self._encoders[model] = load_encoder(model)
        return copy.deepcopy(self._encoders[model])

    def encode(self, tokenizer, frame, max_length: int, cache_dir: Path | None):
        from .batching import cache_key, encode

        if not self.cache:
            return encode(tokenizer, frame, max_length, cache_dir)
        key = (cache_key(tokenizer, frame, max_length), str(cache_dir))
        if key not in self._encoded:
            self._encoded[key] = encode(tokenizer, frame, max_length, cache_dir)
        return self._encoded[key]
