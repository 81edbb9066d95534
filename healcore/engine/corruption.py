"""Corrupting chosen layers: the paper's re-initialisation and six other kinds of damage (noise, zero, bitflip,
shuffle; remove: the layers deleted, the model L - k deep; magnitude: the largest weights zeroed).

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
    embeddings: bool = False
    pooler: bool = False
    seed: int = 0

    @property
    def selection(self) -> LayerSelection:
        return self.layers if isinstance(self.layers, LayerSelection) else parse_layers(self.layers)

    @classmethod
    def from_config(cls, cfg) -> "CorruptionSpec":
        return cls(layers=cfg.layers, method=cfg.method, init=cfg.init, strength=cfg.strength, scope=cfg.scope,
                   embeddings=cfg.corrupt_embeddings, pooler=cfg.corrupt_pooler, seed=cfg.seed)


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

    if spec.method == "magnitude":
        return _zero_largest(encoder, indices, spec, strength, report)

    with torch.no_grad():
        for _, module, p_name, param in _targets(encoder, indices, spec):
            if spec.method == "reinit":
                _reinit_(param, module, p_name, spec, g, init_range, family)
            elif spec.method == "noise":
                std = float(param.float().std()) if param.numel() > 1 else 0.0
                param.add_(torch.randn(param.shape, generator=g).to(param.dtype) * (strength * std))
            elif spec.method == "zero":
                mask = torch.rand(param.shape, generator=g) < strength
                param.masked_fill_(mask, 0.0)
            elif spec.method == "bitflip":
                report["bits_flipped"] += _bitflip_(param, strength, rng)
            report["tensors_changed"] += 1
            report["params_changed"] += param.numel()
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
                  report: dict[str, Any]) -> dict[str, Any]:
    """Targeted damage: zero the largest-magnitude `fraction` of the chosen layers' weight matrices, taken together
    (one threshold over all of them: the outlier weights the Super Weight work found decisive). Biases and norms
    are left alone; ties at the threshold are all zeroed."""
    weights = [param for _, _, p_name, param in _targets(encoder, indices, spec) if param.dim() >= 2]
    if not weights:
        return report
    magnitudes = torch.cat([w.detach().abs().reshape(-1).float() for w in weights])
    k = int(round(fraction * magnitudes.numel()))
    if k == 0:
        return report
    threshold = torch.topk(magnitudes, k).values.min()
    with torch.no_grad():
        for w in weights:
            mask = w.abs() >= threshold
            report["params_changed"] += int(mask.sum())
            report["tensors_changed"] += int(bool(mask.any()))
            w.masked_fill_(mask, 0.0)
    report["threshold"] = float(threshold)
    return report
