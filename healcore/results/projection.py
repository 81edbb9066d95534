"""2-D projections (t-SNE, UMAP) of a run's stored features, cached on disk next to them.

The cache is RunFiles.projection(which, method); it is rebuilt when the features file is newer.
Cluster quality per panel: silhouette of the labels in feature space, and 5-NN accuracy (5-fold).
"""
from __future__ import annotations

import numpy as np

from healcore.store.io import atomic_write_npz, read_npz
from healcore.store.runs import RunFiles

METHODS = ("tsne", "umap")


def load_features(files: RunFiles, which: str = "best") -> dict | None:
    return read_npz(files.features(which))


def quality(X: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    out = {"silhouette": float("nan"), "knn_accuracy": float("nan")}
    if len(np.unique(labels)) < 2 or len(labels) < 10:
        return out
    out["silhouette"] = float(silhouette_score(X, labels))
    folds = int(min(5, np.bincount(labels).max(), max(2, np.bincount(labels)[np.bincount(labels) > 0].min())))
    out["knn_accuracy"] = 100.0 * float(cross_val_score(KNeighborsClassifier(5), X, labels, cv=max(2, folds)).mean())
    return out


def is_cached(files: RunFiles, which: str, method: str) -> bool:
    """Whether the projection is on disk and newer than its features (project() then returns at once)."""
    src, cache = files.features(which), files.projection(which, method)
    return cache.is_file() and src.is_file() and cache.stat().st_mtime >= src.stat().st_mtime


def project(files: RunFiles, which: str = "best", method: str = "tsne", seed: int = 0) -> dict | None:
    """{'xy', 'labels', 'predictions'?, 'silhouette', 'knn_accuracy'} for a run, from cache when fresh."""
    if method not in METHODS:
        raise ValueError(f"projection method {method!r}: use tsne or umap")
    cache = files.projection(which, method)
    if is_cached(files, which, method):
        try:
            with np.load(cache, allow_pickle=False) as z:
                return {k: (z[k] if z[k].ndim else z[k].item()) for k in z.files}
        except Exception:  # noqa: BLE001 - a damaged cache (BadZipFile, EOFError...) is computed again
            pass
    feats = load_features(files, which)
    if feats is None or len(feats["X"]) < 5:
        return None
    X = feats["X"].astype(np.float32)
    labels = feats["labels"].astype(int)
    if method == "tsne":
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (len(X) - 1) / 3)), init="pca",
                  random_state=seed).fit_transform(X)
    else:
        import umap

        xy = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(X) - 1)).fit_transform(X)
    result = {"xy": xy.astype(np.float32), "labels": labels, **quality(X, labels)}
    if "predictions" in feats:
        result["predictions"] = feats["predictions"].astype(int)
    try:
        atomic_write_npz(cache, **{k: np.asarray(v) for k, v in result.items()})
    except OSError:
        pass  # a read-only store still shows the projection, just without caching it
    return result
