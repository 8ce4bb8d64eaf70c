"""``lorefd evaluate``: score a manifest with a trained detector and write its metrics.

Callable from Python::

    metrics = evaluate("runs/x/best", samples, out_dir="eval/x")

Writes ``metrics.json`` (frame- and video-level Acc@0.5, best-threshold Acc and its threshold,
AUC, EER, AP; overall and per manipulation method), ``predictions.csv`` and ``roc.png``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lorefd.data.manifest import FAKE, REAL, Sample, describe, filter_samples
from lorefd.engines.train import check_split, make_eval_loader, predict
from lorefd.evaluation.metrics import fmt, report
from lorefd.models.detectors import Detector, load_detector
from lorefd.utils import atomic_path, atomic_write_json, pick_device

log = logging.getLogger("lorefd")


def score_samples(detector: Detector, samples: list[Sample], batch_size: int = 64,
                  device: torch.device | None = None, num_workers: int = 0, amp: bool = True
                  ) -> np.ndarray:
    """Fake probability of every sample, in order (deterministic masks)."""
    device = device or next(detector.parameters()).device
    loader = make_eval_loader(samples, detector.image_size, batch_size, num_workers)
    probs, _ = predict(detector, loader, device, amp)
    return probs


def evaluate(detector: Detector | str | Path, samples: list[Sample], out_dir: str | Path | None = None,
             filters: list[str] | None = None, batch_size: int = 64, device: str | None = None,
             threshold: float = 0.5, num_workers: int = 0, amp: bool = True) -> dict[str, Any]:
    """Metrics of ``detector`` (a module or a checkpoint path) on ``samples``."""
    samples = filter_samples(samples, filters)
    counts = check_split(samples, "evaluation set" + (f" ({' '.join(filters)})" if filters else ""),
                         need_both=False)
    if counts[REAL] == 0 or counts[FAKE] == 0:
        log.warning("evaluation set has one class: AUC, EER, AP reported as n/a")
    dev = pick_device(device)
    if isinstance(detector, (str, Path)):
        ckpt = str(detector)
        detector = load_detector(detector, dev)
    else:
        ckpt = None
        detector = detector.to(dev)
    log.info("evaluating %s on %s", ckpt or detector.name, describe(samples))
    probs = score_samples(detector, samples, batch_size, dev, num_workers, amp)
    labels = [s.label for s in samples]
    metrics = report(labels, probs, [s.group for s in samples], [s.method for s in samples],
                     threshold)
    metrics.update({"checkpoint": ckpt, "detector": detector.name, "filters": filters or [],
                    "data": describe(samples)})
    fr, vi = metrics["overall"]["frame"], metrics["overall"]["video"]
    log.info("frame: acc %s auc %s eer %s ap %s | video: acc %s auc %s", fmt(fr["acc"]),
             fmt(fr["auc"]), fmt(fr["eer"]), fmt(fr["ap"]), fmt(vi["acc"]), fmt(vi["auc"]))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "metrics.json", metrics)
        write_predictions(out / "predictions.csv", samples, probs)
        plot_roc(out / "roc.png", samples, probs)
    return metrics


def write_predictions(path: Path, samples: list[Sample], probs: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "method", "group", "prob_fake"])
        for s, p in zip(samples, probs, strict=True):
            w.writerow([s.path, s.label, s.method, s.group, f"{p:.6f}"])


def plot_roc(path: Path, samples: list[Sample], probs: np.ndarray) -> None:
    """Frame-level ROC overall and per method, and the video-level ROC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    from lorefd.evaluation.metrics import video_level

    y = np.array([s.label for s in samples])
    fig, ax = plt.subplots(figsize=(5, 5))
    curves = [("frame", y, probs)]
    vy, vp, _ = video_level(y, probs, [s.group for s in samples])
    if len(vy) != len(y):
        curves.append(("video", vy, vp))
    methods = sorted({s.method for s in samples if s.label == FAKE and s.method})
    if len(methods) > 1:
        for m in methods:
            sel = np.array([s.label == REAL or s.method == m for s in samples])
            curves.append((m, y[sel], probs[sel]))
    for name, yy, pp in curves:
        if len(set(yy.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(yy, pp)
        ax.plot(fpr, tpr, lw=1.5 if name in ("frame", "video") else 1,
                label=f"{name} (AUC {roc_auc_score(yy, pp):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (fake = positive)",
           xlim=(0, 1), ylim=(0, 1))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "one class only: no ROC", ha="center")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


__all__ = ["evaluate", "plot_roc", "score_samples", "write_predictions"]
