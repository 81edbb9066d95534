"""Grid specs and presets -> run configs (planning them against a store is plan.py; running them, launch.py).

A grid spec is YAML (every preset in healcore/presets/ states the command that runs it):

  name: demo
  models: [minilm-l6]
  datasets: [sst2]
  corruption:                 # one block or a list of blocks
    sides: [bottom, top]
    levels: ["0%", "50%", "100%"]   # percent of each model's L (paper), or layer counts [1, 2, 3]
    method: reinit            # optional: reinit | noise | zero | bitflip | shuffle | remove | magnitude
    strengths: [0.1, 0.5]     # optional, for dose-response of noise/zero/bitflip
    heads: "0,3"              # optional: only these attention heads of each chosen layer (reinit/noise/zero/magnitude)
  lrs: [2e-5, 5e-5]
  seeds: [0, 1, 2]
  pooling: [cls]
  modes: [full]
  axes: {max_train: [250, 1000], train_layers: [all, damaged]}   # optional: any other RunConfig key, crossed
  base: {epochs: 3, max_train: 2000}   # any RunConfig key, for every run

Levels are resolved per model from its layer count: a percentage that is no whole number of layers for a
model is skipped for it (DistilBERT: 50% and 100% only, as in the paper), and 100% is one setting ("all"),
not two.
"""
from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healcore.core.config import RunConfig
from healcore.core.errors import ConfigError, first_line, shown
from healcore.core.layers import fitting_percents, layers_at
from healcore.core.paths import short

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"  # shipped inside the package (wheels too)
SPEC_KEYS = {"name", "description", "command", "models", "datasets", "corruption", "lrs", "seeds", "pooling",
             "modes", "axes", "base"}
# keys a spec sets with its own lists (or its corruption blocks): not an axis
OWN_AXES = {"model": "models", "dataset": "datasets", "lr": "lrs", "seed": "seeds", "pooling": "pooling",
            "mode": "modes", "corrupt": "corruption", "method": "corruption", "strength": "corruption",
            "scope": "corruption", "init": "corruption", "heads": "corruption"}
CORRUPTION_KEYS = {"sides", "levels", "method", "strengths", "scope", "init", "heads"}


@dataclass
class Grid:
    name: str
    configs: list[RunConfig]
    notes: list[str] = field(default_factory=list)
    description: str = ""
    spec: dict = field(default_factory=dict)  # the spec it was expanded from (what a launched grid's process reads)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_spec(spec: str | Path | dict) -> dict:
    """A preset name, a YAML file path, or an already-parsed dict."""
    import yaml

    if isinstance(spec, dict):
        return spec
    text_path = Path(spec)
    if not os.path.isfile(text_path):  # (os.path: False, not an OSError, for a name too long)
        candidate = PRESETS_DIR / f"{spec}.yaml"
        if not os.path.isfile(candidate):
            raise ConfigError(f"grid {shown(spec)} is neither a file nor a preset; presets: {', '.join(preset_names())}")
        text_path = candidate
    try:
        data = yaml.safe_load(text_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read grid file {text_path} ({err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"grid file {text_path} is not valid YAML ({first_line(err)})") from None
    except ValueError as err:  # a value YAML cannot build (an integer of 5,000 digits)
        raise ConfigError(f"grid file {text_path} holds a value that cannot be read ({shown(first_line(err))})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"grid file {text_path} must hold a mapping of grid keys")
    data.setdefault("name", text_path.stem)
    return data


def _as_list(value: Any, key: str) -> list:
    if value is None:
        raise ConfigError(f"grid key {key!r} is empty; give at least one value")
    out = value if isinstance(value, list) else [value]
    if not out:
        raise ConfigError(f"grid key {key!r} is empty; give at least one value")
    for i, item in enumerate(out, 1):  # a name or a number each (a nested list is a YAML mistake, or a bomb)
        if not isinstance(item, (str, int, float, bool)) and item is not None:
            raise ConfigError(f"grid key {key!r}: item {i} is a {type(item).__name__} ({shown(item, 40)}); give a "
                              f"list of names or numbers")
    return out


def _level_layers(level: Any, num_layers: int) -> tuple[int | None, str]:
    """A level ("50%" or a count) -> (number of layers for this model, ""), or (None, why it does not fit)."""
    text = str(level).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text)
    if m:
        pct = float(m.group(1))
        if not 0 <= pct <= 100:
            raise ConfigError(f"corruption level {text} must be within 0%..100%")
        k = layers_at(pct, num_layers)
        return (k, "") if k is not None else (None, f"{text} of {num_layers} layers is not a whole number")
    if re.fullmatch(r"\d+", text):
        k = int(text)
        return (k, "") if k <= num_layers else (None, f"{k} layers asked, it has {num_layers}")
    raise ConfigError(f"corruption level {short(level)!r} is neither a percentage (50%) nor a layer count (3)")


def _axes(axes: Any, base: dict) -> list[dict]:
    """A spec's `axes:` (any RunConfig key -> its values) as every combination of them ([{}] without axes): crossed
    with the models, datasets, levels, lrs and seeds. Unknown keys, keys with a list of their own, and values the
    key refuses are one line each."""
    if axes in (None, {}):
        return [{}]
    if not isinstance(axes, dict):
        raise ConfigError(f"grid key 'axes' must map setting names to lists of values, e.g. axes: {{max_train: "
                          f"[250, 1000]}}; got {shown(axes, 60)}")
    known = set(RunConfig.__dataclass_fields__)
    for key in axes:
        if key in OWN_AXES:
            raise ConfigError(f"axes: {key!r} has its own grid key; list its values under {OWN_AXES[key]!r}")
        if key not in known:
            raise ConfigError(f"axes: unknown setting {shown(key, 40)}; valid: "
                              f"{', '.join(sorted(known - set(OWN_AXES)))}")
    keys = list(axes)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(_as_list(axes[k], f"axes.{k}") for k in keys))]
    for combo in combos:  # a value a setting refuses is named here, with its key
        RunConfig.from_dict({**base, **combo})
    return combos


def _fitting_levels(num_layers: int, method: str | None = None) -> str:
    if method == "remove":  # every layer removed leaves nothing
        return ", ".join(p for p in fitting_percents(num_layers) if p != "100%") + f", or 0..{num_layers - 1}"
    return ", ".join(fitting_percents(num_layers)) + f", or 0..{num_layers}"


def expand(spec: str | Path | dict, overrides: dict | None = None) -> Grid:
    """Every RunConfig of a grid spec, in a stable order, validated."""
    from healcore.core.model_facts import default_pooling, num_layers

    data = load_spec(spec)
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"unknown grid key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(SPEC_KEYS))}")
    name = str(data["name"])
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}", name):
        raise ConfigError(f"grid name {shown(name)} may use letters, digits, '.', '_' and '-' only")
    base = dict(data.get("base") or {})
    base.update(overrides or {})
    RunConfig.from_dict(base)  # unknown or bad base keys fail here, with the key named
    blocks = data.get("corruption") or {"sides": ["bottom"], "levels": ["0%"]}
    blocks = blocks if isinstance(blocks, list) else [blocks]
    for b in blocks:
        if not isinstance(b, dict):
            raise ConfigError("each corruption block must be a mapping with sides and levels")
        bad = sorted(set(b) - CORRUPTION_KEYS)
        if bad:
            raise ConfigError(f"unknown corruption key(s) {', '.join(map(repr, bad))}; valid: {', '.join(sorted(CORRUPTION_KEYS))}")
    axis_settings = _axes(data.get("axes"), base)
    configs: dict[str, RunConfig] = {}
    notes: list[str] = []
    fits: dict[str, list[str]] = {}  # level -> why it fits no model, for each model
    for model in _as_list(data.get("models", [base.get("model", "minilm-l6")]), "models"):
        L = num_layers(str(model))
        settings: list[dict] = []
        for b in blocks:
            sides = _as_list(b.get("sides", ["bottom", "top"]), "sides")
            for side in sides:
                if side not in ("bottom", "top"):
                    raise ConfigError(f"corruption side {shown(side)} must be bottom or top")
            strengths = b.get("strengths", [None])
            for level in _as_list(b.get("levels", ["0%"]), "levels"):
                k, why = _level_layers(level, L)
                if k == L and b.get("method") == "remove":  # nothing would be left to heal
                    k, why = None, f"removing all {L} layers leaves no model"
                fits.setdefault(str(level), [])
                if k is None:  # another model of the grid may take it (DistilBERT has no 25%, as in the paper)
                    fits[str(level)].append(f"{model}: {why} (valid: {_fitting_levels(L, b.get('method'))})")
                    notes.append(f"{model}: level {level} skipped ({why})")
                    continue
                fits[str(level)].append("")
                for side in (["bottom"] if k in (0, L) else sides):  # 0% and 100% are one setting each
                    for strength in _as_list(strengths, "strengths"):
                        s = {"corrupt": "none" if k == 0 else f"{side}:{k}"}
                        if k:
                            s.update({key: b[key] for key in ("method", "scope", "init", "heads") if key in b})
                            if strength is not None:
                                s["strength"] = strength
                        settings.append(s)
        for dataset, setting, lr, seed, pooling, mode, axis_values in itertools.product(
                _as_list(data.get("datasets", [base.get("dataset", "sst2")]), "datasets"), settings,
                _as_list(data.get("lrs", [base.get("lr", 2e-5)]), "lrs"),
                _as_list(data.get("seeds", [base.get("seed", 0)]), "seeds"),
                _as_list(data.get("pooling", [base.get("pooling") or default_pooling(str(model))]), "pooling"),
                _as_list(data.get("modes", [base.get("mode", "full")]), "modes"), axis_settings):
            cfg = RunConfig.from_dict({**base, "model": model, "dataset": dataset, **setting, "lr": lr, "seed": seed,
                                       "pooling": pooling, "mode": mode, **axis_values})
            configs.setdefault(cfg.run_id, cfg)
    unusable = {level: whys for level, whys in fits.items() if whys and all(whys)}
    if unusable:  # a level no model of the grid can take is a mistake, not a note
        level, whys = next(iter(unusable.items()))
        raise ConfigError(f"corruption level {short(level)} fits no model of the grid ({'; '.join(whys)}); remove it "
                          f"or give one that fits")
    if not configs:
        raise ConfigError(f"grid {name} expands to no runs ({'; '.join(sorted(set(notes))) or 'no levels'}); "
                          f"choose levels that fit the models' layer counts")
    return Grid(name, list(configs.values()), sorted(set(notes)), str(data.get("description", "")), data)


def describe(spec: str | Path | dict) -> str:
    """What a grid does, in one line: its description, else its size and axes."""
    data = load_spec(spec)
    if data.get("description"):
        return str(data["description"])
    blocks = data.get("corruption") or {}
    blocks = blocks if isinstance(blocks, list) else [blocks]
    levels = sorted({str(level) for b in blocks if isinstance(b, dict) for level in b.get("levels", [])})
    return (f"{', '.join(map(str, data.get('models', ['minilm-l6'])))} on {', '.join(map(str, data.get('datasets', ['sst2'])))}; "
            f"levels {', '.join(levels) or '0%'}; lr {', '.join(map(str, data.get('lrs', ['2e-5'])))}; "
            f"{len(data.get('seeds', [0]))} seed(s)")
