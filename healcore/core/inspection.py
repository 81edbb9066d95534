"""What healcore would do to a model, from its config.json alone (no weights loaded; torch-free): its family, sizes
and parameters, which layers each paper level picks, which modules each `scope` touches, its LoRA targets and
default pooling. `healcore models inspect NAME` prints it; Launch shows it beside the model picker.

Module names come from the weights file's header where a local folder has one (the names the run will see), else
from the family table's names.
"""
from __future__ import annotations

import re
from pathlib import Path

from healcore.core.errors import CorruptionSpecError, ModelError
from healcore.core.families import Family, part_of
from healcore.core.layers import PAPER_PERCENTS, parse_layers
from healcore.core.model_facts import (_config_json, family, model_folder, model_shape, safetensors_shapes,
                                       short_name)

SCOPES_SHOWN = ("attention", "ffn", "layernorm")
_NORM_NAME = re.compile(r"(?:norm|^ln_|\.ln_)", re.IGNORECASE)  # LayerNorm, RMSNorm, GPT-2's ln_1


def block_modules(name: str, fam: Family) -> list[str] | None:
    """The parameter-owning modules of the first block, relative to it ("attention.self.query"), read from the
    local weights' header; None where there is no local safetensors file."""
    try:
        folder = Path(model_folder(name))
    except ModelError:
        return None
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    marker = f"{fam.layers.split('.')[-1]}.0."
    found: list[str] = []
    for path in files:
        for tensor in safetensors_shapes(path):
            at = tensor.find(marker)
            if at < 0 or (at > 0 and tensor[at - 1] != "."):
                continue
            module = tensor[at + len(marker):].rpartition(".")[0]
            if module not in found:
                found.append(module)
    return found or None


def scope_of(fam: Family, module: str) -> str:
    """A block's module placed by its name alone (families.part_of, with a norm told by its name where the engine
    reads its class; a test checks that both agree on every family)."""
    last = module.rsplit(".", 1)[-1]
    looks_like_norm = bool(_NORM_NAME.search(last)) or "layernorm" in last.lower()
    return part_of(fam, module, "LayerNorm" if looks_like_norm else "") or "unplaced"


def level_picks(num_layers: int) -> dict[str, str]:
    """"bottom:25%" -> "layers 1-3" (or why it does not fit) for each of the paper's levels and both sides."""
    picks: dict[str, str] = {}
    for side in ("bottom", "top"):
        for pct in PAPER_PERCENTS:
            spec = f"{side}:{pct}%"
            try:
                layers = [i + 1 for i in parse_layers(spec).resolve(num_layers)]
            except CorruptionSpecError:
                picks[spec] = f"not a whole number of layers of {num_layers}"
                continue
            picks[spec] = f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"
    return picks


def inspect_model(name: str) -> dict:
    """Everything `healcore models inspect` prints, as a dict (one-line ModelError for a model it cannot read)."""
    fam = family(name)
    raw = _config_json(name)
    shape = model_shape(name)
    modules = block_modules(name, fam)
    if modules is not None:
        scopes = {scope: [m for m in modules if scope_of(fam, m) == scope] for scope in SCOPES_SHOWN}
        source = "weights header"
    else:
        scopes = {"attention": [f"{n}.*" for n in fam.attention], "ffn": [f"{n}.*" for n in fam.ffn],
                  "layernorm": ["every LayerNorm / RMSNorm"]}
        source = "family table"
    notes = []
    if fam.shared_layers:
        notes.append("its layers share one block's weights; healcore unties them when it loads the model (one copy "
                     "per depth, the same function), so layer k is depth k alone, and clean runs are untied too")
    if fam.norm_identity != 1.0:
        notes.append(f"its norms scale by 1 + weight: re-initialisation sets their weights to {fam.norm_identity:g}")
    if fam.transposed:
        notes.append("Conv1D weights are stored (in, out): re-initialisation takes the fan-in from their first axis")
    if fam.causal:
        notes.append("a decoder: pooling=cls is refused; last (the default) or mean")
    return {"model": name, "family": fam.name, "model_type": raw.get("model_type"), "causal": fam.causal,
            "layers": shape["layers"], "hidden": shape["hidden"], "inner": shape["inner"], "heads": shape["heads"],
            "kv_heads": shape["kv_heads"], "params": shape["params"], "block_params": shape["block_params"],
            "layer_path": fam.layers, "picks": level_picks(shape["layers"]), "scopes": scopes,
            "scope_source": source, "lora_targets": list(fam.lora), "default_pooling": fam.pooling,
            "head_layout": [f"{path} ({HEAD_LAYOUT_WORDS[layout]})" for path, layout in fam.heads], "notes": notes}


# how each layout of families.Family.heads holds a head's weights, in words
HEAD_LAYOUT_WORDS = {"q": "its outputs, a slice per head",
                     "kv": "its outputs, a slice per key/value head, damaged when all its query heads are",
                     "qkv": "q, k and v output blocks, a slice of each per head",
                     "qkv_interleaved": "its outputs, each head's q, k, v together", "o": "its inputs, a slice per head"}


def _millions(n: int | None) -> str:
    return "unknown" if not n else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"


def format_inspection(info: dict) -> str:
    """The inspection as plain text lines (the CLI prints it; Launch shows it)."""
    heads = f", {info['heads']} heads" + (f" ({info['kv_heads']} key/value)" if info["kv_heads"] not in
                                           (None, info["heads"]) else "") if info["heads"] else ""
    lines = [f"model        {short_name(info['model'])}",
             f"family       {info['family']} (model_type {info['model_type']}), "
             f"{'decoder-only' if info['causal'] else 'encoder'}",
             f"layers       {info['layers']} at {info['layer_path']}; width {info['hidden']}, feed-forward "
             f"{info['inner']}{heads}",
             f"parameters   {_millions(info['params'])} ({_millions(info['block_params'])} in the blocks)",
             "levels       " + "; ".join(f"{k} = {v}" for k, v in info["picks"].items()),
             f"scopes       (each block; from its {info['scope_source']})"]
    for scope, modules in info["scopes"].items():
        lines.append(f"  {scope:<10} {', '.join(modules) or 'none'}")
    if info.get("head_layout") and info["heads"]:
        lines.append(f"heads        0..{info['heads'] - 1} (heads=0,3 damages those): "
                     + "; ".join(info["head_layout"]))
    lines += [f"LoRA targets {', '.join(info['lora_targets'])}",
              f"pooling      {info['default_pooling']} by default"]
    lines += [f"note         {n}" for n in info["notes"]]
    return "\n".join(lines)
