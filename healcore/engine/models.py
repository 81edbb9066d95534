"""Loading pretrained transformers (torch): the tokenizer, the pretrained body (an encoder, or a decoder-only LM
without its head) and its layer list, models derived by keeping some layers, the classifier that wraps a body, and
the device a run trains on. Remote code is never run. What each family keeps where is core/families.py's table;
what is known about a model without loading it is core/model_facts.py's.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
import transformers

from healcore.core.errors import ModelError
from healcore.core.families import Family, family_of
from healcore.core.model_facts import (DERIVED, _friendly_load_error, check_model_offline, cpu_name, derived_folder,
                                       model_folder)

# transformers 5 resolves its public names lazily, and that first resolution is not thread-safe: two threads
# asking at once (the dashboard runs page scripts in threads that can overlap: reruns, several browser
# sessions) can get "cannot import name 'AutoModel' from 'transformers'", as the Launch page once did.
# Every name healcore needs goes through this lock.
_HF_LOCK = threading.Lock()


def hf(name: str):
    """transformers.<name> (dots reach submodules: "utils.logging"), resolved under one process-wide lock."""
    with _HF_LOCK:
        value = transformers
        for part in name.split("."):
            value = getattr(value, part)
        return value


# Smaller models derived offline from a short-named one by keeping some of its layers, the way DistilBERT was
# initialised from BERT's every other layer (here without distillation afterwards): name -> (base, kept layers).
# They give a second model size where no other pretrained BERT can be downloaded.
_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "merges.txt", "vocab.json", "spiece.model")


def derive_layer_subset(base_dir: str | Path, keep: tuple[int, ...], out_dir: str | Path) -> Path:
    """Save the base encoder with only the layers `keep` (0-based, in order) as a normal model folder.

    Written to a temporary sibling and renamed into place, so concurrent runs (several per GPU) never read a
    half-written folder; the loser of a race discards its copy.
    """
    AutoModel = hf("AutoModel")
    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    model = AutoModel.from_pretrained(str(base_dir), dtype="float32", trust_remote_code=False)
    if family_of_model(model).shared_layers:
        untie_shared_layers(model)  # a depth of ALBERT is kept as its own copy of the shared block
    layers = layer_list(model)
    if not keep or any(not 0 <= i < len(layers) for i in keep):
        raise ModelError(f"cannot keep layers {list(keep)} of a {len(layers)}-layer model")
    keep_layers(model, list(keep))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(str(tmp))
        for name in _TOKENIZER_FILES:
            if (Path(base_dir) / name).is_file():
                shutil.copy2(Path(base_dir) / name, tmp / name)
        (tmp / "derived_from.json").write_text(
            json.dumps({"base": Path(base_dir).as_posix(), "kept_layers": list(keep)}) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished first: its folder is the same model
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def keep_layers(body, keep: list[int]) -> None:
    """Keep only the blocks `keep` (0-based, in order) of a loaded body, and make its config say so: the depth
    (every family's key), per-layer attention kinds (Qwen2, Gemma), ALBERT's group count, and each attention's
    layer index (a decoder's key/value cache is indexed by depth). Derived models and method=remove use it."""
    holder, name, layers = _layer_list_slot(body)
    setattr(holder, name, nn.ModuleList([layers[i] for i in keep]))
    for depth, i in enumerate(keep):
        for module in layers[i].modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = depth
    config = body.config
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]
    for attr in ("num_hidden_layers", "n_layer", "n_layers", "num_layers"):
        if isinstance(getattr(config, attr, None), int):
            setattr(config, attr, len(keep))
    if family_of_model(body).shared_layers:
        config.num_hidden_groups = len(keep)


def resolve_model_path(name: str) -> str:
    """model_facts.model_folder, with a derived model written on its first use."""
    if name.strip() in DERIVED:
        base, keep = DERIVED[name.strip()]
        return str(derive_layer_subset(model_folder(base), keep, derived_folder(name.strip())))
    return model_folder(name)


@lru_cache(maxsize=64)
def load_model_config(name: str):
    """The transformers config alone (no weights): cheap, used to check layer specs before a run starts. Its
    config.json is read torch-free first (model_facts), with the same one-line errors the dashboard gives: a damaged
    file, remote code, a hub id neither cached nor reachable (in a second, not after the hub client's retries)."""
    AutoConfig = hf("AutoConfig")
    path = resolve_model_path(name)
    check_model_offline(name)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False)
    except Exception as err:  # transformers raises OSError/ValueError/KeyError for the same user mistakes
        raise _friendly_load_error(name, err) from None


def check_architecture(name: str) -> int:
    """Build the model on the meta device (no memory, no weights) to prove healcore can find its layers.

    Returns L. Called before a run folder exists, so an unsupported model leaves nothing behind.
    """
    AutoModel = hf("AutoModel")
    cfg = load_model_config(name)
    try:
        with torch.device("meta"):
            model = AutoModel.from_config(cfg, trust_remote_code=False)
    except Exception as err:
        raise _friendly_load_error(name, err) from None
    if family_of_model(model).shared_layers:
        return cfg.num_hidden_layers
    return len(layer_list(model))


def family_of_model(encoder) -> Family:
    """The family (core/families.py) of a loaded body, from its config's model_type."""
    return family_of(getattr(encoder.config, "model_type", None), type(encoder).__name__)


def _layer_list_slot(encoder):
    """(the module holding the layer list, its attribute name, the list), where the family's table says it is."""
    path = family_of_model(encoder).layers
    *parents, name = path.split(".")
    holder = encoder
    for part in parents:
        holder = getattr(holder, part, None)
        if holder is None:
            break
    node = getattr(holder, name, None) if holder is not None else None
    if not isinstance(node, nn.ModuleList) or len(node) == 0:
        raise ModelError(f"{type(encoder).__name__} has no layer list at {path}, where its family keeps it; "
                         f"re-save the model with the transformers version that wrote it")
    return holder, name, node


def layer_list(encoder):
    """The body's ModuleList of transformer blocks (where its family keeps them); a clear error when absent."""
    return _layer_list_slot(encoder)[2]


def untie_shared_layers(encoder) -> None:
    """ALBERT applies one block (a layer group) at every depth. Give each depth its own copy, the same weights and
    so the same function as before, so that corrupting layer k damages depth k alone. A clean run is untied too,
    so that clean and corrupted runs fine-tune the same architecture (a depth's copy then trains on its own)."""
    import copy

    cfg = encoder.config
    groups = encoder.encoder.albert_layer_groups
    L, G = cfg.num_hidden_layers, cfg.num_hidden_groups
    if G == L:
        return
    depth_group = [int(i / (L / G)) for i in range(L)]  # AlbertTransformer.forward's own rule
    encoder.encoder.albert_layer_groups = nn.ModuleList([copy.deepcopy(groups[g]) for g in depth_group])
    cfg.num_hidden_groups = L


def load_tokenizer(name: str):
    """The model's tokenizer. One without a pad token (GPT-2, Pythia, Llama) pads with an existing token (its end,
    else unknown, else beginning token): the vocabulary and the embedding matrix keep their size, and padding is
    masked out of attention and pooling anyway."""
    AutoTokenizer = hf("AutoTokenizer")
    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as err:
        raise _friendly_load_error(name, err, "tokenizer") from None
    if tokenizer.pad_token is None:
        stand_in = tokenizer.eos_token or tokenizer.unk_token or tokenizer.bos_token
        if stand_in is None:
            raise ModelError(f"the tokenizer of model {name!r} has no pad, end, unknown or beginning token to pad "
                             f"with; save it with a pad_token")
        tokenizer.pad_token = stand_in
    return tokenizer


def load_encoder(name: str):
    """The base encoder (AutoModel) with pretrained weights, SDPA attention where the architecture has it."""
    AutoModel = hf("AutoModel")
    hf("utils.logging").disable_progress_bar()
    load_model_config(name)  # fails early, with the friendly message, for bad names
    path = resolve_model_path(name)
    try:
        try:
            encoder = AutoModel.from_pretrained(path, trust_remote_code=False, attn_implementation="sdpa")
        except ValueError as err:  # DeBERTa-v2 and others have no SDPA attention: their own
            if "sdpa" not in str(err).lower() and "attention implementation" not in str(err).lower():
                raise
            encoder = AutoModel.from_pretrained(path, trust_remote_code=False)
    except Exception as err:
        raise _friendly_load_error(name, err) from None
    if family_of_model(encoder).shared_layers:
        untie_shared_layers(encoder)
    layer_list(encoder)  # unsupported architectures fail here, before anything is written
    return encoder


def takes_token_types(body) -> bool:
    """Whether a body is given token type ids: only where it learned two (BERT); elsewhere (DistilBERT, RoBERTa,
    GPT-2, whose "types" would be word embeddings) pairs are told apart by their separator tokens alone."""
    return ("token_type_ids" in inspect.signature(body.forward).parameters
            and (getattr(body.config, "type_vocab_size", 0) or 0) >= 2)


def _dropout_of(config) -> float:
    for attr in ("hidden_dropout_prob", "dropout", "hidden_dropout", "resid_pdrop"):
        value = getattr(config, attr, None)
        if isinstance(value, float):
            return value
    return 0.1


def build_classifier(encoder, num_labels: int, pooling: str, seed: int):
    """Body + dropout + linear head (initialised from `seed`). Every classifier is of one class, so K of
    them can be stacked into one fused model (fused.py). Pooling: cls ([CLS]: the pooler where the model has one,
    else the first token's state), mean (every real token; an encoder's [CLS] left out, as in the paper's
    appendix) or last (the last real token, a decoder's summary of the whole text; left or right padding alike)."""
    return classifier_class()(encoder, num_labels, pooling, seed)


@lru_cache(maxsize=1)
def classifier_class():
    """The classifier's class (one class, so that K of them can be stacked into one fused model)."""

    class Classifier(nn.Module):
        """Body + dropout + linear head. `pooled` is what t-SNE panels and the probe see."""

        def __init__(self, encoder, num_labels: int, pooling: str, seed: int):
            super().__init__()
            family = family_of_model(encoder)
            if pooling == "cls" and family.causal:
                raise ModelError(f"pooling=cls on a {family.name} model, a decoder: its first token sees only "
                                 f"itself; use pooling=last (the default for decoders) or mean")
            self.encoder = encoder
            self.pooling = pooling
            self.skip_first = not family.causal  # mean pooling leaves out an encoder's [CLS]; a decoder has none
            config = encoder.config
            hidden = next(getattr(config, k) for k in ("hidden_size", "n_embd", "dim") if hasattr(config, k))
            self.dropout = nn.Dropout(_dropout_of(encoder.config))
            self.head = nn.Linear(hidden, num_labels)
            self.use_types = takes_token_types(encoder)
            self.use_cache_arg = "use_cache" in inspect.signature(encoder.forward).parameters
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * 0.02)
                self.head.bias.zero_()

        def encode(self, input_ids, attention_mask, token_type_ids=None, hidden_states: bool = False):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None and self.use_types:
                kwargs["token_type_ids"] = token_type_ids
            if hidden_states:
                kwargs["output_hidden_states"] = True
            if self.use_cache_arg:  # a decoder would keep a key/value cache for generation: none while classifying
                kwargs["use_cache"] = False
            out = self.encoder(**kwargs)
            return self.pool(out, attention_mask), (out.hidden_states if hidden_states else None)

        def pool(self, out, attention_mask):
            hidden = out.last_hidden_state
            if self.pooling == "last":
                return last_token(hidden, attention_mask)
            if self.pooling == "mean":
                # The paper's appendix: mean of every token but [CLS], padding excluded.
                mask = attention_mask.clone()
                if self.skip_first:
                    mask[:, 0] = 0
                mask = mask.unsqueeze(-1).to(hidden.dtype)
                return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooler_output = getattr(out, "pooler_output", None)
            # BERT-style models: the pooler over [CLS], as BertForSequenceClassification reads it.
            return pooler_output if pooler_output is not None else hidden[:, 0]

        def forward(self, input_ids, attention_mask, token_type_ids=None, hidden_states: bool = False):
            """(logits, pooled features) and, with hidden_states, the encoder's per-layer states as a third item."""
            pooled, states = self.encode(input_ids, attention_mask, token_type_ids, hidden_states)
            logits = self.head(self.dropout(pooled))
            return (logits, pooled, states) if hidden_states else (logits, pooled)

    return Classifier


def last_token(hidden, attention_mask):
    """Each row's state at its last real (unmasked) position: right padding (real tokens, then pads) and left
    padding (pads, then real tokens) alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask.to(torch.long) * positions).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def pick_device(requested: str) -> str:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("device=cuda was asked for but no CUDA GPU is visible; use device=auto or cpu")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def hardware_name(device: str) -> str:
    """What the run ran on, in words ("NVIDIA H100 80GB HBM3", "CPU: AMD EPYC ... (2 threads)"), for reports."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"
