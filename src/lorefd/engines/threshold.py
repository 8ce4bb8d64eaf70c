"""The one best-accuracy decision threshold, used by training (validation, recorded with the
best checkpoint, the bundle's threshold) and by evaluation (the "best Acc (its threshold)"
column). In ``engines`` so that both ``engines.train`` and ``evaluation.metrics`` can import
it (imports flow ``data → models → engines → evaluation → cli``); numpy only."""

from __future__ import annotations

import numpy as np


def best_threshold(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """The decision threshold (``prob >= threshold`` means fake) with the highest accuracy on
    this set, and that accuracy: ``(threshold, accuracy)``. Arguments in scikit-learn's order
    (``y_true, y_score``).

    The threshold is the midpoint between the two neighbouring distinct probabilities (it
    generalises better than either); above the highest probability when calling everything
    real is best; 0.5 for an empty set.
    """
    labels = np.asarray(labels, dtype=np.float64).ravel()
    probs = np.asarray(probs, dtype=np.float64).ravel()
    if len(labels) != len(probs):
        raise ValueError(f"{len(labels)} labels but {len(probs)} probabilities")
    order = np.argsort(-probs, kind="stable")
    p, y = probs[order], labels[order]
    # predicting "fake" for the top k: correct = fakes in top k + reals outside top k
    fakes_top = np.concatenate([[0], np.cumsum(y)])
    reals_rest = (1 - y).sum() - np.concatenate([[0], np.cumsum(1 - y)])
    acc = (fakes_top + reals_rest) / max(len(y), 1)
    # only cut between distinct probabilities
    valid = np.concatenate([[True], p[1:] != p[:-1], [True]])
    k = int(np.argmax(np.where(valid, acc, -1)))
    if k == 0:
        thr = float(p[0]) + 1e-6 if len(p) else 0.5
    elif k == len(p):
        thr = float(p[-1])
    else:
        thr = float((p[k - 1] + p[k]) / 2)
    return thr, float(acc[k])


__all__ = ["best_threshold"]
