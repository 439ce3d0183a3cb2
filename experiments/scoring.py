"""GLUE's metric for each task, as percentages (0–100, like the paper's tables).

* `accuracy` — share of dev examples whose predicted class equals the label (SST-2, RTE, WNLI, MRPC,
  Rotten Tomatoes).
* `f1` — F1 of the positive class (label 1, "paraphrase") — MRPC.
* `mcc` — Matthews correlation coefficient of the binary predictions, in [-100, 100] — CoLA.
* `pearson`, `spearman` — Pearson's linear and Spearman's rank correlation between predicted and gold
  similarity scores, in [-100, 100] — STS-B. A constant prediction correlates with nothing and scores 0.
* `score` — the task's headline number: the single metric, or the mean of the two for MRPC (accuracy, F1)
  and STS-B (Pearson, Spearman), as GLUE's leaderboard does.

The GLUE average is the mean of the tasks' `score`s (CoLA, SST-2, MRPC, STS-B, RTE for the paper's 5-task
average).
"""

from __future__ import annotations

import numpy as np

from experiments.tasks import TaskSpec


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    """Percentage of exact matches."""
    return float(np.mean(np.asarray(pred) == np.asarray(gold)) * 100.0)


def f1_positive(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 (percent) of class 1: 2·TP / (2·TP + FP + FN); 0 when there is no positive prediction or label."""
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp = float(np.sum(pred & gold))
    denom = 2 * tp + float(np.sum(pred & ~gold)) + float(np.sum(~pred & gold))
    return 0.0 if denom == 0 else 200.0 * tp / denom


def matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation (percent) of binary predictions: (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN));
    0 when a factor of the denominator is 0 (e.g. a constant prediction)."""
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp, tn = float(np.sum(pred & gold)), float(np.sum(~pred & ~gold))
    fp, fn = float(np.sum(pred & ~gold)), float(np.sum(~pred & gold))
    denom = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return 0.0 if denom == 0 else 100.0 * (tp * tn - fp * fn) / float(np.sqrt(denom))


def pearson(pred: np.ndarray, gold: np.ndarray) -> float:
    """Pearson correlation (percent); 0 when either side is constant."""
    x, y = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = float(np.sqrt(np.sum(x * x) * np.sum(y * y)))
    return 0.0 if denom == 0 else 100.0 * float(np.sum(x * y)) / denom


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    """Spearman rank correlation (percent): Pearson on average ranks (ties share their mean rank)."""
    from scipy.stats import rankdata

    return pearson(rankdata(pred), rankdata(gold))


_METRICS = {"accuracy": accuracy, "f1": f1_positive, "mcc": matthews, "pearson": pearson, "spearman": spearman}


def score(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics (percent) plus `score`, its headline number (see the module docstring)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    out = {name: _METRICS[name](predictions, labels) for name in spec.metrics}
    out["score"] = float(np.mean([out[name] for name in spec.metrics]))
    return out
