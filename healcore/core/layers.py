"""Which encoder layers a corruption touches: parsing a selection, resolving it against a model's L, naming it.

Layers are numbered 1..L from the bottom (embedding side), as in the paper. A selection is `none`, `bottom:k`,
`top:k`, `bottom:P%`/`top:P%` or an explicit list `1,2,6`. Parsed once (RunConfig.layers); torch-free.

One experiment, one spelling: `spelling(layers, L)` names a resolved set of layers the way grids write it
(bottom:k, top:k, bottom:L for all of them, none, or the list), so `bottom:50%`, `bottom:3` and `1,2,3` on a
6-layer model are one run (`RunConfig.with_layers_of`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from healcore.core.errors import CorruptionSpecError

PAPER_PERCENTS = (25, 50, 75, 100)
# Defaults of `strength` per method when a config leaves it as None.
DEFAULT_STRENGTH = {"noise": 1.0, "zero": 0.5, "bitflip": 1e-4, "magnitude": 1e-3}
_SIDE_RE = re.compile(r"^(bottom|top):(-?\d+)(%?)$")
_LIST_RE = re.compile(r"^-?\d+(,-?\d+)*$")


@dataclass(frozen=True)
class LayerSelection:
    kind: str  # none | bottom | top | list
    count: int | None = None  # bottom/top: number of layers
    percent: int | None = None  # bottom/top given as a percentage of L
    numbers: tuple[int, ...] = ()  # list: 1-based layer numbers

    def resolve(self, num_layers: int) -> list[int]:
        """0-based indices of the chosen layers in a model with `num_layers` layers."""
        L = num_layers
        if self.kind == "none":
            return []
        if self.kind == "list":
            bad = [n for n in self.numbers if not 1 <= n <= L]
            if bad:
                raise CorruptionSpecError(f"layer number(s) {bad} out of range: this model has layers 1..{L}")
            return sorted({n - 1 for n in self.numbers})
        k = self.count
        if self.percent is not None:
            k = layers_at(self.percent, L)
            if k is None:
                valid = [f"{self.kind}:{p}" for p in fitting_percents(L) if p != "0%"]
                raise CorruptionSpecError(
                    f"{self.kind}:{self.percent}% of {L} layers is not a whole number of layers; valid: "
                    f"{', '.join(valid) or 'none'} (or give a count, e.g. {self.kind}:1)")
        assert k is not None
        if k > L:
            raise CorruptionSpecError(f"{self.kind}:{k} asks for {k} layers but the model has {L}; use 0..{L}")
        return list(range(k)) if self.kind == "bottom" else list(range(L - k, L))

    def canonical(self) -> str:
        if self.kind == "none" or (self.kind in ("bottom", "top") and (self.count == 0 or self.percent == 0)):
            return "none"
        if self.kind == "list":
            return ",".join(map(str, sorted(set(self.numbers))))
        return f"{self.kind}:{self.percent}%" if self.percent is not None else f"{self.kind}:{self.count}"


def layers_at(percent: float, num_layers: int) -> int | None:
    """How many of a model's layers a percentage is; None where it is no whole number (the one rule: 25% of
    DistilBERT's 6 layers is none, as in the paper)."""
    k = percent * num_layers / 100
    return int(k) if float(k).is_integer() else None


def fitting_percents(num_layers: int) -> list[str]:
    """The paper's levels (and 0%) that are whole numbers of layers for this model."""
    return [f"{p}%" for p in (0, *PAPER_PERCENTS) if layers_at(p, num_layers) is not None]


def parse_layers(text: str) -> LayerSelection:
    """Parse a layer selection; the error names the accepted forms."""
    if not isinstance(text, str):
        raise CorruptionSpecError(f"corrupt={text!r} must be text such as none, bottom:3, top:50% or 1,2,6")
    t = re.sub(r"\s+", "", text.lower())
    if t in ("", "none", "0", "clean"):
        return LayerSelection("none")
    m = _SIDE_RE.match(t)
    if m:
        side, number, pct = m.group(1), int(m.group(2)), m.group(3)
        if number < 0:
            raise CorruptionSpecError(f"corrupt={text!r}: the count must be >= 0, e.g. {side}:3")
        if pct:
            if number > 100:
                raise CorruptionSpecError(f"corrupt={text!r}: a percentage must be 0..100, e.g. {side}:50%")
            return LayerSelection(side, percent=number)
        return LayerSelection(side, count=number)
    if _LIST_RE.match(t):
        numbers = tuple(int(x) for x in t.split(","))
        if any(n < 1 for n in numbers):
            raise CorruptionSpecError(f"corrupt={text!r}: layers are numbered from 1 (bottom) to L (top)")
        return LayerSelection("list", numbers=numbers)
    raise CorruptionSpecError(
        f"corrupt={text!r} is not a layer selection; use none, bottom:k, top:k, bottom:P%, top:P% or a list 1,2,6")


def setting_label(side: str, level: float) -> str:
    """A corruption setting in words, as every table, chart and message names it: clean (0%), bottom 25%, all (100%)."""
    if side == "clean":
        return "clean (0%)"
    if side == "all":
        return "all (100%)"
    if not isinstance(level, (int, float)) or not math.isfinite(level):
        return str(side)
    return f"{side} {int(round(level * 100))}%"


def canonical_layers(text: str) -> str:
    return parse_layers(text).canonical()


def chosen_layers(selection: LayerSelection, method: str, num_layers: int) -> list[int]:
    """0-based indices a corruption touches in a model of `num_layers` layers, with the one rule a method adds:
    shuffle needs two layers to permute."""
    indices = selection.resolve(num_layers)
    if method == "shuffle" and 0 < len(indices) < 2:
        raise CorruptionSpecError("method=shuffle needs at least 2 chosen layers to permute; choose more layers")
    if method == "remove" and len(indices) == num_layers:
        raise CorruptionSpecError(f"method=remove of all {num_layers} layers leaves no model; remove fewer (at most "
                                  f"{num_layers - 1}), or use reinit to damage every layer")
    return indices


def spelling(layers: list[int], num_layers: int) -> str:
    """The one spelling of a set of 1-based layers in a model of L layers, as grids write it: none, bottom:k,
    top:k, bottom:L (every layer), else the sorted list."""
    layers = sorted(set(layers))
    k, L = len(layers), num_layers
    if k == 0:
        return "none"
    if layers == list(range(1, k + 1)):
        return f"bottom:{k}"
    if layers == list(range(L - k + 1, L + 1)):
        return f"top:{k}"
    return ",".join(map(str, layers))


def side_of(layers: list[int], L: int) -> tuple[str, int]:
    """Where 1-based `layers` sit in a model of L layers: (clean | bottom | top | all | custom, how many)."""
    k = len(layers)
    if k == 0:
        return "clean", 0
    if k == L:
        return "all", k
    if layers == list(range(1, k + 1)):
        return "bottom", k
    if layers == list(range(L - k + 1, L + 1)):
        return "top", k
    return "custom", k
