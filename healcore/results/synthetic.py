"""Synthetic run stores in healcore's exact on-disk format (the numbers are made up, the files are real).

For tests of everything that reads a store (results, flags, reports, pages) without training, and for
benchmarks of the readers and the dashboard at scale (bench/dashboard_2000.py). Folders are written through the
store's own layout (RunFiles) and writers, so they cannot drift from what runs write.

  build(root, models=..., datasets=..., seeds=..., lrs=...)   # a grid of completed runs
  then fail(), collapse(), flatten(), stray(), run_now(), queue(), damage() add each kind of trouble.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from healcore.core.config import RunConfig
from healcore.store.io import HOST, atomic_write_bytes, atomic_write_json, atomic_write_npz, json_line, now
from healcore.store.runs import RunFiles, RunStore

CLASSES = {"sst2": ["negative", "positive"], "ag_news": ["World", "Sports", "Business", "Sci/Tech"]}


def score(side: str, k: int, L: int, seed: int, lr: float, rng: np.random.Generator) -> float:
    """A plausible F1: clean about 90, falling with corruption, bottom faster than top, lr 5e-5 best, seed noise."""
    slope = 1.3 if side == "bottom" else 0.8
    return float(np.clip(90 - 35 * (k / L) * slope - 3.0 * (lr < 5e-5) + rng.normal(0, 1.0), 5, 99))


def train_rows(cfg: RunConfig) -> int:
    """The training rows a synthetic run reports: its cap less the validation share, else 900."""
    return int(round(cfg.max_train * (1 - cfg.val_fraction))) if cfg.max_train else 900


def write_run(store: RunStore, cfg: RunConfig, f1: float, L: int, classes: list[str], rng: np.random.Generator,
              state: str = "completed", analysis: bool = False, features: bool = False,
              data_options: dict | None = None, validation_f1: float | None = None) -> RunFiles:
    """One run folder as execute() leaves it (status, config, metrics, probe, summary; optionally arrays).
    `data_options`: the data options' one spelling the run recorded (sources.canonical; default: as configured);
    `validation_f1`: its best validation score (default: the test score)."""
    from healcore.core.config import DATA_OPTION_FIELDS

    options = data_options if data_options is not None else {k: getattr(cfg, k) for k in DATA_OPTION_FIELDS}
    files = store.files(cfg.run_id)
    files.dir.mkdir(parents=True, exist_ok=True)
    layers = [i + 1 for i in cfg.layers.resolve(L)]
    K = len(classes)
    atomic_write_json(files.config, cfg.to_dict())
    t0 = now() - 600
    losses = [1.0 * 0.7 ** e for e in range(cfg.epochs)]
    rows = []
    for e in range(1, cfg.epochs + 1):
        f1_e = f1 - 8.0 * (cfg.epochs - e) / max(1, cfg.epochs)
        m = {"accuracy": f1_e, "f1_weighted": f1_e, "f1_macro": f1_e - 1, "n": 100,
             "f1_per_class": [f1_e] * K, "confusion": np.eye(K, dtype=int).tolist()}
        rows.append({"epoch": e, "train_loss": losses[e - 1], "steps": 10, "tokens": 1000, "padded_tokens": 1100,
                     "train_s": 10.0, "lr": cfg.lr, "validation": m, "test": m, "eval_s": 2.0})
    atomic_write_bytes(files.metrics, "".join(json_line(row) for row in rows).encode())
    probe = {"accuracy": f1 / 2, "f1_weighted": f1 / 2, "f1_macro": f1 / 2 - 1, "n": 100,
             "f1_per_class": [f1 / 2] * K}
    atomic_write_json(files.probe, probe)
    best = {"accuracy": f1, "f1_weighted": f1, "f1_macro": f1 - 1}
    val = best if validation_f1 is None else {"accuracy": validation_f1, "f1_weighted": validation_f1,
                                              "f1_macro": validation_f1 - 1}
    atomic_write_json(files.summary, {
        "run_id": cfg.run_id, "config": cfg.to_dict(), "classes": classes,
        "data": {"source": "synthetic", "sizes": {"train": train_rows(cfg), "validation": 100, "test": 100},
                 "notes": [],
                 "options": options},
        "corruption": {"num_layers": L, "layers": layers, "method": cfg.method},
        "device": "cpu", "hardware": "CPU: synthetic (2 threads)", "bf16": False,
        "majority_f1": 100.0 / K / 1.5, "probe": probe, "best_epoch": cfg.epochs,
        "best": {"validation": val, "test": best}, "best_on_test": f1 + 0.3,
        "final": {"epoch": cfg.epochs, "train_loss": losses[-1], "test_f1_weighted": f1}, "losses": losses,
        "healing": f1 / 2, "per_class": {"classes": classes, "probe": [f1 / 2] * K, "best": [f1] * K},
        "weight_movement": {"embeddings": 0.001, **{f"layer {i}": (0.05 if i in layers else 0.01)
                                                    for i in range(1, L + 1)}, "pooler": 0.02, "head": 0.5},
        "timing": {"setup_s": 1.0, "train_s": 10.0 * cfg.epochs, "eval_s": 2.0 * cfg.epochs,
                   "tokens_per_s": 100.0, "tokens_per_epoch": 1000}})
    atomic_write_json(files.status, {"state": state, "pid": 1, "host": "synthetic", "heartbeat": t0 + 600,
                                     "started": t0, "ended": t0 + 12.0 * cfg.epochs, "attempt": 1,
                                     "layers": layers, "num_layers": L, "data_options": options})
    files.log.write_text("".join(f"2026-01-01 00:00:{e:02d} epoch {e}: loss {losses[e - 1]:.4f} (synthetic)\n"
                                 for e in range(1, cfg.epochs + 1)), encoding="utf-8")
    if features:
        n = 40
        labels = np.arange(n) % K
        X = rng.normal(size=(n, 16)) + labels[:, None] * 2.0
        atomic_write_npz(files.features("best"), X=X.astype(np.float16), labels=labels, predictions=labels,
                         index=np.arange(n))
        atomic_write_npz(files.features("before"), X=rng.normal(size=(n, 16)).astype(np.float16), labels=labels,
                         index=np.arange(n))
    if analysis:
        n, H = 48, 16
        base = np.random.default_rng(0).normal(size=(L + 1, n, H))  # the "pretrained" layers, shared by all runs
        healed = base + rng.normal(size=base.shape) * np.array([2.0 if i in layers else 0.3
                                                                for i in range(L + 1)])[:, None, None]
        from healcore.results.analysis import cka_matrix

        atomic_write_npz(files.analysis, layers=healed.astype(np.float16), index=np.arange(n),
                         epoch=np.array(cfg.epochs), corrupted_layers=np.array(layers, dtype=np.int64),
                         cka_pretrained=cka_matrix(healed, base).astype(np.float32), cka_debiased=np.array(1))
    return files


def build(root: str | Path, models: tuple = (("minilm-l6", 6),), datasets: tuple = ("sst2",),
          levels: tuple = (0, 1, 2, 3, 6), lrs: tuple = (2e-5, 5e-5), seeds: tuple = (0, 1, 2), epochs: int = 3,
          analysis: bool = False, features: bool = False, limit: int | None = None,
          base: dict | None = None) -> RunStore:
    """A grid of completed runs: every model x dataset x (clean, bottom/top k, all) x lr x seed."""
    store = RunStore(root)
    store.ensure()
    rng = np.random.default_rng(0)
    made = 0
    for model, L in models:
        for dataset in datasets:
            for k in [k for k in levels if k <= L]:  # a level beyond a model's depth is skipped, as grids do
                for side in (["bottom"] if k in (0, L) else ["bottom", "top"]):
                    for lr in lrs:
                        for seed in seeds:
                            if limit is not None and made >= limit:
                                return store
                            cfg = RunConfig.from_dict({**(base or {}), "model": model, "dataset": dataset,
                                                       "corrupt": "none" if k == 0 else f"{side}:{k}", "lr": lr,
                                                       "seed": seed, "epochs": epochs})
                            write_run(store, cfg, score("all" if k == L else side, k, L, seed, lr, rng), L,
                                      CLASSES.get(dataset, ["a", "b", "c"]), rng, analysis=analysis,
                                      features=features)
                            made += 1
    return store


def _edit_status(files: RunFiles, **fields) -> None:
    status = json.loads(files.status.read_text())
    status.update(fields)
    atomic_write_json(files.status, status)


def fail(store: RunStore, run_id: str, error: str = "training loss became nan at epoch 2 step 25; lower the "
                                                    "learning rate (lr) or check the corruption strength") -> None:
    files = store.files(run_id)
    files.summary.unlink(missing_ok=True)
    _edit_status(files, state="failed", error=error, traceback="Traceback (synthetic)")


def collapse(store: RunStore, run_id: str) -> None:
    """The run predicts one class: its F1 equals the majority-class F1."""
    files = store.files(run_id)
    summary = json.loads(files.summary.read_text())
    summary["best"]["test"]["f1_weighted"] = summary["majority_f1"]
    atomic_write_json(files.summary, summary)


def flatten(store: RunStore, run_id: str) -> None:
    """The loss did not fall."""
    files = store.files(run_id)
    summary = json.loads(files.summary.read_text())
    summary["losses"] = [0.7] * len(summary["losses"])
    atomic_write_json(files.summary, summary)


def stray(store: RunStore, run_id: str, by: float = -40.0) -> None:
    """One seed far from its siblings."""
    files = store.files(run_id)
    summary = json.loads(files.summary.read_text())
    summary["best"]["test"]["f1_weighted"] += by
    atomic_write_json(files.summary, summary)


def run_now(store: RunStore, run_id: str, epoch: int = 1, epochs: int = 3) -> None:
    """The run is in flight: a fresh heartbeat, its progress, no summary yet."""
    files = store.files(run_id)
    files.summary.unlink(missing_ok=True)
    _edit_status(files, state="running", host=HOST + "-elsewhere", heartbeat=now(), started=now() - 60,
                 ended=None, progress={"epoch": epoch, "epochs": epochs, "step": 5, "steps": 10, "loss": 0.5})


def damage(store: RunStore, run_id: str, name: str = "summary") -> None:
    """A file cut short, as a copy that did not finish leaves it."""
    path = getattr(store.files(run_id), name)
    path.write_bytes(path.read_bytes()[: max(1, len(path.read_bytes()) // 3)])


def queue(store: RunStore, name: str, configs: list[RunConfig]) -> None:
    """A grid in progress on another host (its heartbeat fresh) whose runs have no folder yet: they read as queued."""
    atomic_write_json(store.grid_record_path(name), {
        "name": name, "pid": 1, "host": HOST + "-elsewhere", "started": now() - 120, "state": "running",
        "executor": "local", "workers": 1, "run_ids": [c.run_id for c in configs],
        "configs": {c.run_id: c.to_dict() for c in configs}})
    store.grid_heartbeat_path(name).touch()
