"""Corrupting chosen layers: the paper's re-initialisation and six other kinds of damage (noise, zero, bitflip,
shuffle; remove: the layers deleted, the model L - k deep; magnitude: the largest weights zeroed).

`heads` narrows reinit, noise, zero and magnitude to chosen attention heads of the chosen layers: only those heads'
query, key and value rows (their biases too) and their columns of the output projection change; norms, the output
bias and the feed-forward network stay. Where each family keeps a head's weights is core/families.py's `heads`
table; with grouped-query attention a key-value head is damaged only when every query head that reads it is chosen.

Method `reinit` follows the paper: inside the chosen layers every LayerNorm weight := 1, every bias
(LayerNorm's too) := 0, every other weight re-initialised. The default re-initialisation is
`kaiming_uniform` (torch.nn.init.kaiming_uniform_ with its defaults: a=0, fan_in, bound sqrt(6/fan_in)),
because the paper says "Kaiming uniform" and names no variant, and these are the function's defaults.
`torch_default` is nn.Linear's own reset (a=sqrt(5), bound 1/sqrt(fan_in)); `normal` is
N(0, initializer_range), BERT's own initialisation (as in "Revisiting Few-sample BERT Fine-tuning").

Which layers (a LayerSelection) is layers.py's, torch-free; where each family keeps its blocks, embeddings and
pooler, and which of a block's modules each `scope` touches, is core/families.py's table. Re-initialisation follows
the family: GPT-2's Conv1D weights are stored (in, out), so their fan-in is the first axis; a norm's weight is set to
the value that scales by one (1, or 0 for Gemma's norms, which scale by 1 + weight); RMSNorm has no bias.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from healcore.core.config import head_indices, heads_beyond
from healcore.core.errors import CorruptionSpecError
from healcore.core.families import Family
from healcore.core.families import part_of as family_part_of
from healcore.core.layers import DEFAULT_STRENGTH, LayerSelection, chosen_layers, parse_layers
from healcore.engine.models import family_of_model, keep_layers, layer_list


@dataclass(frozen=True)
class CorruptionSpec:
    """Everything that defines the damage; serialisable, hashable, seeded."""

    layers: str | LayerSelection = "none"  # a selection's text, or the one a RunConfig parsed (cfg.layers)
    method: str = "reinit"
    init: str = "kaiming_uniform"
    strength: float | None = None
    scope: str = "all"
    heads: str = "all"  # canonical (config.canonical_heads): all, or 0-based head indices
    embeddings: bool = False
    pooler: bool = False
    seed: int = 0

    @property
    def selection(self) -> LayerSelection:
        return self.layers if isinstance(self.layers, LayerSelection) else parse_layers(self.layers)

    @classmethod
    def from_config(cls, cfg) -> "CorruptionSpec":
        return cls(layers=cfg.layers, method=cfg.method, init=cfg.init, strength=cfg.strength, scope=cfg.scope,
                   heads=cfg.heads, embeddings=cfg.corrupt_embeddings, pooler=cfg.corrupt_pooler, seed=cfg.seed)


# ---------------------------------------------------------------------------------------------- apply
def part_of(family: Family, name: str, module) -> str:
    """Which part of a transformer block a sub-module belongs to: layernorm, attention or ffn (the family's table)."""
    part = family_part_of(family, name, type(module).__name__)
    if part is None:
        raise CorruptionSpecError(f"{family.name}: the module {name!r} ({type(module).__name__}) of a block is "
                                  f"neither attention, feed-forward nor a norm in healcore's family table")
    return part


def _is_norm(module) -> bool:
    cls = type(module).__name__.lower()
    return "layernorm" in cls or "rmsnorm" in cls


def _targets(encoder, indices: list[int], spec: CorruptionSpec):
    """(qualified name, module, param name, param) of every parameter the spec touches, in a fixed order."""
    family = family_of_model(encoder)
    layers = layer_list(encoder)
    for i in indices:
        for mod_name, module in layers[i].named_modules():
            for p_name, param in module.named_parameters(recurse=False):
                if spec.scope != "all" and part_of(family, mod_name, module) != spec.scope:
                    continue
                yield f"layer{i + 1}.{mod_name}.{p_name}".replace("..", "."), module, p_name, param
    extra = (family.embeddings if spec.embeddings else ()) + ((family.pooler,) if spec.pooler and family.pooler else ())
    if extra:
        owners = dict(encoder.named_modules())
        for full_name, param in encoder.named_parameters():
            if full_name.startswith(extra):
                mod_name, _, p_name = full_name.rpartition(".")
                yield full_name, owners[mod_name], p_name, param


def _head_geometry(encoder, heads: list[int]) -> tuple[int, int, list[int]]:
    """(query heads, key-value heads, the key-value heads whose every query head is chosen) of a model's config,
    with a one-line error for a head it does not have."""
    cfg = encoder.config
    n_heads = int(getattr(cfg, "num_attention_heads", 0) or 0)
    if n_heads <= 0:
        raise CorruptionSpecError("heads: this model's config does not say how many attention heads it has")
    beyond = heads_beyond(heads, n_heads, "this model")
    if beyond:
        raise CorruptionSpecError(beyond)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    group = n_heads // n_kv
    whole = [g for g in range(n_kv) if all(g * group + j in heads for j in range(group))]
    return n_heads, n_kv, whole


def _head_slices(layout: str, width: int, heads: list[int], n_heads: int, n_kv: int, whole_kv: list[int]) -> list[int]:
    """Positions, along an axis of `width`, of the chosen heads' slices in one layout (families.Family.heads)."""
    def slices(chosen: list[int], size: int, offset: int = 0) -> list[int]:
        return [offset + c * size + j for c in chosen for j in range(size)]

    if layout in ("q", "o", "qkv_interleaved"):  # one slice per query head (q, k and v together when interleaved)
        return slices(heads, width // n_heads)
    if layout == "kv":
        return slices(whole_kv, width // n_kv)
    if layout == "qkv":  # [q; k; v], each n_heads slices of head_dim
        third = width // 3
        return [i for part in range(3) for i in slices(heads, third // n_heads, part * third)]
    raise CorruptionSpecError(f"heads: unknown head layout {layout!r} in the family table")


def head_masks(encoder, indices: list[int], heads: str) -> dict[str, torch.Tensor]:
    """The chosen heads' share of each parameter they live in, as boolean masks keyed like _targets' names
    ("layer{i}.{module}.{param}"): rows (or a Conv1D's columns) of the q/k/v projections and their biases,
    columns of the output projection. Empty for heads=all."""
    chosen = head_indices(heads)
    if chosen is None:
        return {}
    family = family_of_model(encoder)
    if not family.heads:
        raise CorruptionSpecError(f"heads: healcore does not know where {family.name} keeps each head's weights; "
                                  f"use heads=all")
    n_heads, n_kv, whole_kv = _head_geometry(encoder, chosen)
    layers = layer_list(encoder)
    masks: dict[str, torch.Tensor] = {}
    for i in indices:
        modules = dict(layers[i].named_modules())
        for path, layout in family.heads:
            found = [name for name in modules if name == path or name.endswith("." + path)]
            if not found:
                raise CorruptionSpecError(f"heads: {family.name}'s block has no module {path!r}; use heads=all")
            for name in found:
                module = modules[name]
                weight = module.weight
                out_axis = 1 if family.transposed and type(module).__name__ == "Conv1D" else 0
                axis = 1 - out_axis if layout == "o" else out_axis
                picked = torch.zeros(weight.shape[axis], dtype=torch.bool)
                picked[_head_slices(layout, weight.shape[axis], chosen, n_heads, n_kv, whole_kv)] = True
                shape = [1, 1]
                shape[axis] = -1
                masks[f"layer{i + 1}.{name}.weight"] = picked.view(shape).expand(weight.shape).clone()
                if layout != "o" and getattr(module, "bias", None) is not None:
                    masks[f"layer{i + 1}.{name}.bias"] = picked.clone()
    return masks


def _reinit_(param, module, p_name: str, spec: CorruptionSpec, g, init_range: float, family: Family) -> None:
    if _is_norm(module):
        param.fill_(family.norm_identity if p_name == "weight" else 0.0)
    elif p_name.endswith("bias") or param.dim() < 2:
        if p_name.endswith("bias"):
            param.zero_()
        else:  # a 1-D weight outside a norm has no fan-in: BERT's own normal init
            param.copy_(torch.randn(param.shape, generator=g) * init_range)
    elif spec.init in ("kaiming_uniform", "torch_default"):
        # GPT-2's Conv1D keeps (in, out): initialised as the (out, in) matrix it applies, then stored transposed
        transposed = family.transposed and type(module).__name__ == "Conv1D"
        tmp = torch.empty(tuple(reversed(param.shape)) if transposed else param.shape)
        a = 0.0 if spec.init == "kaiming_uniform" else math.sqrt(5)
        torch.nn.init.kaiming_uniform_(tmp, a=a, generator=g)
        param.copy_(tmp.t() if transposed else tmp)
    else:  # normal
        param.copy_(torch.randn(param.shape, generator=g) * init_range)


def _bitflip_(param, rate: float, rng) -> int:
    int_type = {torch.float32: (torch.int32, np.uint32, 32), torch.bfloat16: (torch.int16, np.uint16, 16),
                torch.float16: (torch.int16, np.uint16, 16)}.get(param.dtype)
    if int_type is None:
        raise CorruptionSpecError(f"bitflip supports float32/bfloat16/float16 weights, not {param.dtype}")
    torch_int, np_uint, nbits = int_type
    total = param.numel() * nbits
    n_flips = int(rng.binomial(total, rate))
    if n_flips == 0:
        return 0
    positions = np.unique(rng.integers(0, total, size=n_flips))
    bits = param.detach().cpu().contiguous().view(torch_int).numpy().view(np_uint).reshape(-1).copy()
    elems, bit = positions // nbits, (positions % nbits).astype(np_uint)
    np.bitwise_xor.at(bits, elems, (np_uint(1) << bit).astype(np_uint))
    flipped = torch.from_numpy(bits.view(np.int32 if nbits == 32 else np.int16)).view(param.dtype)
    param.copy_(flipped.view(param.shape))
    return len(positions)


def apply(encoder, spec: CorruptionSpec) -> dict[str, Any]:
    """Corrupt `encoder` in place, on CPU, deterministically for `spec.seed`. Returns a report."""
    num_layers = len(layer_list(encoder))
    indices = chosen_layers(spec.selection, spec.method, num_layers)
    report: dict[str, Any] = {"num_layers": num_layers, "layers": [i + 1 for i in indices], "method": spec.method,
                              "params_changed": 0, "tensors_changed": 0, "bits_flipped": 0}
    if not indices and not spec.embeddings and not spec.pooler:
        return report
    g = torch.Generator().manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    strength = spec.strength if spec.strength is not None else DEFAULT_STRENGTH.get(spec.method)
    report["strength"] = strength
    init_range = float(getattr(encoder.config, "initializer_range", 0.02))
    family = family_of_model(encoder)

    if spec.method == "remove":
        return _remove(encoder, indices, report)

    if spec.method == "shuffle":
        layers = layer_list(encoder)
        modules = [layers[i] for i in indices]
        perm = list(range(len(indices)))
        while perm == list(range(len(indices))):  # a permutation that moves something
            perm = [int(x) for x in rng.permutation(len(indices))]
        for slot, src in zip(indices, perm):
            layers[slot] = modules[src]
        report["permutation"] = [indices[p] + 1 for p in perm]
        report["tensors_changed"] = sum(1 for i in indices for _ in layers[i].parameters())
        report["params_changed"] = sum(p.numel() for i in indices for p in layers[i].parameters())
        return report

    masks = head_masks(encoder, indices, spec.heads)  # heads: only the chosen heads' share of each tensor changes
    if masks:
        report["heads"] = head_indices(spec.heads)
    if spec.method == "magnitude":
        return _zero_largest(encoder, indices, spec, strength, masks, report)

    with torch.no_grad():
        for name, module, p_name, param in _targets(encoder, indices, spec):
            if masks and name not in masks:  # heads: only the chosen heads' slices change
                continue
            # with heads the damage is drawn for the whole tensor (a re-initialisation keeps the matrix's fan-in)
            # and written into the heads' share alone
            target = param.detach().clone() if masks else param
            if spec.method == "reinit":
                _reinit_(target, module, p_name, spec, g, init_range, family)
            elif spec.method == "noise":
                std = float(param.float().std()) if param.numel() > 1 else 0.0
                target.add_(torch.randn(param.shape, generator=g).to(param.dtype) * (strength * std))
            elif spec.method == "zero":
                mask = torch.rand(param.shape, generator=g) < strength
                target.masked_fill_(mask, 0.0)
            elif spec.method == "bitflip":
                report["bits_flipped"] += _bitflip_(target, strength, rng)
            if masks:
                param[masks[name]] = target[masks[name]]
            report["tensors_changed"] += 1
            report["params_changed"] += int(masks[name].sum()) if masks else param.numel()
    return report


def _remove(encoder, indices: list[int], report: dict[str, Any]) -> dict[str, Any]:
    """Delete the chosen layers ("prune, then heal"): the model is L - k layers deep, its kept layers the originals
    (their weights untouched), its config saying its new depth. Per-layer attention kinds (Qwen2, Gemma) follow."""
    layers = layer_list(encoder)
    kept = [i for i in range(len(layers)) if i not in set(indices)]
    report["params_changed"] = sum(p.numel() for i in indices for p in layers[i].parameters())
    report["tensors_changed"] = sum(1 for i in indices for _ in layers[i].parameters())
    keep_layers(encoder, kept)
    report["kept_layers"] = [i + 1 for i in kept]
    return report


def _zero_largest(encoder, indices: list[int], spec: CorruptionSpec, fraction: float,
                  masks: dict[str, torch.Tensor], report: dict[str, Any]) -> dict[str, Any]:
    """Targeted damage: zero the largest-magnitude `fraction` of the chosen layers' weight matrices, taken together
    (one threshold over all of them: the outlier weights the Super Weight work found decisive). Biases and norms
    are left alone; ties at the threshold are all zeroed. With `masks` (heads), the largest of those heads' weights."""
    weights = [(param, masks.get(name) if masks else torch.ones_like(param, dtype=torch.bool))
               for name, _, p_name, param in _targets(encoder, indices, spec)
               if param.dim() >= 2 and (not masks or name in masks)]
    if not weights:
        return report
    magnitudes = torch.cat([w.detach().abs()[m].float() for w, m in weights])
    k = int(round(fraction * magnitudes.numel()))
    if k == 0:
        return report
    threshold = torch.topk(magnitudes, k).values.min()
    with torch.no_grad():
        for w, within in weights:
            mask = (w.abs() >= threshold) & within
            report["params_changed"] += int(mask.sum())
            report["tensors_changed"] += int(bool(mask.any()))
            w.masked_fill_(mask, 0.0)
    report["threshold"] = float(threshold)
    return report
