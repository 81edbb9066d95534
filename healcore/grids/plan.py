"""A grid against a store: what is done, what is left, whether it can run, and what it will cost.

`make_plan` is what `healcore grid` prints and the Launch page shows (the same data, planned once per view). Its
checks are torch-free, so the dashboard can call them; the grid process adds the full architecture check
(`preflight(deep=True)`) before its first run.

Cost: each run is priced from the measured throughput of finished runs in the store, the closest first (same
hardware, same kind of device, any); with none, from a prior: the run's FLOPs (6 x non-embedding parameters per
training token, 2 x per evaluated token) at a rate per hardware class, labelled as a prior.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from healcore.core.config import DATA_OPTION_FIELDS, RunConfig
from healcore.core.data import DATA_FIELDS, canonical_options, load_splits
from healcore.core.errors import HealcoreError, ModelError
from healcore.core.layers import chosen_layers
from healcore.core.model_facts import (check_model_offline, check_model_settings, check_weights, known_hub_model,
                                       non_embedding_params, num_layers, this_machine)
from healcore.grids.execution import Execution
from healcore.grids.progress import fmt_duration
from healcore.grids.spec import Grid, expand, load_spec
from healcore.results.runs_table import load_runs
from healcore.store.io import read_json
from healcore.store.runs import RunStore

# Priors for a store with no finished run (replaced by measurements as soon as runs finish):
CPU_FLOPS_PER_THREAD = 20e9  # fp32 training, measured 24 GFLOP/s per thread on a 2-core Xeon (minilm-l6, SST-2)
GPU_FLOPS = 10e12  # batch 32 is launch-bound: BERT-base trained at 11.5 TFLOP/s on an H100 (docs/PERFORMANCE.md)
PRIOR_SETUP_S = {"cpu": 15.0, "cuda": 10.0}  # loading, the damage probe, process start-up per run


@dataclass
class GridPlan:
    grid: Grid
    parts: dict[str, list[RunConfig]]  # completed | failed | running | todo
    cost_s: float | None  # run time of the runs to do (one at a time)
    cost_note: str  # where the price came from
    prior: bool  # priced from the FLOP prior, not from measured runs
    execution: Execution = field(default_factory=Execution)
    slots: int = 1  # runs at once (Execution.slots), what the wall time divides by
    problem: HealcoreError | None = None  # why the runs to do cannot run (a model, its weights, the data), if so
    estimates: dict[str, float] = field(default_factory=dict)  # run id -> its estimated run time (the runs to do)

    @property
    def todo(self) -> list[RunConfig]:
        return self.parts["todo"]

    def counts(self) -> dict[str, int]:
        return {"runs": len(self.grid.configs), **{k: len(v) for k, v in self.parts.items()}}

    @property
    def wall_s(self) -> float | None:
        return self.cost_s / self.slots if self.cost_s is not None else None

    def lines(self) -> list[str]:
        """The plan as the CLI prints it."""
        c = self.counts()
        return ([f"grid {self.grid.name}: {c['runs']} runs; {c['completed']} finished, {c['failed']} failed (kept; "
                 f"--retry-failed reruns them), {c['running']} running elsewhere, {c['todo']} to run"]
                + [f"  note: {n}" for n in self.grid.notes]
                + ([] if self.problem else
                   [f"estimated cost of the runs to do: {fmt_duration(self.cost_s, 'unknown')} of run time ({self.cost_note}); "
                    f"wall time with {self.slots} run(s) at a time about {fmt_duration(self.wall_s, 'unknown')}"]))


def make_plan(spec, store: RunStore, overrides: dict | None = None, retry_failed: bool = False,
              execution: Execution | None = None, deep: bool = False) -> GridPlan:
    """Expand (a bad spec raises a HealcoreError), split by what the store has, check the runs to do, price them.
    A problem with a model, its weights or the data is returned in `problem`, with the plan's counts beside it,
    for the CLI to raise and the Launch page to show."""
    execution = execution or Execution()
    reads = DataReads()  # each data key read once: preflight checks it, the estimate counts its tokens
    grid = expand(spec, overrides)
    parts = plan(grid, store, retry_failed)
    problem = None
    if parts["todo"]:
        try:
            preflight(Grid(grid.name, parts["todo"]), deep=deep, reads=reads)
        except HealcoreError as err:
            problem = err
    estimates, note, prior = run_estimates(parts["todo"], store, reads) if problem is None else ({}, "", False)
    cost = sum(estimates[c.run_id] for c in parts["todo"] if c.run_id in estimates) \
        if estimates or not parts["todo"] else None
    return GridPlan(grid, parts, cost, note, prior, execution, execution.slots(), problem, estimates)


def launched_plan(name: str, store: RunStore, execution: Execution, retry_failed: bool = False) -> GridPlan | None:
    """The plan a Start launched, as its grid process takes it over: the configs, notes and per-run estimates in
    the grid's record (.grids/<name>.json, state starting), not expanded and priced a second time. The runs to do
    are split against the store again (runs may have finished meanwhile) and checked with torch (deep preflight).
    None where no Start left such a record."""
    record = read_json(store.grid_record_path(name), {}) or {}
    if record.get("state") != "starting" or not isinstance(record.get("configs"), dict):
        return None
    grid = Grid(name, [RunConfig.from_stored(c) for c in record["configs"].values()], list(record.get("notes") or []),
                spec=load_spec(store.grid_spec_path(name)))
    parts = plan(grid, store, retry_failed)
    problem = None
    if parts["todo"]:
        try:
            preflight(Grid(name, parts["todo"]), deep=True)
        except HealcoreError as err:
            problem = err
    shown = record.get("estimates") if isinstance(record.get("estimates"), dict) else {}
    estimates = {c.run_id: float(shown[c.run_id]) for c in parts["todo"] if c.run_id in shown}
    cost = sum(estimates.values()) if estimates or not parts["todo"] else None
    return GridPlan(grid, parts, cost, str(record.get("estimate_note") or ""), bool(record.get("prior")), execution,
                    execution.slots(), problem, estimates)


# ------------------------------------------------------------------------------------------ checks
class DataReads:
    """A plan's reads of the data: each data key's splits are loaded once, however many steps ask for them."""

    def __init__(self) -> None:
        self._splits: dict[tuple, object] = {}

    def splits(self, cfg: RunConfig):
        key = tuple(getattr(cfg, name) for name in DATA_FIELDS)
        if key not in self._splits:
            self._splits[key] = load_splits(cfg)
        return self._splits[key]


def preflight(grid: Grid, deep: bool = False, reads: DataReads | None = None) -> None:
    """Check every distinct model and dataset of a grid once (layers, weights, data), before any run.
    Torch-free unless deep: then each model is also built on the meta device to prove its layers are found, and
    its tokenizer loaded."""
    layers: dict[str, int] = {}
    reads = reads or DataReads()
    for cfg in grid.configs:
        if cfg.model not in layers:
            if not known_hub_model(cfg.model):
                check_model_offline(cfg.model)
                check_weights(cfg.model)
            if deep and not known_hub_model(cfg.model):
                from healcore.engine.models import check_architecture, load_tokenizer  # torch: the grid process only

                layers[cfg.model] = check_architecture(cfg.model)
                load_tokenizer(cfg.model)  # as each run will (damaged tokenizer files: one line, no run folder)
            else:
                layers[cfg.model] = num_layers(cfg.model)
        chosen_layers(cfg.layers, cfg.method, layers[cfg.model])
        check_model_settings(cfg.model, cfg.pooling, cfg.method, cfg.damaged_heads)
        reads.splits(cfg)


# ------------------------------------------------------------------------------------------ planning
def as_stored(cfg: RunConfig, store: RunStore) -> RunConfig:
    """The run a config names in this store: its layers spelled the one way (bottom:50% of a 6-layer model is
    bottom:3), and, where a run of the same experiment is stored under another spelling, that run's config (so it
    is reused or resumed, never run twice)."""
    L = num_layers_or_none(cfg.model)
    canonical = cfg.with_layers_of(L) if L else cfg
    if store.has_run(canonical.run_id) or not store.run_ids():
        return canonical
    return stored_twin(canonical, L, store.experiments()) or canonical


def stored_twin(cfg: RunConfig, L: int | None, stored: dict[str, RunConfig]) -> RunConfig | None:
    """The stored run of the same experiment under another spelling: of its layers, else of its data options
    (whose one spelling is read from the dataset only when the config names a column or split)."""
    twin = stored.get(cfg.experiment_id(L))
    if twin is None and any(getattr(cfg, k) for k in DATA_OPTION_FIELDS):
        options = canonical_options(cfg)
        twin = stored.get(cfg.experiment_id(L, options)) if options is not None else None
    return twin


def plan(grid: Grid, store: RunStore, retry_failed: bool = False) -> dict[str, list[RunConfig]]:
    """Split a grid's runs by what the store already has. A completed run with a damaged file (its summary, its
    features, its layer analysis) is run again, which writes them again.
    A run stored under another spelling of the same layers (bottom:50% for bottom:3) stands in for the grid's: the
    grid reuses or resumes that folder (its configs are replaced in `grid`)."""
    out: dict[str, list[RunConfig]] = {"completed": [], "failed": [], "running": [], "todo": []}
    missing = [c for c in grid.configs if not store.has_run(c.run_id)]
    if missing and store.run_ids():
        stored = store.experiments()
        layers = {c.model: num_layers_or_none(c.model) for c in missing}
        twins = {c.run_id: stored_twin(c, layers[c.model], stored) for c in missing}
        grid.configs = [twins.get(c.run_id) or c for c in grid.configs]
    for cfg in grid.configs:
        stored = store.read(cfg.run_id) if store.has_run(cfg.run_id) else None
        state = stored.state if stored else "queued"
        if state == "completed" and stored.summary is not None and not stored.damaged:
            out["completed"].append(cfg)
        elif state == "failed" and not retry_failed:
            out["failed"].append(cfg)
        elif state == "running":
            out["running"].append(cfg)
        else:
            out["todo"].append(cfg)
    return out


# ------------------------------------------------------------------------------------------ cost
def estimate_seconds(configs: list[RunConfig], store: RunStore) -> tuple[float | None, str, bool]:
    """(run time in seconds, where the price came from, whether it is the FLOP prior) of `configs`: the sum of
    run_estimates, None when none of them could be priced."""
    estimates, note, prior = run_estimates(configs, store)
    total = sum(estimates[c.run_id] for c in configs if c.run_id in estimates)
    return (total if estimates or not configs else None), note, prior


def run_estimates(configs: list[RunConfig], store: RunStore,
                  reads: DataReads | None = None) -> tuple[dict[str, float], str, bool]:
    """({run id: estimated run time in seconds}, where the prices came from, whether they are the FLOP prior).
    The one model of a grid's time: the estimate before Start, the ETA while it runs (grids/progress.py calibrates
    these by the runs that finish) and the check of the estimate written into the grid's record at the end.

    Each run is priced from the closest finished runs: same hardware as this machine, else the same device kind
    (cpu/cuda), else any; within those, the same fine-tuning mode (a frozen body trains several times faster
    per token), else the same model. Runs of models nothing was measured for take the prior."""
    if not configs:
        return {}, "nothing to run", False
    runs = load_runs(store.root, include_queued=False)
    done = runs[(runs["state"] == "completed") & runs["tokens_per_s"].notna()] if len(runs) else runs
    tiers = _runs_like_this_machine(done) if len(done) else []
    tokens: dict[tuple, float] = {}
    prices: dict[tuple, tuple[float, str] | None] = {}  # the same for every run of a (model, mode)
    estimates: dict[str, float] = {}
    used, prior_runs = {}, 0
    for cfg in configs:
        if (cfg.model, cfg.mode) not in prices:
            prices[(cfg.model, cfg.mode)] = _wall_seconds_per_token(cfg.model, cfg.mode, done, tiers) if tiers else None
        priced = prices[(cfg.model, cfg.mode)]
        key = (*(getattr(cfg, name) for name in DATA_FIELDS), cfg.max_length)  # the rows read, and their width
        if key not in tokens:
            tokens[key] = _tokens_per_epoch(cfg, done, reads or DataReads())
        if priced is None:
            seconds = prior_seconds(cfg, tokens[key])
            if seconds is None:
                continue
            estimates[cfg.run_id] = seconds
            prior_runs += 1
            continue
        seconds_per_token, label = priced
        used[label] = used.get(label, 0) + 1
        estimates[cfg.run_id] = tokens[key] * cfg.epochs * seconds_per_token
    if not used and not prior_runs:
        return {}, "no finished run to measure from, and the models' sizes are unknown offline", False
    notes = [f"{n} run(s) {label}" for label, n in used.items()]
    if prior_runs:
        kind, name = this_machine()
        notes.append(f"{prior_runs} run(s) from a prior (model FLOPs at a typical rate for {name}; expect within "
                     f"2x), replaced by measurements as runs finish")
    head = f"from measured throughput of {len(done)} finished run(s); priced " if used else "priced "
    return estimates, head + "; ".join(notes), bool(prior_runs) and not used


def prior_seconds(cfg: RunConfig, train_tokens: float) -> float | None:
    """A run's time before anything was measured: its FLOPs at this hardware class's typical rate."""
    import os

    try:
        params = non_embedding_params(cfg.model)
    except (ModelError, OSError):
        return None
    kind, _ = this_machine()
    if cfg.device == "cpu":
        kind = "cpu"
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)
    rate = GPU_FLOPS if kind == "cuda" else CPU_FLOPS_PER_THREAD * threads
    train = (2 if cfg.mode == "linear_probe" else 6) * params * train_tokens * cfg.epochs
    # each epoch evaluates validation (val_fraction of train) and a test split about as large as train
    evaluate = 2 * params * train_tokens * (cfg.val_fraction / max(1e-9, 1 - cfg.val_fraction) + 0.6) * cfg.epochs
    return PRIOR_SETUP_S[kind] + (train + evaluate) / rate


def _wall_seconds_per_token(model: str, mode: str, done, tiers) -> tuple[float, str] | None:
    """Whole-run wall seconds per training token for (model, mode), and where the figure came from.

    Same mode on the closest hardware tier wins. When this machine only has runs of another mode, their figure
    is scaled by the mode ratio measured on hardware that has both (a linear probe on this CPU plus full and
    probe runs from a GPU give a full-fine-tuning price for this CPU); else the closest runs of the model."""
    def rate(runs_, mode_=None):
        sel = runs_[(runs_["model"] == model) & ((runs_["mode"] == mode_) if mode_ else True)]
        return _overhead(sel) / float(sel["tokens_per_s"].median()) if len(sel) else None

    for label, runs_, this_hardware in tiers:
        exact = rate(runs_, mode)
        if exact is not None:
            return exact, label
        if this_hardware and rate(runs_) is not None:
            # this machine has only other modes of the model: scale by a ratio measured on one other machine
            elsewhere = done.drop(index=runs_.index)
            for other in sorted(set(runs_[runs_["model"] == model]["mode"])):
                for hardware, group in elsewhere.groupby(elsewhere["hardware"].fillna("unrecorded").astype(str)):
                    mine, theirs = rate(group, mode), rate(group, other)
                    if mine is not None and theirs is not None:
                        return rate(runs_, other) * mine / theirs, (f"{label}, {other} runs scaled by the "
                                                                    f"{mode}/{other} ratio measured on {hardware}")
    for label, runs_, _ in tiers:
        any_mode = rate(runs_)
        if any_mode is not None:
            return any_mode, f"{label}, of another fine-tuning mode"
    return None


def _overhead(done) -> float:
    """Whole-run wall time per second of training: evaluation, the probe, model loading, process start."""
    wall = (done["ended"].astype(float) - done["started"].astype(float)) if "ended" in done else None
    overhead = float((wall / done["train_s"].clip(lower=1e-9)).median()) if wall is not None else float("nan")
    if pd.isna(overhead) or overhead < 1:  # resumed runs with odd clocks
        overhead = 1 + float((done["eval_s"] / done["train_s"].clip(lower=1e-9)).median())
    return overhead


def _hardware_family(name: str) -> str:
    """A recorded hardware name without the thread count a run had ("CPU: X (2 threads)" -> "CPU: X")."""
    return name.split(" (")[0] if name.startswith("CPU:") else name


def _runs_like_this_machine(done) -> list[tuple[str, object, bool]]:
    """Finished runs in order of how well their speed predicts this machine's: same hardware, same kind, any.
    Each tier: (label for the note, its runs, whether they ran on this very hardware)."""
    kind, here = this_machine()
    hardware = done["hardware"].fillna("").astype(str).map(_hardware_family) if "hardware" in done else None
    tiers = []
    if hardware is not None:
        tiers.append((f"from runs on this hardware ({here})", done[hardware == here], True))
    tiers.append((f"from runs on other {kind.upper()} hardware (expect a different speed here)",
                  done[done["device"].astype(str).str.startswith(kind)], False))
    tiers.append(("from runs on other kinds of hardware (expect a very different speed here)", done, False))
    return [tier for tier in tiers if len(tier[1])]


def _tokens_per_epoch(cfg: RunConfig, done, reads: DataReads) -> float:
    if len(done):
        same = done[(done["dataset_path"] == cfg.dataset) & (done["max_train"] == cfg.max_train) &
                    (done["max_length"] == cfg.max_length) & (done["split"] == cfg.split)]
        for name in DATA_OPTION_FIELDS:  # another column is another text (the table holds the one spelling)
            same = same[same[name].astype(str) == (getattr(cfg, name) or "")] if name in same else same
        if len(same):
            return float(same["tokens_per_epoch"].median())
    train = reads.splits(cfg).train  # characters / 4 is a fair token count for English WordPiece
    chars = train["text"].str.len() + (train["text_pair"].str.len() if "text_pair" in train else 0)
    return float((chars / 4 + 3).clip(upper=cfg.max_length).sum())


def num_layers_or_none(model: str) -> int | None:
    try:
        return num_layers(model)
    except HealcoreError:
        return None
