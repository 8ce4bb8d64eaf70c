"""``lorefd evaluate``: score a manifest with a trained detector and write its metrics.

Callable from Python::

    metrics = evaluate("runs/x/best", samples, out_dir="eval/x")

Writes ``metrics.json`` (frame- and video-level Acc@0.5, best-threshold Acc and its threshold,
AUC, EER, AP; overall and per manipulation method), ``predictions.csv`` and ``roc.png``.
Rows that cannot be scored (an image that does not decode, a non-finite score) are left out of
every metric and listed with their reason in ``excluded.csv`` and ``metrics.json``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lorefd.data.images import ImageLoadError, load_rgb
from lorefd.data.manifest import FAKE, REAL, Sample, describe, filter_samples
from lorefd.engines.common import autocast
from lorefd.engines.train import check_split, make_eval_loader
from lorefd.errors import NothingProcessedError
from lorefd.evaluation.metrics import fmt, report
from lorefd.models.bundle import load_model
from lorefd.models.detectors import Detector
from lorefd.utils import atomic_path, atomic_write_json, pick_device

log = logging.getLogger("lorefd")


@torch.no_grad()
def score_samples(detector: Detector, samples: list[Sample], batch_size: int = 64,
                  device: torch.device | None = None, num_workers: int = 0, amp: bool = True
                  ) -> tuple[np.ndarray, dict[int, str]]:
    """Fake probability of every sample, in order (deterministic masks, eval mode), and
    ``{row: reason}`` for the rows that could not be scored (their probability is NaN).

    The data loader replaces an image that does not decode by the next readable one (training
    must not stop); here such a row is detected by the index of the item it got, never
    scored with another image's score.
    """
    device = device or next(detector.parameters()).device
    loader = make_eval_loader(samples, detector.image_size, batch_size, num_workers)
    was_training = detector.training
    detector.eval()
    probs, got = [], []
    try:
        for batch in loader:
            with autocast(device, amp):
                logits = detector(batch["image"].to(device, non_blocking=True))["logits"]
            probs.append(torch.sigmoid(logits.float()).cpu())
            got.append(batch["index"])
    except RuntimeError as exc:
        if "no readable sample" not in str(exc):
            raise
        raise NothingProcessedError(f"evaluation set: not one of {len(samples)} images could be "
                                    "read") from None
    finally:
        detector.train(was_training)
    p = torch.cat(probs).numpy().astype(np.float64) if probs else np.zeros(0)
    index = torch.cat(got).numpy() if got else np.zeros(0, dtype=int)
    excluded: dict[int, str] = {}
    for row in np.flatnonzero(index != np.arange(len(samples))):
        try:
            load_rgb(samples[row].path)
            reason = "unreadable image"
        except ImageLoadError as exc:
            reason = str(exc)
        excluded[int(row)] = reason
    for row in np.flatnonzero(~np.isfinite(p)):
        excluded.setdefault(int(row), "non-finite score (NaN/inf): the model is damaged")
    p[list(excluded)] = np.nan
    return p, excluded


def evaluate(detector: Detector | str | Path, samples: list[Sample], out_dir: str | Path | None = None,
             filters: list[str] | None = None, batch_size: int = 64, device: str | None = None,
             threshold: float | None = None, num_workers: int = 0, amp: bool = True
             ) -> dict[str, Any]:
    """Metrics of ``detector`` on ``samples``: a module, or what ``--model`` accepts (a
    bundle, a run folder or a checkpoint folder; :func:`lorefd.models.bundle.load_model`).

    ``threshold`` (for Acc): default the bundle's, else the training config's
    ``train.threshold`` (0.5). Unreadable rows are excluded and listed (``excluded``).
    """
    samples = filter_samples(samples, filters)
    counts = check_split(samples, "evaluation set" + (f" ({' '.join(filters)})" if filters else ""),
                         need_both=False)
    if counts[REAL] == 0 or counts[FAKE] == 0:
        log.warning("evaluation set has one class: AUC, EER, AP reported as n/a")
    dev = pick_device(device)
    if isinstance(detector, (str, Path)):
        ckpt = str(detector)
        loaded = load_model(detector, dev)
        detector = loaded.detector
        if threshold is None and loaded.source == "bundle":
            threshold = loaded.threshold
    else:
        ckpt = None
        detector = detector.to(dev)
    if threshold is None:
        cfg = getattr(detector, "config", None)
        threshold = cfg.train.threshold if cfg is not None else 0.5
    log.info("evaluating %s on %s", ckpt or detector.name, describe(samples))
    all_probs, excluded = score_samples(detector, samples, batch_size, dev, num_workers, amp)
    rows = [i for i in range(len(samples)) if i not in excluded]
    if excluded:
        log.warning("left %d of %d rows out of every metric (listed in excluded.csv): %s",
                    len(excluded), len(samples), "; ".join(
                        f"{samples[i].path}: {r}" for i, r in list(excluded.items())[:3]))
    if not rows:
        raise NothingProcessedError(f"evaluation set: not one of {len(samples)} rows could be "
                                    f"scored (e.g. {next(iter(excluded.values()))})")
    gone = [{"path": samples[i].path, "label": samples[i].label, "method": samples[i].method,
             "reason": r} for i, r in sorted(excluded.items())]
    rows_all, samples = samples, [samples[i] for i in rows]
    probs = all_probs[rows]
    labels = [s.label for s in samples]
    metrics = report(labels, probs, [s.group for s in samples], [s.method for s in samples],
                     threshold)
    metrics.update({"checkpoint": ckpt, "detector": detector.name, "filters": filters or [],
                    "data": describe(samples), "rows": len(rows_all), "scored": len(samples),
                    "excluded": gone})
    fr, vi = metrics["overall"]["frame"], metrics["overall"]["video"]
    log.info("frame: acc %s auc %s eer %s ap %s | video: acc %s auc %s", fmt(fr["acc"]),
             fmt(fr["auc"]), fmt(fr["eer"]), fmt(fr["ap"]), fmt(vi["acc"]), fmt(vi["auc"]))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "metrics.json", metrics, allow_nan=False)
        write_predictions(out / "predictions.csv", samples, probs)
        write_excluded(out / "excluded.csv", gone)
        plot_roc(out / "roc.png", samples, probs)
    return metrics


def write_excluded(path: Path, rows: list[dict[str, Any]]) -> None:
    """The rows left out of the metrics, with their reason (a header only when none was)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["path", "label", "method", "reason"])
        w.writeheader()
        w.writerows(rows)


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
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    plt.close(fig)


__all__ = ["evaluate", "plot_roc", "score_samples", "write_excluded", "write_predictions"]
