"""What a run loads before it trains: data splits, tokenizer, token ids and the pretrained encoder.

`Loader()` loads everything afresh, as a one-run process needs. `Loader(cache=True)` keeps what it loaded for the
next run of the same process (a persistent grid worker, grids/local.py): the splits and token ids are read-only
inputs, and every run gets its own deep copy of the pristine pretrained encoder, so nothing a run changes
reaches the next one.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

from healcore.core.config import RunConfig
from healcore.core.data import DATA_FIELDS, Splits, load_splits
from healcore.engine.batching import cache_key, encode
from healcore.engine.models import load_encoder, load_tokenizer


class Loader:
    def __init__(self, cache: bool = False):
        self.cache = cache
        self._splits: dict[tuple, Splits] = {}
        self._tokenizers: dict[str, object] = {}
        self._encoders: dict[str, object] = {}
        self._encoded: dict[tuple, object] = {}

    def _kept(self, table: dict, key, load):
        """load(), once per key when caching; every time otherwise."""
        if not self.cache:
            return load()
        if key not in table:
            table[key] = load()
        return table[key]

    def splits(self, cfg: RunConfig) -> Splits:
        key = (*(getattr(cfg, name) for name in DATA_FIELDS), os.environ.get("HEALCORE_DATA"))
        return self._kept(self._splits, key, lambda: load_splits(cfg))

    def tokenizer(self, model: str):
        return self._kept(self._tokenizers, model, lambda: load_tokenizer(model))

    def encoder(self, model: str):
        """A pretrained encoder this run may corrupt and train (a fresh copy when cached)."""
        if not self.cache:
            return load_encoder(model)
        return copy.deepcopy(self._kept(self._encoders, model, lambda: load_encoder(model)))

    def encode(self, tokenizer, frame, max_length: int, cache_dir: Path | None):
        key = (cache_key(tokenizer, frame, max_length), str(cache_dir)) if self.cache else None
        return self._kept(self._encoded, key, lambda: encode(tokenizer, frame, max_length, cache_dir))
