"""Detection metrics (Section IV-B: Acc and AUC; plus EER, AP, bootstrap intervals, ROC
points and the one best-accuracy threshold), from scikit-learn; the one metrics module, below
every layer, so that training validation, evaluation, robustness and the demo share it.

Frame level scores every crop; video level aggregates the frame probabilities of each
``Sample.group`` (the video id) by one rule of :mod:`lorefd.aggregate` (default: the median).
A subset holding one class reports the ranking metrics (AUC, EER, AP, best threshold) as
``"n/a"`` instead of failing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score, roc_curve

from lorefd.aggregate import COMPARED, DEFAULT, aggregate

NA = "n/a"


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


def accuracy_at(labels: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    """Accuracy when ``prob >= threshold`` means fake."""
    return float(accuracy_score(labels, (probs >= threshold).astype(int)))


def equal_error_rate(labels: np.ndarray, probs: np.ndarray) -> float:
    """EER from the ROC curve: where the miss rate (1 - TPR) equals the FPR."""
    fpr, tpr, _ = roc_curve(labels, probs)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def _auc_by_ranks(y: np.ndarray, p: np.ndarray) -> float:
    from scipy.stats import rankdata

    r = rankdata(p)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_interval(labels: np.ndarray, probs: np.ndarray, level: float = 0.95,
                 n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap percentile interval of the AUC (reals and fakes resampled separately, so
    every resample holds both classes); deterministic for a seed."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=np.float64)
    real, fake = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(real, len(real)), rng.choice(fake, len(fake))])
        aucs[b] = _auc_by_ranks(y[idx], p[idx])
    a = (1 - level) / 2
    return float(np.quantile(aucs, a)), float(np.quantile(aucs, 1 - a))


def two_classes(labels: Sequence[int] | np.ndarray) -> bool:
    """Whether ``labels`` hold both a real (0) and a fake (1): ranking metrics need both."""
    return len(set(np.asarray(labels, dtype=int).ravel().tolist())) == 2


def roc_auc(labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray
            ) -> float | str:
    """The ROC AUC (fake = positive), :data:`NA` when the labels hold one class only."""
    return float(roc_auc_score(labels, probs)) if two_classes(labels) else NA


def roc_points(labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``(fpr, tpr, auc)`` of the ROC curve for plotting; None with one class only."""
    if not two_classes(labels):
        return None
    fpr, tpr, _ = roc_curve(labels, probs)
    return fpr, tpr, float(roc_auc_score(labels, probs))


def at_chance(metrics: dict[str, Any]) -> bool | None:
    """True when the AUC's 95 % interval contains 0.5 (None when there is no AUC)."""
    ci = metrics.get("auc_ci")
    if not isinstance(ci, (list, tuple)):
        return None
    return bool(ci[0] <= 0.5 <= ci[1])


def binary_metrics(labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray,
                   threshold: float = 0.5) -> dict[str, Any]:
    """``n, n_real, n_fake, acc, best_threshold, best_acc, auc, auc_ci, eer, ap`` (fake =
    positive); ``auc_ci``: the bootstrap 95 % interval of the AUC (:func:`auc_interval`)."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} differ in shape")
    out: dict[str, Any] = {"n": int(len(y)), "n_real": int((y == 0).sum()),
                           "n_fake": int((y == 1).sum()), "threshold": threshold}
    if len(y) == 0:
        return {**out, "acc": NA, "best_threshold": NA, "best_acc": NA, "auc": NA,
                "auc_ci": NA, "eer": NA, "ap": NA}
    out["acc"] = accuracy_at(y, p, threshold)
    if out["n_real"] == 0 or out["n_fake"] == 0:
        return {**out, "best_threshold": NA, "best_acc": NA, "auc": NA, "auc_ci": NA, "eer": NA,
                "ap": NA}
    t, acc = best_threshold(y, p)
    out.update(best_threshold=t, best_acc=acc, auc=float(roc_auc_score(y, p)),
               auc_ci=list(auc_interval(y, p)),
               eer=equal_error_rate(y, p), ap=float(average_precision_score(y, p)))
    return out


def video_level(labels: Sequence[int], probs: Sequence[float], groups: Sequence[str],
                rule: str = DEFAULT) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Frame probabilities aggregated per group by ``rule`` (:func:`lorefd.aggregate.aggregate`,
    default the median); a group's label is its frames' (majority) label."""
    acc: dict[str, list[float]] = defaultdict(list)
    lab: dict[str, list[int]] = defaultdict(list)
    for y, p, g in zip(labels, probs, groups, strict=True):
        acc[g].append(float(p))
        lab[g].append(int(y))
    keys = sorted(acc)
    return (np.array([int(round(np.mean(lab[k]))) for k in keys], dtype=int),
            np.array([aggregate(acc[k], rule) for k in keys]), keys)


def _level_metrics(labels, probs, groups, threshold, rule: str = DEFAULT) -> dict[str, Any]:
    vy, vp, _ = video_level(labels, probs, groups, rule)
    return {"frame": binary_metrics(labels, probs, threshold),
            "video": {**binary_metrics(vy, vp, threshold), "aggregate": rule}}


def aggregation_aucs(labels: Sequence[int], probs: Sequence[float], groups: Sequence[str],
                     rules: Sequence[str] = COMPARED) -> dict[str, Any]:
    """Video-level AUC and its 95 % interval under each frame-aggregation rule, to choose one."""
    out: dict[str, Any] = {}
    for rule in rules:
        vy, vp, _ = video_level(labels, probs, groups, rule)
        m = binary_metrics(vy, vp)
        out[rule] = {"auc": m["auc"], "auc_ci": m["auc_ci"], "n": m["n"]}
    return out


def report(labels: Sequence[int], probs: Sequence[float], groups: Sequence[str],
           methods: Sequence[str], threshold: float = 0.5, rule: str = DEFAULT
           ) -> dict[str, Any]:
    """Frame- and video-level metrics overall and per manipulation method; video level by the
    aggregation ``rule``, and ``aggregations``: the overall video AUC under every rule of
    :data:`lorefd.aggregate.COMPARED`.

    ``per_method[m]`` scores the fakes of method ``m`` against all the reals of the set.
    """
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=np.float64)
    g = list(groups)
    m = list(methods)
    out = {"overall": _level_metrics(y, p, g, threshold, rule), "per_method": {},
           "aggregations": aggregation_aucs(y, p, g)}
    fake_methods = sorted({mm or "unknown" for mm, yy in zip(m, y, strict=True) if yy == 1})
    if len(fake_methods) > 1 or (fake_methods and fake_methods != ["unknown"]):
        real = y == 0
        for name in fake_methods:
            sel = real | np.array([yy == 1 and (mm or "unknown") == name
                                   for mm, yy in zip(m, y, strict=True)])
            idx = np.flatnonzero(sel)
            out["per_method"][name] = _level_metrics(y[idx], p[idx], [g[i] for i in idx],
                                                     threshold, rule)
    return out


def fmt(value: Any, scale: float = 100.0, digits: int = 2) -> str:
    """A metric as a percentage string, ``n/a`` kept."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value * scale:.{digits}f}"
    return str(value)


__all__ = ["NA", "accuracy_at", "aggregation_aucs", "at_chance", "auc_interval", "best_threshold",
           "binary_metrics", "equal_error_rate", "fmt", "report", "roc_auc", "roc_points",
           "two_classes", "video_level"]
