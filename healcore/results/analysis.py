"""Where healing happens: representation similarity (linear CKA), weight movement and per-class recovery.

Torch-free: reads what runs stored (analysis.npz, summary.json) and pairs each corrupted run with the clean run
of its line (same model, data and training settings, same learning rate and seed where one exists).

- linear_cka(X, Y) (Kornblith et al., 2019): the similarity of two sets of representations of the same n
  examples, invariant to orthogonal transforms and isotropic scaling, 1 for identical ones, with the debiased HSIC
  estimator (Song et al., 2012; `debiased=True` in Kornblith et al.'s code): the plain (biased) estimator gives
  independent random representations 0.43 at 384 dimensions and 0.60 at 768 on 512 rows, so a re-initialised layer
  "at 0.5" could be noise; debiased, chance is about 0. No maintained numpy package fits stored arrays (the PyPI
  ones wrap torch models), and the definition is a few lines.
- A run's analysis.npz holds its per-layer representations of a fixed test sample at the best epoch and its CKA
  to the pretrained model; CKA to the clean fine-tuned model is computed here, from the two runs' arrays.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from healcore.core.config import EXPERIMENT_FIELDS
from healcore.store.io import atomic_write_bytes, read_npz
from healcore.store.runs import RunStore

# What the CKA every view prints is, in words: the report's layer section and the page's caption say it alike.
CKA_IN_WORDS = ("debiased linear CKA (Kornblith et al., 2019, with the unbiased HSIC estimator of Song et al., 2012): "
                "unrelated representations score about 0, where the plain estimator gives them 0.43 at 384 dimensions "
                "and 0.60 at 768 on 512 rows")


def linear_cka(X: np.ndarray, Y: np.ndarray, debiased: bool = True) -> float:
    """Linear CKA of X (n, p) and Y (n, q) from their Gram matrices: HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)),
    debiased by default (chance about 0; `debiased=False`: the plain estimator, columns centred)."""
    return float(cka_matrix(np.asarray(X)[None], np.asarray(Y)[None], debiased)[0, 0])


def cka_matrix(A: np.ndarray, B: np.ndarray, debiased: bool = True) -> np.ndarray:
    """M[i, j] = linear_cka(A[i], B[j]) for stacks of layer representations A (La, n, p) and B (Lb, n, q)."""
    grams_a = [_centred_gram(a, debiased) for a in A]
    grams_b = [_centred_gram(b, debiased) for b in B]
    norms_a = [np.linalg.norm(g) for g in grams_a]
    norms_b = [np.linalg.norm(g) for g in grams_b]
    out = np.full((len(A), len(B)), np.nan)
    for i, (ga, na) in enumerate(zip(grams_a, norms_a)):
        for j, (gb, nb) in enumerate(zip(grams_b, norms_b)):
            if na > 0 and nb > 0:
                out[i, j] = float((ga * gb).sum() / (na * nb))  # HSIC via centred Gram matrices
    return out


def _centred_gram(X: np.ndarray, debiased: bool = True) -> np.ndarray:
    """The linear Gram matrix of X, centred: the U-statistic centring of Song et al. (2012) when `debiased` (its
    diagonal zeroed; Kornblith et al.'s center_gram(unbiased=True)), else double centring."""
    X = np.asarray(X, dtype=np.float64)
    if not debiased:
        X = X - X.mean(0)
        return X @ X.T
    gram = X @ X.T
    n = gram.shape[0]
    if n < 4:
        return np.zeros_like(gram)  # the estimator needs 4 rows
    np.fill_diagonal(gram, 0.0)
    means = gram.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    gram -= means[:, None]
    gram -= means[None, :]
    np.fill_diagonal(gram, 0.0)
    return gram


def layer_names(n: int) -> list[str]:
    """Hidden-state names for a stack of n = L + 1 representations: the embedding output, then layers 1..L."""
    return ["embeddings"] + [f"layer {i}" for i in range(1, n)]


def load_analysis(store: RunStore, run_id: str) -> dict | None:
    return read_npz(store.files(run_id).analysis)


# ------------------------------------------------------------------------------------------ pairing
def clean_partner(runs: pd.DataFrame, with_notes: bool = False) -> dict:
    """For each completed corrupted run, the completed clean run of its line: same config but the corruption,
    the same seed first (then the same learning rate), an unflagged one before a flagged one. With `with_notes`,
    run -> (clean run, "" or how the partner differs: another seed, another learning rate, a flagged run)."""
    done = runs[runs["state"] == "completed"]
    line_keys = [k for k in EXPERIMENT_FIELDS if k in done]
    clean = done[done["side"] == "clean"]
    index: dict[tuple, list] = {}
    for r in clean.itertuples():
        index.setdefault(tuple(str(getattr(r, k)) for k in line_keys), []).append(r)
    pairs = {}
    for r in done[done["side"] != "clean"].itertuples():
        candidates = index.get(tuple(str(getattr(r, k)) for k in line_keys), [])
        ranked = sorted(candidates, key=lambda c: (bool(getattr(c, "flagged", False)), c.seed != r.seed,
                                                   c.lr != r.lr, c.run_id))
        if ranked:
            c = ranked[0]
            why = [w for w, differs in (("another seed", c.seed != r.seed), ("another learning rate", c.lr != r.lr),
                                        ("a flagged run", bool(getattr(c, "flagged", False)))) if differs]
            pairs[r.run_id] = (c.run_id, "clean partner at " + " and ".join(why) if why else "") if with_notes \
                else c.run_id
    return pairs


def similarity_to_clean(store: RunStore, run_id: str, clean_id: str, cache: bool = True) -> np.ndarray | None:
    """CKA matrix (healed layer i x clean fine-tuned layer j) on the two runs' shared sample rows; cached next to
    the healed run's analysis (RunFiles.similarity_cache)."""
    healed_path = store.files(run_id).analysis
    cache_path = store.files(run_id).similarity_cache(clean_id)
    clean_path = store.files(clean_id).analysis
    if cache and cache_path.is_file() and healed_path.is_file() and clean_path.is_file() and \
            cache_path.stat().st_mtime >= max(healed_path.stat().st_mtime, clean_path.stat().st_mtime):
        try:
            return np.load(cache_path, allow_pickle=False)
        except Exception:  # noqa: BLE001 - a damaged cache (BadZipFile, EOFError...) is computed again
            pass
    healed, clean = load_analysis(store, run_id), load_analysis(store, clean_id)
    if healed is None or clean is None:
        return None
    common, hi, ci = np.intersect1d(healed["index"], clean["index"], return_indices=True)
    if len(common) < 10:
        return None
    matrix = cka_matrix(healed["layers"][:, hi].astype(np.float32), clean["layers"][:, ci].astype(np.float32))
    if cache:
        buf = io.BytesIO()
        np.save(buf, matrix)
        try:
            atomic_write_bytes(cache_path, buf.getvalue())
        except OSError:
            pass  # a read-only or full store still shows it, uncached
    return matrix


# ------------------------------------------------------------------------------------------ tables
def similarity_table(store: RunStore, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (corrupted run, layer): CKA of the healed layer to the same layer of the clean fine-tuned model
    and of the pretrained model, and whether that layer was corrupted."""
    pairs = clean_partner(runs, with_notes=True)
    meta = runs.set_index("run_id")
    rows = []
    for run_id, (clean_id, partner_note) in pairs.items():
        healed = load_analysis(store, run_id)
        if healed is None:
            continue
        vs_clean = similarity_to_clean(store, run_id, clean_id)
        # stored at run time; runs written before the debiased estimator hold the biased one: not set beside it
        vs_pre = healed.get("cka_pretrained") if int(np.asarray(healed.get("cka_debiased", 0))) else None
        corrupted = set(int(x) for x in healed.get("corrupted_layers", np.array([], dtype=int)))
        r = meta.loc[run_id]
        n = healed["layers"].shape[0]
        for i, name in enumerate(layer_names(n)):
            rows.append({"run_id": run_id, "clean_run": clean_id, "model": r["model"], "dataset": r["dataset"],
                         "side": r["side"], "level": r["level"], "lr": r["lr"], "seed": r["seed"], "layer": name,
                         "depth": i, "corrupted": i in corrupted,
                         "cka_clean": float(vs_clean[i, i]) if vs_clean is not None else np.nan,
                         "cka_pretrained": float(vs_pre[i, i]) if vs_pre is not None else np.nan,
                         "partner_note": partner_note})
    return pd.DataFrame(rows, columns=["run_id", "clean_run", "model", "dataset", "side", "level", "lr", "seed",
                                       "layer", "depth", "corrupted", "cka_clean", "cka_pretrained", "partner_note"])


def mean_cka_matrices(store: RunStore, runs: pd.DataFrame) -> pd.DataFrame:
    """Long table of the CKA matrix healed-vs-clean, averaged over the runs (seeds) of each setting:
    model, dataset, side, level, healed layer, clean layer, cka, runs."""
    pairs = clean_partner(runs)
    meta = runs.set_index("run_id")
    sums: dict[tuple, list] = {}
    for run_id, clean_id in pairs.items():
        matrix = similarity_to_clean(store, run_id, clean_id)
        if matrix is None:
            continue
        r = meta.loc[run_id]
        key = (r["model"], r["dataset"], r["side"], float(r["level"]))
        acc = sums.setdefault(key, [np.zeros_like(matrix), 0])
        if acc[0].shape == matrix.shape:
            acc[0] += matrix
            acc[1] += 1
    rows = []
    for (model, dataset, side, level), (total, n) in sums.items():
        mean = total / n
        names = layer_names(mean.shape[0])
        for i in range(mean.shape[0]):
            for j in range(mean.shape[1]):
                rows.append({"model": model, "dataset": dataset, "side": side, "level": level, "healed": names[i],
                             "clean": names[j], "healed_depth": i, "clean_depth": j, "cka": mean[i, j], "runs": n})
    return pd.DataFrame(rows, columns=["model", "dataset", "side", "level", "healed", "clean", "healed_depth",
                                       "clean_depth", "cka", "runs"])


def block_order(block: str) -> int:
    """Where a block sits from input to output: embeddings, layer 1..L, pooler, head. (summary.json stores the
    movement with sorted keys, so its own order puts the head second.)"""
    if block.startswith("layer "):
        return int(block.split()[1])
    return {"embeddings": 0, "pooler": 1000, "head": 1001}.get(block, 999)


def movement_table(store: RunStore, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (completed run, block): relative weight movement during fine-tuning, and whether the block is a
    layer the run corrupted."""
    rows = []
    for r in runs[runs["state"] == "completed"].itertuples():
        moved = (store.summary(r.run_id) or {}).get("weight_movement") or {}
        hit = {f"layer {i}" for i in str(r.layers or "").split(",") if i}
        for block, value in moved.items():
            rows.append({"run_id": r.run_id, "model": r.model, "dataset": r.dataset, "side": r.side,
                         "level": r.level, "lr": r.lr, "seed": r.seed, "block": block, "order": block_order(block),
                         "movement": value, "corrupted": block in hit})
    return pd.DataFrame(rows, columns=["run_id", "model", "dataset", "side", "level", "lr", "seed", "block", "order",
                                       "movement", "corrupted"])


def per_class_table(store: RunStore, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (corrupted run, class): F1 of the damage probe before fine-tuning, after fine-tuning (best
    epoch), and of the clean fine-tuned partner; recovered = share of the clean model's F1 reached."""
    pairs = clean_partner(runs)
    meta = runs.set_index("run_id")
    rows = []
    for run_id, clean_id in pairs.items():
        healed = (store.summary(run_id) or {}).get("per_class") or {}
        clean = (store.summary(clean_id) or {}).get("per_class") or {}
        if not healed.get("best") or not clean.get("best"):
            continue
        r = meta.loc[run_id]
        probe = healed.get("probe") or [np.nan] * len(healed["best"])
        for name, before, after, ref in zip(healed["classes"], probe, healed["best"], clean["best"]):
            rows.append({"run_id": run_id, "model": r["model"], "dataset": r["dataset"], "side": r["side"],
                         "level": r["level"], "seed": r["seed"], "class": name, "before": before, "after": after,
                         "clean": ref})
    return pd.DataFrame(rows, columns=["run_id", "model", "dataset", "side", "level", "seed", "class", "before",
                                       "after", "clean"])
