"""Metrics from predictions (scikit-learn) and the pre-fine-tuning damage probe."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.preprocessing import StandardScaler


def metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """accuracy, weighted/macro F1 (in percent, as the paper reports), per-class F1, confusion matrix."""
    labels = list(range(num_classes))
    present = sorted(set(np.unique(y_true)))  # macro F1 over classes that occur in this split
    return {
        "accuracy": 100.0 * float(accuracy_score(y_true, y_pred)),
        "f1_weighted": 100.0 * float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "f1_macro": 100.0 * float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "f1_per_class": [100.0 * float(v) for v in
                         f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)],
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n": int(len(y_true)),
    }


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
