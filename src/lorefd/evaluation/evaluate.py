"""``lorefd evaluate``: score a manifest with a trained detector and write its metrics.

Callable from Python::

    metrics = evaluate("runs/x/best", samples, out_dir="eval/x")

Writes ``metrics.json`` (frame- and video-level Acc at the model's threshold, best-threshold Acc and its threshold,
AUC, EER, AP; overall and per manipulation method), ``predictions.csv`` and ``roc.png``.
Rows that cannot be scored (an image that does not decode, a non-finite score) are left out of
every metric and listed with their reason in ``excluded.csv`` and ``metrics.json``.

:func:`evaluate_media` scores raw videos/images (a labelled folder, an FF++ / Celeb-DF / DFD
root, or a folder of such sets): faces are found and cropped with the model's own parameters,
the crops cached per parameter set, each set scored on its own. :func:`check_crops` refuses
stored crops that were made otherwise than the model's training crops.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lorefd.data.images import ImageLoadError, is_video, load_rgb, walk_files
from lorefd.data.manifest import (
    FAKE,
    REAL,
    ManifestError,
    Sample,
    crop_mismatches,
    describe,
    filter_samples,
    preprocess_record,
    read_manifest,
)
from lorefd.data.preprocess.adapters import find_datasets
from lorefd.data.preprocess.runner import PreprocessOptions, run_preprocess
from lorefd.engines.predict import make_eval_loader, predict
from lorefd.errors import NothingProcessedError, UserError
from lorefd.metrics import fmt, report
from lorefd.models.bundle import Bundle, load_bundle
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
    try:
        pred = predict([detector], loader, device, amp)
    except RuntimeError as exc:
        if "no readable sample" not in str(exc):
            raise
        raise NothingProcessedError(f"evaluation set: not one of {len(samples)} images could be "
                                    "read") from None
    p = pred.probs[0]
    excluded: dict[int, str] = {}
    for row in np.flatnonzero(~pred.ok):
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


def evaluate(detector: Detector | Bundle | str | Path, samples: list[Sample], out_dir: str | Path | None = None,
             filters: list[str] | None = None, batch_size: int = 64, device: str | None = None,
             threshold: float | None = None, num_workers: int = 0, amp: bool = True,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics of ``detector`` on ``samples``: a module, or what ``--model`` accepts (a
    bundle, a run folder or a checkpoint folder; :func:`lorefd.models.bundle.load_bundle`).

    ``threshold`` (for Acc): default the model's (a bundle's, or for a run or checkpoint the
    same rule ``lorefd export`` applies: its validation threshold, else ``train.threshold``). Unreadable rows are excluded and listed (``excluded``).
    ``extra`` entries are added to the metrics (and ``metrics.json``).
    """
    samples = filter_samples(samples, filters)
    if not samples:
        raise ManifestError("evaluation set" + (f" ({' '.join(filters)})" if filters else "")
                            + ": no samples (empty split or filter)")
    # one convention with robustness: a missing or unreadable row is left out and listed
    # (``excluded``), never a reason to refuse the whole set
    counts = Counter(s.label for s in samples)
    if counts[REAL] == 0 or counts[FAKE] == 0:
        log.warning("evaluation set has one class: AUC, EER, AP reported as n/a")
    dev = pick_device(device)
    if isinstance(detector, (str, Path)):
        detector = load_bundle(detector, dev)
    if isinstance(detector, Bundle):
        ckpt = str(detector.path)
        if threshold is None:  # one rule for bundles and runs alike: the model's threshold
            threshold = detector.threshold
        detector = detector.detector.to(dev)
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
                    "excluded": gone, **(extra or {})})
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


class CropMismatchError(UserError, ValueError):
    """Stored crops made with other parameters than the model's training crops."""


def check_crops(samples: list[Sample], bundle: Bundle, allow_mismatch: bool = False
                ) -> list[str]:
    """Refuse crops whose crop mode, template margin or face detector differ from the model's (a
    :class:`CropMismatchError` that says how to re-crop); warn where the crop side differs or
    the parameters cannot be read. Returns the differences (recorded in ``metrics.json``)."""
    record = preprocess_record(samples)
    errors, warnings = crop_mismatches(record, bundle.preprocess)
    where = record.get("source", "the crops") if record else "the crops"
    pre = bundle.preprocess
    if errors and not allow_mismatch:
        raise CropMismatchError(
            f"the crops ({where}) were made otherwise than the model's training crops: "
            f"{'; '.join(errors)}. Scores on them are not the model's. Re-crop with "
            f"`lorefd preprocess ... --size {pre.get('size')} --margin {pre.get('margin')} "
            f"--crop {pre.get('crop', 'template')} --detector {pre.get('face_detector')}` (`lorefd evaluate` also takes the videos "
            "or images themselves and crops them as the model expects); --allow-mismatch "
            "scores them anyway")
    for text in errors + warnings:
        log.warning("crops vs model: %s", text)
    return errors + warnings


def holds_videos(root: str | Path) -> bool:
    """Whether any file under ``root`` is a video (a folder of videos is never crops)."""
    files, _ = walk_files(root)
    return any(is_video(p) for p in files)


def _set_cache(cache: Path, folder: Path, opts: PreprocessOptions) -> Path:
    """``CACHE/<set name>-<hash of its path>/<crop parameters>``: one folder per data set and
    parameter set, so a second run (any model with the same crop parameters) resumes."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.name) or "data"
    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    return cache / f"{slug}-{key}" / opts.cache_name()


def evaluate_media(model: str | Path | Bundle | None, root: str | Path, out_dir: str | Path,
                   cache: str | Path, frames: int | None = None, workers: int = 1,
                   filters: list[str] | None = None, batch_size: int = 64,
                   device: str | None = None, num_workers: int = 0, progress: bool | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Metrics of a model on raw videos/images, cropped with its own parameters.

    ``root`` is one data set (a labelled ``real/``/``fake/`` folder, an FF++, Celeb-DF or DFD
    root) or a folder of several (each child with a layout), scored one by one into
    ``out_dir/<set>/`` (``out_dir`` itself for one set). Crops go to ``cache`` (resumed per
    video). Videos without a face or that do not decode are never scored: they are counted
    and listed (``unscored`` in ``metrics.json``). Returns ``{set name: metrics}``.
    """
    dev = pick_device(device)
    bundle = model if isinstance(model, Bundle) else load_bundle(model, dev)
    opts = PreprocessOptions.for_model(bundle.preprocess, frames=frames, workers=workers,
                                       progress=progress)
    sets = find_datasets(root)
    if not sets:
        raise UserError(f"--data {root}: no data set found (a folder with real/ and fake/ "
                        "folders, an FF++, Celeb-DF or DFD root, or a folder of such sets)")
    log.info("%d data set(s) under %s: %s; crops %s", len(sets), root,
             ", ".join(f"{n} ({k})" for n, k, _ in sets), opts.cache_name())
    out, results = Path(out_dir), {}
    for name, kind, folder in sets:
        crops = _set_cache(Path(cache), folder, opts)
        summary = run_preprocess(kind, folder, crops, opts)
        unscored = [json.loads(line) for line in
                    (crops / "failures.jsonl").read_text().splitlines() if line.strip()]
        for u in unscored:
            log.warning("%s: not scored (%s): %s", name, u["status"], u["path"])
        samples = read_manifest(crops / "manifest.csv") if summary.crops else []
        sub = out / name if len(sets) > 1 else out
        if not samples:
            log.error("%s: no face crop in %d videos/images: not scored", name, summary.videos)
            continue
        results[name] = evaluate(
            bundle, samples, sub, filters, batch_size, device, None, num_workers,
            extra={"set": name, "layout": kind, "root": str(folder),
                   "crops": {"cache": str(crops), "options": opts.fingerprint(),
                             "videos": summary.videos, "ok": summary.ok,
                             "no_face": summary.no_face, "failed": summary.failed},
                   "unscored": unscored})
    if not results:
        raise NothingProcessedError(f"--data {root}: not one face crop in any data set")
    if len(sets) > 1:
        table = {n: {"overall": {lv: {k: m["overall"][lv][k] for k in ("n", "auc", "auc_ci")}
                                 for lv in ("frame", "video")},
                     "unscored": len(m["unscored"])} for n, m in results.items()}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "summary.json", table, allow_nan=False)
    return results


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
    from lorefd.evaluation.figures import roc_figure
    from lorefd.metrics import video_level

    y = np.array([s.label for s in samples])
    curves = [("frame", y, probs)]
    vy, vp, _ = video_level(y, probs, [s.group for s in samples])
    if len(vy) != len(y):
        curves.append(("video", vy, vp))
    methods = sorted({s.method for s in samples if s.label == FAKE and s.method})
    if len(methods) > 1:
        for m in methods:
            sel = np.array([s.label == REAL or s.method == m for s in samples])
            curves.append((m, y[sel], probs[sel]))
    roc_figure(curves, path, bold=("frame", "video"))

__all__ = ["CropMismatchError", "check_crops", "evaluate", "evaluate_media", "holds_videos",
           "plot_roc", "score_samples", "write_excluded", "write_predictions"]
