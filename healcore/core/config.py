"""RunConfig: every setting of one healing run, validated, in a canonical form that names the run.

Same config -> same run id -> same run folder: a finished run is reused, an interrupted one resumes.

What each field is, said once here, and every grouping in healcore derives from it:
- EXPERIMENT_FIELDS: what is being measured (model, data, fine-tuning recipe): runs that differ here are
  different lines of a study;
- CORRUPTION_FIELDS: the damage, which places a run on its line (side and level, method and strength);
- REPLICATE_FIELDS: lr and seed: a cell keeps its best learning rate and averages its seeds;
- ARTEFACT_FIELDS: what a run keeps beside its metrics (in the run id; not part of a cell);
- EXECUTION_FIELDS: where and how a run executes (device, precision, compile, checkpoints, analysis sample): not
  what the run is, so not in its id.
A grid cell is every run sharing the experiment and corruption fields (CELL_FIELDS); a degradation line, every
cell sharing the experiment fields; a fused group, every run sharing all but the corruption fields and lr.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import math
import re
import tokenize
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from healcore.core.errors import ConfigError, shown
from healcore.core.layers import LayerSelection, parse_layers, spelling
from healcore.core.paths import hub_parts, is_hub

METHODS = ("reinit", "noise", "zero", "bitflip", "shuffle", "remove", "magnitude")
INITS = ("kaiming_uniform", "torch_default", "normal")
SCOPES = ("all", "attention", "ffn", "layernorm")
MODES = ("full", "linear_probe", "lora")
TRAIN_LAYERS = ("all", "damaged", "intact", "head")
POOLINGS = ("cls", "mean", "last")
SPLITS = ("standard", "paper")
SELECT_ON = ("validation", "test")
METRICS = ("f1_weighted", "f1_macro", "accuracy")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("off", "default", "reduce-overhead")
LR_SCHEDULES = ("constant", "linear", "cosine")
CORRUPTION_FIELDS = ("corrupt", "method", "init", "strength", "scope", "heads", "corrupt_embeddings",
                     "corrupt_pooler")
HEAD_METHODS = ("reinit", "noise", "zero", "magnitude")  # the methods that can damage single heads' weights
REPLICATE_FIELDS = ("lr", "seed")
ARTEFACT_FIELDS = ("feature_samples", "probe_samples")
# How and where a run executes, what it keeps beside its metrics, and what it is allowed to go on with, is not what
# the run is: out of the run id.
EXECUTION_FIELDS = ("device", "precision", "compile", "checkpoint_every", "analysis_samples", "allow_missing_classes")
# which columns and splits of a dataset a run reads (core/sources.DataOptions has these fields, in this order)
DATA_OPTION_FIELDS = ("text_column", "text_pair_column", "label_column", "train_split", "test_split")


@dataclass(frozen=True)
class RunConfig:
    # --- what heals ---
    model: str = "minilm-l6"  # hub id, local folder, or short name (minilm-l6 = offline all-MiniLM-L6-v2; minilm-l3 = its layers 1, 3, 5)
    dataset: str = "sst2"  # registry name (sst2, ag_news, ...), a folder (train/test files, or a saved DatasetDict), or hub:<id>[:<config>]
    # --- corruption (see corruption.py) ---
    corrupt: str = "none"  # which encoder layers: none | bottom:k | top:k | bottom:50% | 1,2,6 (1 = bottom)
    method: str = "reinit"  # reinit (the paper's) | noise | zero | bitflip | shuffle | remove (delete the layers: L - k deep) | magnitude (zero the largest weights)
    init: str = "kaiming_uniform"  # reinit weights: kaiming_uniform | torch_default | normal
    strength: float | None = None  # noise: sigma/std, zero: fraction, bitflip: bit-error rate, magnitude: fraction of the largest weights; None = the default (1.0, 0.5, 1e-4, 0.001)
    scope: str = "all"  # parts of each chosen layer: all | attention | ffn | layernorm
    heads: str = "all"  # attention heads damaged in each chosen layer: all | 0,3 (0-based; only those heads' query/key/value rows and output columns)
    corrupt_embeddings: bool = False  # also corrupt the embedding block (off in the paper)
    corrupt_pooler: bool = False  # also corrupt the pooler, where the model has one (off in the paper)
    # --- fine-tuning ---
    mode: str = "full"  # full | linear_probe (body frozen) | lora (peft adapters + head)
    train_layers: str = "all"  # which parameters heal (mode=full): all | damaged (the corrupted layers and the head) | intact (all but those) | head
    lr_layer_decay: float = 1.0  # layer-wise learning-rate decay: layer l of L trains at lr * decay^(L - l), embeddings at decay^L (1.0 = off)
    pooling: str = "cls"  # cls (pooler output, else [CLS] state) | mean (non-pad tokens; an encoder's [CLS] left out) | last (last non-pad token: decoders, whose runs default to it)
    lr: float = 2e-5  # peak learning rate (paper grid: 1e-5, 2e-5, 5e-5)
    epochs: int = 3  # passes over the training split (paper: 10)
    batch_size: int = 32  # examples per optimizer step
    max_length: int = 128  # tokens kept per example (pairs share it)
    # The paper trains with "Adam" at fixed rates and names no schedule, so the default is a constant rate;
    # linear (decay to 0, run_glue's) reproduces Trainer recipes and every run stored before this field existed.
    lr_schedule: str = "constant"  # constant (the paper's fixed rate) | linear (decay to 0) | cosine (to 0)
    warmup_ratio: float = 0.0  # fraction of steps with linear warm-up to lr, before the schedule
    weight_decay: float = 0.0  # decoupled weight decay; 0 makes AdamW exactly Adam (the paper's)
    lora_r: int = 8  # LoRA rank, mode=lora only
    precision: str = "auto"  # auto: bf16 autocast where measured faster (AVX512-BF16/AMX CPUs; not CUDA) | fp32 | bf16
    seed: int = 0  # seeds the corruption, the head, dropout, batch order and the validation carve-out
    # --- data ---
    split: str = "standard"  # standard (dataset's own splits) | paper (Table 2 sizes, re-split, stratified)
    max_train: int = 0  # cap on training rows after the split policy, stratified (0 = no cap)
    max_test: int = 0  # cap on test rows, stratified (0 = no cap)
    val_fraction: float = 0.1  # share of train carved out (stratified) as validation
    text_column: str = ""  # the dataset's text column; "" = the usual names (text, sentence, review, content, ...), reported
    text_pair_column: str = ""  # second text of pair tasks; "" = found by the text column's usual partner (sentence2, hypothesis, ...); none = single text
    label_column: str = ""  # the dataset's class column; "" = the usual names (label, labels, sentiment, ...), reported
    train_split: str = ""  # split (or file stem) trained on; "" = train
    test_split: str = ""  # split (or file stem) scored; "" = test, else validation (a validation split left over is the validation set)
    select_on: str = "validation"  # split that picks the best epoch; test = the paper's protocol
    metric: str = "f1_weighted"  # selection metric: f1_weighted (paper) | f1_macro | accuracy
    # --- artefacts ---
    feature_samples: int = 2000  # test rows (stratified) whose pooled features are stored for t-SNE/UMAP
    probe_samples: int = 2000  # train rows for the pre-fine-tuning logistic-regression damage probe
    # --- execution and artefacts kept (not part of the run id) ---
    device: str = "auto"  # auto (cuda if present) | cpu | cuda
    compile: str = "off"  # torch.compile the training step: off | default (fused kernels) | reduce-overhead (also CUDA graphs, on CUDA)
    checkpoint_every: int = 1  # resumable checkpoint every N epochs; 0 = none (a run of seconds restarts instead)
    analysis_samples: int = 512  # test rows whose per-layer representations are kept for CKA (0 = none)
    allow_missing_classes: bool = False  # score a test split holding classes training never saw (refused otherwise)

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        # the layer selection, parsed once: everything downstream (corruption, planning, results) reads it
        object.__setattr__(self, "_layers", parse_layers(self.corrupt))
        object.__setattr__(self, "heads", canonical_heads(self.heads))  # "3, 0" and "0,3" are one run

    @property
    def layers(self) -> LayerSelection:
        return self._layers

    def with_layers_of(self, num_layers: int) -> "RunConfig":
        """This run with its layers spelled the one way grids spell them (layers.spelling), for a model of
        `num_layers` layers: bottom:50%, bottom:3 and 1,2,3 of a 6-layer model are one experiment with one run id.
        Raises a one-line error when the selection does not fit the model."""
        indices = self.layers.resolve(num_layers)
        spelled = spelling([i + 1 for i in indices], num_layers)
        return self if spelled == self.layers.canonical() else self.replace(corrupt=spelled)

    @classmethod
    def from_stored(cls, values: dict[str, Any]) -> "RunConfig":
        """A config.json from a run folder: keys added since it was written take the value those runs used."""
        if not isinstance(values, dict):
            raise ConfigError(f"a run config must be a mapping, got {type(values).__name__}")
        return cls.from_dict({**LEGACY_VALUES, **values})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Build and validate from a plain dict (CLI, grid spec, dashboard). Unknown keys are rejected."""
        if not isinstance(values, dict):
            raise ConfigError(f"a run config must be a mapping, got {type(values).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(known)}"
            )
        coerced = {k: _coerce(k, known[k].type, v) for k, v in values.items()}
        cfg = cls(**coerced)
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def choice(name: str, options: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in options:
                raise ConfigError(f"{name}={shown(value)} is not valid; choose one of {', '.join(options)}")

        for name, options in (("method", METHODS), ("init", INITS), ("scope", SCOPES), ("mode", MODES),
                              ("train_layers", TRAIN_LAYERS),
                              ("pooling", POOLINGS), ("split", SPLITS), ("select_on", SELECT_ON),
                              ("metric", METRICS), ("device", DEVICES), ("precision", PRECISIONS),
                              ("lr_schedule", LR_SCHEDULES), ("compile", COMPILE_MODES)):
            choice(name, options)
        if not self.model.strip():
            raise ConfigError("model is empty; give a hub id, a local folder or minilm-l6")
        if not self.dataset.strip():
            raise ConfigError("dataset is empty; give a registry name (e.g. sst2), a data folder or hub:<id>")
        if is_hub(self.dataset):
            hub_parts(self.dataset)  # names a dataset, or one line saying how to
        for name in DATA_OPTION_FIELDS:
            value = getattr(self, name)
            if len(value) > 200 or "\n" in value or value != value.strip():
                raise ConfigError(f"{name}={shown(value)} is no column or split name; give the name as the dataset "
                                  f"writes it (one line, at most 200 characters)")
        if self.strength is not None:
            if not math.isfinite(self.strength) or self.strength < 0:
                raise ConfigError(f"strength={self.strength} must be a finite number >= 0")
            if self.method in ("zero", "bitflip", "magnitude") and self.strength > 1:
                raise ConfigError(f"strength={self.strength} is a fraction/rate for {self.method}; use 0..1")
        _range("lr", self.lr, 1e-8, 1.0)
        _range("epochs", self.epochs, 1, 1000)
        _range("checkpoint_every", self.checkpoint_every, 0, 1000)
        _range("batch_size", self.batch_size, 1, 65536)
        _range("max_length", self.max_length, 8, 8192)
        _range("warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        _range("weight_decay", self.weight_decay, 0.0, 10.0)
        _range("lora_r", self.lora_r, 1, 1024)
        _range("lr_layer_decay", self.lr_layer_decay, 0.01, 1.0)
        if self.heads != "all" and not self.is_clean:
            if self.method not in HEAD_METHODS:
                raise ConfigError(f"heads={self.heads} with method={self.method}: only {', '.join(HEAD_METHODS)} damage "
                                  f"single heads; use heads=all or one of those methods")
            if self.scope not in ("all", "attention"):
                raise ConfigError(f"heads={self.heads} damages attention heads, but scope={self.scope}; use scope=all "
                                  f"or scope=attention")
        if self.train_layers == "damaged" and self.method == "remove" and not self.is_clean:
            raise ConfigError("train_layers=damaged with method=remove: the removed layers are gone; use intact or all")
        if self.mode != "full" and (self.train_layers != "all" or self.lr_layer_decay != 1.0):
            raise ConfigError(f"train_layers and lr_layer_decay choose what full fine-tuning trains; use mode=full "
                              f"(mode={self.mode} decides that itself)")
        _range("seed", self.seed, 0, 2**31 - 1)
        _range("max_train", self.max_train, 0, 10**9)
        _range("max_test", self.max_test, 0, 10**9)
        _range("val_fraction", self.val_fraction, 0.0, 0.5)
        _range("feature_samples", self.feature_samples, 0, 10**6)
        _range("probe_samples", self.probe_samples, 0, 10**6)
        _range("analysis_samples", self.analysis_samples, 0, 10**5)
        if self.compile != "off" and self.mode == "lora":
            raise ConfigError("compile works with mode=full and mode=linear_probe; use compile=off for mode=lora")
        if self.select_on == "validation" and self.val_fraction <= 0:
            raise ConfigError("select_on=validation needs val_fraction > 0; raise it or use select_on=test")

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict[str, Any]:
        d = self.to_dict()
        for k in EXECUTION_FIELDS:
            d.pop(k)
        for k, legacy in LEGACY_VALUES.items():  # runs stored before the field existed keep their ids
            if d[k] == legacy:
                d.pop(k)
        d["corrupt"] = self.layers.canonical()
        if self.is_clean:  # nothing corrupted: the corruption knobs cannot matter
            for k in ("method", "init", "strength", "scope"):
                d[k] = None
            d.pop("heads", None)
        return d

    @property
    def damaged_heads(self) -> list[int] | None:
        """The heads the damage is narrowed to (None: every head, or nothing damaged)."""
        return None if self.is_clean else head_indices(self.heads)

    @property
    def is_clean(self) -> bool:
        return self.layers.canonical() == "none" and not self.corrupt_embeddings and not self.corrupt_pooler

    def canonical_json(self) -> str:
        return json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))

    def experiment_id(self, num_layers: int | None, data_options: dict | None = None) -> str:
        """What the run is, whatever its spelling: its identity with the layers resolved for a model of
        `num_layers` layers (None: as written) and, when given, its data options in their one spelling
        (data.canonical_options: text_column review and a blank one that finds review are one experiment). Two
        stores, or a run stored under an older spelling, match on it."""
        cfg = self
        if data_options:
            cfg = cfg.replace(**{k: v for k, v in data_options.items() if k in DATA_OPTION_FIELDS})
        if num_layers:
            try:
                cfg = cfg.with_layers_of(num_layers)
            except ConfigError:  # a selection that does not fit the model: its own spelling identifies it
                pass
        return hashlib.sha1(cfg.canonical_json().encode()).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        digest = hashlib.sha1(self.canonical_json().encode()).hexdigest()[:10]
        corrupt = self.layers.canonical().replace("%", "pct").replace(":", "")
        tag = "clean" if self.is_clean else f"{corrupt}-{self.method}"
        if not self.is_clean and self.heads != "all":
            tag += "-heads" + self.heads.replace(",", ".")
        parts = [_slug(self.model.rstrip("/").split("/")[-1]), _slug(self.dataset.rstrip("/").split("/")[-1]),
                 _slug(tag)]
        return "_".join(p[:32] for p in parts) + "_" + digest


def _fields_except(*groups: tuple[str, ...]) -> tuple[str, ...]:
    excluded = {name for group in groups for name in group}
    return tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in excluded)


CONFIG_FIELDS = _fields_except()
EXPERIMENT_FIELDS = _fields_except(CORRUPTION_FIELDS, REPLICATE_FIELDS, ARTEFACT_FIELDS, EXECUTION_FIELDS)
# a grid cell: the experiment and the damage (its layers as where they sit: side and level); lr and seed vary in it
CELL_FIELDS = EXPERIMENT_FIELDS + CORRUPTION_FIELDS
# runs that may train fused share everything but their damage and learning rate (the same batches, schedule and
# evaluation; results' cells are unaffected by which runs fused)
FUSE_FIELDS = _fields_except(CORRUPTION_FIELDS, ("lr",))


# Keys added after runs were first stored, with the value every earlier run used: such a run reads as having
# it, and a config with that value leaves the key out of its identity, so the earlier run ids still hold.
LEGACY_VALUES = {"lr_schedule": "linear", "text_column": "", "text_pair_column": "", "label_column": "",
                 "train_split": "", "test_split": "", "train_layers": "all", "lr_layer_decay": 1.0, "heads": "all"}


def canonical_heads(text: Any) -> str:
    """A heads setting in its one spelling: "all", or 0-based head indices ascending without repeats ("3, 0" ->
    "0,3"); anything else is one line saying how to write it."""
    value = str(text).strip().lower() if isinstance(text, (str, int)) and not isinstance(text, bool) else None
    if value in ("all", ""):
        return "all"
    if value is None or not re.fullmatch(r"\d+(\s*,\s*\d+)*", value):
        raise ConfigError(f"heads={shown(text)} is not valid; give all, or 0-based head indices such as 0,3")
    indices = [int(v) for v in value.split(",")]
    if len(set(indices)) != len(indices):
        raise ConfigError(f"heads={shown(text)} names a head twice; give each head once")
    return ",".join(str(i) for i in sorted(indices))


def head_indices(heads: str) -> list[int] | None:
    """The 0-based heads of a canonical heads setting, None for all."""
    return None if heads == "all" else [int(v) for v in heads.split(",")]


def heads_beyond(chosen: list[int], count: int, model: str) -> str:
    """The one line for heads a model lacks ("" where all are within its `count` heads per layer)."""
    if not count or max(chosen) < count:
        return ""
    return (f"heads={','.join(map(str, chosen))} on {model}: it has {count} attention heads per layer "
            f"(0..{count - 1}); choose heads below {count}")


@lru_cache(maxsize=1)
def field_help() -> dict[str, str]:
    """Each RunConfig field's end-of-line comment: the one description of a setting, which the CLI's --help
    shows (so the two cannot disagree)."""
    source = inspect.getsource(RunConfig)
    comments: dict[str, str] = {}
    line_field: dict[int, str] = {}
    for number, line in enumerate(source.splitlines(), 1):
        m = re.match(r"\s{4}(\w+): [^=]+=", line)
        if m:
            line_field[number] = m.group(1)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.start[0] in line_field:
            comments[line_field[tok.start[0]]] = tok.string.lstrip("#").strip()
    return comments


RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def valid_run_id(run_id: str) -> bool:
    return bool(RUN_ID_RE.match(run_id)) and ".." not in run_id


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.").lower() or "x"


def _range(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={value} must be a finite number in [{lo}, {hi}]")
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range; use a value in [{lo}, {hi}]")


def _coerce(name: str, type_name: Any, value: Any) -> Any:
    """Turn CLI/YAML/widget values into the field's type, with a one-line error when impossible."""
    t = str(type_name)
    try:
        if value is None:
            if "None" in t:
                return None
            raise ConfigError(f"{name} must not be empty")
        if t == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if t == "int":
            if isinstance(value, bool):
                raise ValueError
            f = float(value)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if t.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if t == "str":
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        kind = t.replace(" | None", " or null")
        raise ConfigError(f"{name}={shown(value)} is not a valid {kind}") from None
    return value
