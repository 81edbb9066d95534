"""Metrics from predictions (scikit-learn's definitions, counted with numpy) and the pre-fine-tuning damage probe."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

INLINE_CONFUSION = 50  # classes up to which a confusion matrix is kept inline (beyond: sparse, in its own file)


def metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """accuracy, weighted/macro F1 (in percent, as the paper reports), per-class F1, confusion matrix (a list of
    rows up to INLINE_CONFUSION classes; beyond, its nonzero cells as {"rows", "cols", "counts", "classes"}, which the
    store keeps in a compressed file: a dense 10,000-class matrix is 100 million numbers).

    Counted with bincount, in time linear in rows and classes: scikit-learn's f1_score with 10,000 labels takes
    seconds per call. The numbers are scikit-learn's (zero_division=0; tests compare them)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    true_count = np.bincount(y_true, minlength=num_classes)[:num_classes]
    pred_count = np.bincount(y_pred, minlength=num_classes)[:num_classes]
    hits = np.bincount(y_true[y_true == y_pred], minlength=num_classes)[:num_classes]
    denominator = true_count + pred_count
    f1 = np.divide(2.0 * hits, denominator, out=np.zeros(num_classes), where=denominator > 0)
    n = len(y_true)
    present = true_count > 0  # macro F1 over the classes that occur in this split
    return {
        "accuracy": 100.0 * float(hits.sum() / n) if n else 0.0,
        "f1_weighted": 100.0 * float((f1 * true_count).sum() / n) if n else 0.0,
        "f1_macro": 100.0 * float(f1[present].mean()) if present.any() else 0.0,
        "f1_per_class": [100.0 * float(v) for v in f1],
        "confusion": np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(
            num_classes, num_classes).tolist() if num_classes <= INLINE_CONFUSION
        else sparse_confusion(y_true, y_pred, num_classes),
        "n": int(n),
    }


def sparse_confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """The nonzero cells of a confusion matrix: (true row, predicted column, count)."""
    pairs, counts = np.unique(np.stack([np.asarray(y_true), np.asarray(y_pred)]), axis=1, return_counts=True)
    return {"rows": pairs[0].astype(np.int32), "cols": pairs[1].astype(np.int32), "counts": counts.astype(np.int64),
            "classes": int(num_classes)}


def majority_f1(y_train: np.ndarray, y_test: np.ndarray, num_classes: int) -> float:
    """Weighted F1 of always predicting the majority train class: the floor a collapsed run sits at."""
    majority = np.bincount(y_train, minlength=num_classes).argmax()
    return metrics(y_test, np.full_like(y_test, majority), num_classes)["f1_weighted"]


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
          num_classes: int, seed: int = 0) -> dict:
    """Logistic regression on frozen features: how much task signal the (corrupted) body still carries."""
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=1000, random_state=seed)
    clf.fit(scaler.transform(train_x), train_y)
    result = metrics(test_y, clf.predict(scaler.transform(test_x)), num_classes)
    return {k: result[k] for k in ("accuracy", "f1_weighted", "f1_macro", "f1_per_class", "n")}
