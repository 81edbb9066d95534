"""Grid specs and presets -> run configs; the `grid`, `status` and `cancel` commands.

A grid spec is YAML (every preset in presets/ states the command that runs it):

  name: demo
  models: [minilm-l6]
  datasets: [sst2]
  corruption:                 # one block or a list of blocks
    sides: [bottom, top]
    levels: ["0%", "50%", "100%"]   # percent of each model's L (paper), or layer counts [1, 2, 3]
    method: reinit            # optional: reinit | noise | zero | bitflip | shuffle
    strengths: [0.1, 0.5]     # optional, for dose-response of noise/zero/bitflip
  lrs: [2e-5, 5e-5]
  seeds: [0, 1, 2]
  pooling: [cls]
  modes: [full]
  base: {epochs: 3, max_train: 2000}   # any RunConfig key, for every run

Levels are resolved per model from its layer count: a percentage that is no whole number of layers for a
model is skipped for it (DistilBERT: 50% and 100% only, as in the paper), and 100% is one setting ("all"),
not two.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import ConfigError
from .store import HOST, RunStore, atomic_write_json, effective_state, now, pid_alive, read_json

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
SPEC_KEYS = {"name", "description", "command", "models", "datasets", "corruption", "lrs", "seeds", "pooling",
             "modes", "base"}
CORRUPTION_KEYS = {"sides", "levels", "method", "strengths", "scope", "init"}


@dataclass
class Grid:
    name: str
    configs: list[RunConfig]
    notes: list[str] = field(default_factory=list)
    description: str = ""


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_spec(spec: str | Path | dict) -> dict:
    """A preset name, a YAML file path, or an already-parsed dict."""
    import yaml

    if isinstance(spec, dict):
        return spec
    text_path = Path(spec)
    if not text_path.is_file():
        candidate = PRESETS_DIR / f"{spec}.yaml"
        if not candidate.is_file():
            raise ConfigError(f"grid {spec!r} is neither a file nor a preset; presets: {', '.join(preset_names())}")
        text_path = candidate
    try:
        data = yaml.safe_load(text_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read grid file {text_path} ({err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"grid file {text_path} is not valid YAML ({str(err).splitlines()[0]})") from None
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
    return out


def _level_layers(level: Any, num_layers: int) -> int | None:
    """A level ("50%" or a count) -> number of layers for this model; None if it is no whole number."""
    text = str(level).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text)
    if m:
        pct = float(m.group(1))
        if not 0 <= pct <= 100:
            raise ConfigError(f"corruption level {text} must be within 0%..100%")
        k = pct * num_layers / 100
        return int(k) if k.is_integer() else None
    if re.fullmatch(r"\d+", text):
        k = int(text)
        if k > num_layers:
            return None
        return k
    raise ConfigError(f"corruption level {level!r} is neither a percentage (50%) nor a layer count (3)")


def expand(spec: str | Path | dict, overrides: dict | None = None) -> Grid:
    """Every RunConfig of a grid spec, in a stable order, validated."""
    from .models import num_layers

    data = load_spec(spec)
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"unknown grid key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(SPEC_KEYS))}")
    name = str(data["name"])
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}", name):
        raise ConfigError(f"grid name {name!r} may use letters, digits, '.', '_' and '-' only")
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
    configs: dict[str, RunConfig] = {}
    notes: list[str] = []
    for model in _as_list(data.get("models", [base.get("model", "minilm-l6")]), "models"):
        L = num_layers(str(model))
        settings: list[dict] = []
        for b in blocks:
            sides = _as_list(b.get("sides", ["bottom", "top"]), "sides")
            for side in sides:
                if side not in ("bottom", "top"):
                    raise ConfigError(f"corruption side {side!r} must be bottom or top")
            strengths = b.get("strengths", [None])
            for level in _as_list(b.get("levels", ["0%"]), "levels"):
                k = _level_layers(level, L)
                if k is None:
                    notes.append(f"{model}: level {level} skipped (not a whole number of its {L} layers)")
                    continue
                for side in (["bottom"] if k in (0, L) else sides):  # 0% and 100% are one setting each
                    for strength in _as_list(strengths, "strengths"):
                        s = {"corrupt": "none" if k == 0 else f"{side}:{k}"}
                        if k:
                            s.update({key: b[key] for key in ("method", "scope", "init") if key in b})
                            if strength is not None:
                                s["strength"] = strength
                        settings.append(s)
        for dataset, setting, lr, seed, pooling, mode in itertools.product(
                _as_list(data.get("datasets", [base.get("dataset", "sst2")]), "datasets"), settings,
                _as_list(data.get("lrs", [base.get("lr", 2e-5)]), "lrs"),
                _as_list(data.get("seeds", [base.get("seed", 0)]), "seeds"),
                _as_list(data.get("pooling", [base.get("pooling", "cls")]), "pooling"),
                _as_list(data.get("modes", [base.get("mode", "full")]), "modes")):
            cfg = RunConfig.from_dict({**base, "model": model, "dataset": dataset, **setting, "lr": lr, "seed": seed,
                                       "pooling": pooling, "mode": mode})
            configs.setdefault(cfg.run_id, cfg)
    if not configs:
        raise ConfigError(f"grid {name} expands to no runs ({'; '.join(sorted(set(notes))) or 'no levels'}); "
                          f"choose levels that fit the models' layer counts")
    return Grid(name, list(configs.values()), sorted(set(notes)), str(data.get("description", "")))


def preflight(grid: Grid) -> None:
    """Check every distinct model and dataset of a grid once (architecture, layers, data), before any run."""
    from .corruption import parse_layers
    from .data import load_splits
    from .models import check_architecture

    seen_models: dict[str, int] = {}
    seen_data: set[tuple] = set()
    for cfg in grid.configs:
        if cfg.model not in seen_models:
            seen_models[cfg.model] = check_architecture(cfg.model) if not _known_offline(cfg.model) else 0
        if seen_models[cfg.model]:
            parse_layers(cfg.corrupt).resolve(seen_models[cfg.model])
        key = (cfg.dataset, cfg.split, cfg.max_train, cfg.max_test, cfg.val_fraction)
        if key not in seen_data:
            seen_data.add(key)
            load_splits(cfg)


def _known_offline(model: str) -> bool:
    """Hub models in KNOWN_LAYERS are checked when their run loads them (no hub round trip offline)."""
    from .models import KNOWN_LAYERS, resolve_model_path

    return model in KNOWN_LAYERS and resolve_model_path(model) == model


# ------------------------------------------------------------------------------------------ planning
def plan(grid: Grid, store: RunStore, retry_failed: bool = False) -> dict[str, list[RunConfig]]:
    """Split a grid's runs by what the store already has."""
    out: dict[str, list[RunConfig]] = {"completed": [], "failed": [], "running": [], "todo": []}
    for cfg in grid.configs:
        st = read_json(store.root / cfg.run_id / "status.json", {}) if store.root.is_dir() else {}
        state = effective_state(st) if st else "queued"
        if state == "completed":
            out["completed"].append(cfg)
        elif state == "failed" and not retry_failed:
            out["failed"].append(cfg)
        elif state == "running":
            out["running"].append(cfg)
        else:
            out["todo"].append(cfg)
    return out


def estimate_seconds(configs: list[RunConfig], store: RunStore) -> tuple[float | None, str]:
    """Cost of runs from measured throughput (useful tokens/s) of finished runs of the same model.

    Each run is priced from the closest finished runs: same hardware as this machine, else the same device kind
    (cpu/cuda), else any; within those, the same fine-tuning mode (a frozen body trains several times faster
    per token), else the same model. The note says which were used."""
    from .results import load_runs

    runs = load_runs(store.root)
    done = runs[runs["state"] == "completed"] if len(runs) else runs
    if not len(done):
        return None, "no finished runs in the store yet to measure throughput from"
    tiers = _runs_like_this_machine(done)
    tokens_cache: dict[tuple, float] = {}
    prices: dict[tuple, tuple[float, str] | None] = {}  # the same for every run of a (model, mode)
    total, unknown, used = 0.0, set(), {}
    for cfg in configs:
        if (cfg.model, cfg.mode) not in prices:
            prices[(cfg.model, cfg.mode)] = _wall_seconds_per_token(cfg.model, cfg.mode, done, tiers)
        priced = prices[(cfg.model, cfg.mode)]
        if priced is None:
            unknown.add(cfg.model)
            continue
        seconds_per_token, label = priced
        used[label] = used.get(label, 0) + 1
        key = (cfg.dataset, cfg.split, cfg.max_train, cfg.max_length, cfg.val_fraction)
        if key not in tokens_cache:
            tokens_cache[key] = _tokens_per_epoch(cfg, done)
        total += tokens_cache[key] * cfg.epochs * seconds_per_token
    if unknown and total == 0:
        return None, f"no finished run of {', '.join(sorted(unknown))} in the store to measure throughput from"
    note = f"from measured throughput of {len(done)} finished run(s); priced " + "; ".join(
        f"{n} run(s) {label}" for label, n in used.items())
    if unknown:
        note += f"; not counted (no finished run of): {', '.join(sorted(unknown))}"
    return total, note


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
    if not overhead == overhead or overhead < 1:  # NaN, or resumed runs with odd clocks
        overhead = 1 + float((done["eval_s"] / done["train_s"].clip(lower=1e-9)).median())
    return overhead


def _runs_like_this_machine(done) -> list[tuple[str, object, bool]]:
    """Finished runs in order of how well their speed predicts this machine's: same hardware, same kind, any.
    Each tier: (label for the note, its runs, whether they ran on this very hardware)."""
    from .models import hardware_name, pick_device

    here = hardware_name(pick_device("auto"))
    kind = "cpu" if here.startswith("CPU") else "cuda"
    hardware = done["hardware"].fillna("").astype(str) if "hardware" in done else None
    tiers = []
    if hardware is not None:
        tiers.append((f"from runs on this hardware ({here})", done[hardware == here], True))
    tiers.append((f"from runs on other {kind.upper()} hardware (expect a different speed here)",
                  done[done["device"].astype(str).str.startswith(kind)], False))
    tiers.append(("from runs on other kinds of hardware (expect a very different speed here)", done, False))
    return [tier for tier in tiers if len(tier[1])]


def _tokens_per_epoch(cfg: RunConfig, done) -> float:
    same = done[(done["dataset"] == cfg.dataset) & (done["max_train"] == cfg.max_train) &
                (done["max_length"] == cfg.max_length) & (done["split"] == cfg.split)]
    if len(same):
        return float(same["tokens_per_epoch"].median())
    from .data import load_splits

    train = load_splits(cfg).train  # characters / 4 is a fair token count for English WordPiece
    chars = train["text"].str.len() + (train["text_pair"].str.len() if "text_pair" in train else 0)
    return float((chars / 4 + 3).clip(upper=cfg.max_length).sum())


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


# ------------------------------------------------------------------------------------------ commands
def _parse_sets(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r} must look like KEY=VALUE, e.g. --set epochs=1")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def grid_command(args) -> int:
    from .executors import run_local, run_ray

    store = RunStore(args.store)
    grid = expand(args.spec, _parse_sets(args.set))
    parts = plan(grid, store, args.retry_failed)
    if parts["todo"]:
        preflight(Grid(grid.name, parts["todo"]))
    cost, how = estimate_seconds(parts["todo"], store)
    workers = max(1, int(args.workers))
    print(f"grid {grid.name}: {len(grid.configs)} runs; {len(parts['completed'])} finished, "
          f"{len(parts['failed'])} failed (kept; --retry-failed reruns them), {len(parts['running'])} running "
          f"elsewhere, {len(parts['todo'])} to run")
    for note in grid.notes:
        print(f"  note: {note}")
    print(f"estimated cost of the runs to do: {_fmt_duration(cost)} of run time "
          f"({how}); wall time with {workers} worker(s) about "
          f"{_fmt_duration(cost / workers if cost is not None else None)}")
    if args.dry_run:
        return 0
    if not parts["todo"]:
        print("nothing to do")
        return 0
    store.ensure()
    record = {"name": grid.name, "pid": os.getpid(), "host": HOST, "started": now(), "state": "running",
              "executor": args.executor, "workers": workers, "runs_per_gpu": args.runs_per_gpu,
              "run_ids": [c.run_id for c in grid.configs]}
    record_path = store.root / ".grids" / f"{grid.name}.json"
    atomic_write_json(record_path, record)
    try:
        if args.executor == "ray":
            result = run_ray(parts["todo"], store, address=args.address, runs_per_gpu=args.runs_per_gpu)
        else:
            result = run_local(parts["todo"], store, workers=workers, runs_per_gpu=args.runs_per_gpu)
    except BaseException:
        atomic_write_json(record_path, {**record, "state": "failed", "ended": now()})
        raise
    record.update(result=result, ended=now(), state="interrupted" if result["interrupted"] else "finished")
    atomic_write_json(record_path, record)
    print(f"grid {grid.name}: {result['completed']} completed, {result['failed']} failed, "
          f"{result['busy']} skipped (running elsewhere), {result['interrupted']} interrupted")
    for run_id, error in result.get("errors", {}).items():
        print(f"  failed {run_id}: {error}")
    return 1 if result["interrupted"] else 0


def status_command(args) -> int:
    from .results import load_runs

    store = RunStore(args.store)
    runs = load_runs(store.root)
    counts = runs["state"].value_counts().to_dict() if len(runs) else {}
    grids = [read_json(p, {}) for p in sorted((store.root / ".grids").glob("*.json"))] if store.root.is_dir() else []
    if args.json:
        print(json.dumps({"store": str(store.root), "runs": len(runs), "states": counts,
                          "grids": [{k: g.get(k) for k in ("name", "state", "pid", "host")} for g in grids]}))
        return 0
    print(f"store {store.root}: {len(runs)} runs" + "".join(f", {n} {s}" for s, n in sorted(counts.items())))
    for g in grids:
        ids = set(g.get("run_ids", []))
        sub = runs[runs["run_id"].isin(ids)] if len(runs) else runs
        done = int((sub["state"] == "completed").sum()) if len(sub) else 0
        alive = g.get("state") == "running" and g.get("host") == HOST and pid_alive(int(g.get("pid", -1)))
        print(f"  grid {g.get('name')}: {done}/{len(ids)} completed; "
              f"{'running (pid ' + str(g.get('pid')) + ')' if alive else 'not running'}")
    if len(runs):
        for _, r in runs[runs["state"].isin(["running", "failed", "interrupted"])].iterrows():
            extra = f": {r['error']}" if r["state"] == "failed" and r.get("error") else ""
            print(f"  {r['state']:11s} {r['run_id']}{extra}")
    return 0


def cancel_command(args) -> int:
    store = RunStore(args.store)
    targets: list[int] = []
    if args.grid:
        g = read_json(store.root / ".grids" / f"{args.grid}.json")
        if not g:
            raise ConfigError(f"no grid named {args.grid!r} in {store.root}; see healcore status")
        if g.get("host") == HOST and pid_alive(int(g["pid"])):
            targets.append(int(g["pid"]))
        ids = g.get("run_ids", [])
    else:
        for run_id in args.run_ids:
            store.path(run_id)  # invalid ids (.., slashes) are refused with a one-line error
        ids = args.run_ids or store.run_ids()
    stopped = 0
    for run_id in ids:
        st = store.status(run_id) if (store.root / run_id).is_dir() else {}
        if st.get("effective_state") == "running" and st.get("host") == HOST:
            targets.append(int(st["pid"]))
    for pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
            stopped += 1
        except ProcessLookupError:
            pass
    print(f"sent a stop request to {stopped} process(es); stopped runs become 'interrupted' and resume on the "
          f"next run or grid command")
    return 0


# ------------------------------------------------------------------------------------------ background
def launch(spec: dict, store_root: str | Path, workers: int = 1, retry_failed: bool = False,
           runs_per_gpu: int = 1) -> dict:
    """Start `healcore grid` on a spec as a detached process (the dashboard's Start button).

    The spec is validated first (a bad one raises ConfigError and starts nothing), written under
    <store>/.grids/specs/, and the process gets its own session so a restart of the caller never stops it.
    """
    import subprocess

    import yaml

    grid = expand(spec)  # validation: unknown keys, bad levels, bad base config
    preflight(grid)  # models and data load: a bad grid starts nothing
    store = RunStore(store_root)
    store.ensure()
    spec_dir = store.root / ".grids" / "specs"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec_path = spec_dir / f"{grid.name}.yaml"
    atomic_write_json(spec_path.with_suffix(".json"), spec)
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    log_path = store.root / ".grids" / f"{grid.name}.log"
    cmd = [sys.executable, "-m", "healcore", "--store", str(store.root), "grid", str(spec_path),
           "--workers", str(max(1, int(workers))), "--runs-per-gpu", str(max(1, int(runs_per_gpu)))]
    if retry_failed:
        cmd.append("--retry-failed")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(store.root.parent))
    return {"name": grid.name, "pid": proc.pid, "runs": len(grid.configs), "log": str(log_path)}


def grid_records(store_root: str | Path) -> list[dict]:
    """Every grid started on this store, newest first, with whether its process is alive."""
    root = Path(store_root)
    records = []
    for p in (root / ".grids").glob("*.json") if (root / ".grids").is_dir() else []:
        rec = read_json(p, {}) or {}
        if not rec.get("name"):
            continue
        rec["alive"] = rec.get("state") == "running" and rec.get("host") == HOST and pid_alive(int(rec.get("pid", -1)))
        records.append(rec)
    return sorted(records, key=lambda r: r.get("started", 0), reverse=True)
