"""The model families healcore runs, and what it must know of each (torch-free): one table.

Per family: where the transformer blocks are (the layer list, relative to the base model AutoModel loads), which
sub-modules of a block are attention and which are the feed-forward network (the `scope` setting; normalisation is
every LayerNorm or RMSNorm, whatever its name), the LoRA target modules, the default pooling, and the few facts
that change how a block is re-initialised or read.

A family is found from config.json's `model_type`. An unknown one is refused in one line that names the known
families: healcore never guesses where a model keeps its layers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from healcore.core.errors import ModelError


@dataclass(frozen=True)
class Family:
    name: str  # as the docs and `healcore models inspect` print it
    model_types: tuple[str, ...]  # config.json model_type values of this family
    layers: str  # dotted path of the block list in the base model (AutoModel)
    attention: tuple[str, ...]  # module names inside a block whose sub-tree is attention (scope=attention)
    ffn: tuple[str, ...]  # ... and the feed-forward network (scope=ffn)
    lora: tuple[str, ...]  # LoRA target modules (peft's target_modules)
    embeddings: tuple[str, ...]  # parameter-name prefixes of the embedding block in the base model
    pooler: str | None = None  # the pooler's prefix, where the model has one
    causal: bool = False  # decoder-only: a token sees only those before it ([CLS] pooling is meaningless)
    transposed: bool = False  # GPT-2's Conv1D stores weights (in, out): fan-in is their first axis
    norm_identity: float = 1.0  # the norm weight that scales by one (Gemma's norms scale by 1 + weight: 0)
    shared_layers: bool = False  # ALBERT: one block's weights reused at every depth (see untie in engine/models)
    gated: bool = False  # a gated MLP: three feed-forward matrices (gate, up, down), not two
    learned_positions: bool = True  # a position-embedding table (rotary models have none)
    # Where each attention head's weights sit in a block (the `heads` setting): (module path in the block, layout).
    # Layouts, on the module's output axis unless said: q (one slice of head_dim per query head: query, key and
    # value where all heads have their own), kv (per key-value head: grouped-query attention), qkv (one matrix
    # [q; k; v], each heads x head_dim), qkv_interleaved (per head its q, k, v together: GPT-NeoX), o (the output
    # projection's input axis, per head; its bias is every head's and stays).
    heads: tuple[tuple[str, str], ...] = ()

    @property
    def pooling(self) -> str:
        """The default pooling: the last real token for decoders, [CLS] for encoders."""
        return "last" if self.causal else "cls"


_BERT_HEADS = (("attention.self.query", "q"), ("attention.self.key", "q"), ("attention.self.value", "q"),
               ("attention.output.dense", "o"))
_BERT_LIKE = dict(layers="encoder.layer", attention=("attention",), ffn=("intermediate", "output"),
                  lora=("query", "value"), embeddings=("embeddings.",), pooler="pooler.", heads=_BERT_HEADS)
_LLAMA_LIKE = dict(layers="layers", attention=("self_attn",), ffn=("mlp",), lora=("q_proj", "v_proj"),
                   embeddings=("embed_tokens.",), causal=True, gated=True, learned_positions=False,
                   heads=(("self_attn.q_proj", "q"), ("self_attn.k_proj", "kv"), ("self_attn.v_proj", "kv"),
                          ("self_attn.o_proj", "o")))

FAMILIES: tuple[Family, ...] = (
    Family("BERT", ("bert",), **_BERT_LIKE),
    Family("RoBERTa / XLM-R", ("roberta", "xlm-roberta", "camembert"), **_BERT_LIKE),
    Family("ELECTRA", ("electra",), **{**_BERT_LIKE, "embeddings": ("embeddings.", "embeddings_project."),
                                      "pooler": None}),
    Family("DeBERTa-v2", ("deberta-v2",), **{**_BERT_LIKE, "lora": ("query_proj", "value_proj"), "pooler": None,
                                             "heads": (("attention.self.query_proj", "q"),
                                                       ("attention.self.key_proj", "q"),
                                                       ("attention.self.value_proj", "q"),
                                                       ("attention.output.dense", "o"))}),
    Family("DistilBERT", ("distilbert",), layers="transformer.layer", attention=("attention",), ffn=("ffn",),
           lora=("q_lin", "v_lin"), embeddings=("embeddings.",),
           heads=(("attention.q_lin", "q"), ("attention.k_lin", "q"), ("attention.v_lin", "q"),
                  ("attention.out_lin", "o"))),
    # ALBERT keeps one block (a "layer group") and applies it at every depth. healcore unties it when it loads the
    # model: one copy per depth, the same function as before, so that "layer 2" is the second depth alone.
    Family("ALBERT", ("albert",), layers="encoder.albert_layer_groups", attention=("attention",),
           ffn=("ffn", "ffn_output"), lora=("query", "value"),
           embeddings=("embeddings.", "encoder.embedding_hidden_mapping_in."), pooler="pooler.", shared_layers=True,
           heads=(("attention.query", "q"), ("attention.key", "q"), ("attention.value", "q"),
                  ("attention.dense", "o"))),
    Family("ModernBERT", ("modernbert",), layers="layers", attention=("attn",), ffn=("mlp",), lora=("Wqkv",),
           embeddings=("embeddings.",), gated=True, learned_positions=False,
           heads=(("attn.Wqkv", "qkv"), ("attn.Wo", "o"))),
    Family("GPT-2", ("gpt2",), layers="h", attention=("attn",), ffn=("mlp",), lora=("c_attn",),
           embeddings=("wte.", "wpe."), causal=True, transposed=True,
           heads=(("attn.c_attn", "qkv"), ("attn.c_proj", "o"))),
    Family("GPT-NeoX (Pythia)", ("gpt_neox",), layers="layers", attention=("attention",), ffn=("mlp",),
           lora=("query_key_value",), embeddings=("embed_in.",), causal=True, learned_positions=False,
           heads=(("attention.query_key_value", "qkv_interleaved"), ("attention.dense", "o"))),
    Family("Llama (Qwen2, Mistral)", ("llama", "qwen2", "mistral"), **_LLAMA_LIKE),
    Family("OPT", ("opt",), layers="decoder.layers", attention=("self_attn",), ffn=("fc1", "fc2"),
           lora=("q_proj", "v_proj"), heads=(("self_attn.q_proj", "q"), ("self_attn.k_proj", "q"),
                                             ("self_attn.v_proj", "q"), ("self_attn.out_proj", "o")),
           embeddings=("decoder.embed_tokens.", "decoder.embed_positions.", "decoder.project_in."), causal=True),
    Family("Gemma (1, 2, 3 text)", ("gemma", "gemma2", "gemma3_text"), **_LLAMA_LIKE, norm_identity=0.0),
)

_BY_TYPE = {t: f for f in FAMILIES for t in f.model_types}


def known_families() -> str:
    """The known families in words, for messages."""
    return ", ".join(f.name for f in FAMILIES)


def family_of(model_type: str | None, name: str = "this model") -> Family:
    """The family of a config.json model_type; an unknown one is one line naming the known families."""
    family = _BY_TYPE.get(str(model_type or ""))
    if family is None:
        raise ModelError(f"unsupported architecture {model_type!r} for {name}: healcore knows the families "
                         f"{known_families()}; use a model of one of them")
    return family


def part_of(family: Family, module_path: str, module_class: str) -> str | None:
    """Which scope a sub-module of a block belongs to (module_path relative to the block, e.g.
    "attention.output.LayerNorm"): layernorm (every LayerNorm or RMSNorm), attention, ffn, or None when the table
    does not place it (a test checks that every family's every parameter is placed)."""
    cls = module_class.lower()
    if "layernorm" in cls or "rmsnorm" in cls:
        return "layernorm"
    parts = module_path.split(".")
    if any(p in family.attention for p in parts):
        return "attention"
    if any(p in family.ffn for p in parts):
        return "ffn"
    return None


# A parameter's transformer block from its name, for any family: "<...>.<layer list>.<i>.<...>".
LAYER_INDEX = re.compile(r"(?:^|\.)(?:" + "|".join(sorted({re.escape(f.layers.split(".")[-1]) for f in FAMILIES}))
                         + r")\.(\d+)\.")
EMBEDDING_PREFIXES = tuple(sorted({p for f in FAMILIES for p in f.embeddings}))
POOLER_PREFIXES = tuple(sorted({f.pooler for f in FAMILIES if f.pooler}))


# config.json keys, per fact, in the order families use them
LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
HIDDEN_KEYS = ("hidden_size", "n_embd", "dim", "d_model")
INNER_KEYS = ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim")
HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads")


def _first_int(raw: dict, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def shape_of(raw: dict) -> dict:
    """A model's sizes from its config.json dict: layers, hidden, inner, heads, kv_heads, head_dim, vocab,
    positions, type_vocab, gated (a gated MLP has three matrices), and parameters: blocks (what a token's FLOPs
    scale with) and total (with the embeddings). Values config.json leaves out are None."""
    family = family_of(raw.get("model_type"))
    layers, hidden = _first_int(raw, LAYER_KEYS), _first_int(raw, HIDDEN_KEYS)
    inner = _first_int(raw, INNER_KEYS) or (4 * hidden if hidden else None)
    heads = _first_int(raw, HEAD_KEYS)
    kv_heads = _first_int(raw, ("num_key_value_heads",)) or heads
    head_dim = _first_int(raw, ("head_dim",)) or (hidden // heads if hidden and heads else None)
    gated = family.gated
    shape = {"family": family.name, "layers": layers, "hidden": hidden, "inner": inner, "heads": heads,
             "kv_heads": kv_heads, "head_dim": head_dim, "vocab": _first_int(raw, ("vocab_size",)) or 30522,
             "positions": _first_int(raw, ("max_position_embeddings", "n_positions")) or 512,
             "type_vocab": _first_int(raw, ("type_vocab_size",)) or 0, "gated": gated}
    if layers and hidden and inner:
        q_out = (heads * head_dim) if heads and head_dim else hidden
        kv_out = (kv_heads * head_dim) if kv_heads and head_dim else hidden
        attention = hidden * q_out + 2 * hidden * kv_out + q_out * hidden
        ffn = (3 if gated else 2) * hidden * inner
        blocks = layers * (attention + ffn)
        embedding = _first_int(raw, ("embedding_size",)) or hidden
        embeddings = shape["vocab"] * embedding + (shape["positions"] * embedding if family.learned_positions else 0)
        shape.update(block_params=blocks, params=blocks + embeddings)
    else:
        shape.update(block_params=None, params=None)
    return shape
