"""The one JSON schema of detection results: ``lorefd detect --json`` and ``lorefd serve``.

Both build their answers only through this module, so the two can never drift apart::

    {
      "lorefd_version": "0.1.0",
      "model": {"path", "detector", "image_size", "heatmap" (what a heatmap shows: "blend
                mask" | "reconstruction difference" | null), "bundle_version",
                "lorefd_version" (export), "created", "payload_sha256", "threshold_source",
                "runtime" ("onnx" | "torch"), "preprocess": {...}},
      "threshold": 0.5,
      "heatmap_dir": str | null,                    # serve: always null
      "summary": {"inputs", "ok", "no face", "unreadable", "unsupported", "no frames", "error",
                  "seconds"},
      "results": [{
        "path": str,                                # serve: the uploaded file's name
        "type": "image" | "video" | null,          # null: not an image or video
        "status": "ok" | "no face" | "unreadable" | "unsupported" | "no frames" | "error",
        "message": str,                             # reason / warnings, "" when none
        "p_fake": float | null,                     # P(fake): image max over faces, video median
        "verdict": "fake" | "real" | null,          # fake when p_fake >= threshold
        "faces": [{"box": [x0, y0, x1, y1], "p_fake": float,
                   "frame_index": int | null}],     # images: one per face (frame_index null);
                                                    # videos: one per frame with a face
        "frames": {"count", "mean", "median", "aggregate", "share_above_threshold",
                   "sampled", "decoded",
                   "total", "fps"} | null,          # videos only; count = frames scored
        "heatmap": str | null,                      # detect: PNG/MP4 path; serve: its URL
        "seconds": float
      }]
    }

The JSON is strict (RFC 8259): a non-finite score is never a verdict -- that file gets status
``error`` (:func:`nonfinite_error`) -- and :func:`dumps` refuses NaN/inf anywhere.
``detect --csv`` writes the same results one row per file (:func:`format_csv`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lorefd.version import __version__

OK, NO_FACE, UNREADABLE, UNSUPPORTED, NO_FRAMES, ERROR = (
    "ok", "no face", "unreadable", "unsupported", "no frames", "error")
STATUSES = [OK, NO_FACE, UNREADABLE, UNSUPPORTED, NO_FRAMES, ERROR]
SCORE = "p_fake"
RESULT_KEYS = ("path", "type", "status", "message", SCORE, "verdict", "faces", "frames",
               "heatmap", "seconds")


def file_result(path: str, kind: str | None) -> dict[str, Any]:
    """A fresh per-file result (status ``ok``, nothing scored yet)."""
    return {"path": path, "type": kind, "status": OK, "message": "", SCORE: None,
            "verdict": None, "faces": [], "frames": None, "heatmap": None, "seconds": 0.0}


def face_entry(box: Iterable[float], p_fake: float, frame_index: int | None) -> dict[str, Any]:
    """One scored face (image) or frame (video)."""
    return {"box": [round(float(v), 1) for v in box], SCORE: round(float(p_fake), 6),
            "frame_index": frame_index}


def verdict(p_fake: float, threshold: float) -> str:
    return "fake" if p_fake >= threshold else "real"


def nonfinite_error(scores: Iterable[float]) -> str | None:
    """The error message when any score is NaN or infinite (a damaged model), else None."""
    bad = sum(not math.isfinite(float(s)) for s in scores)
    return (f"the model gave a non-finite score for {bad} face(s): the model is damaged "
            "(no verdict)") if bad else None


def heatmap_kind(manifest: dict[str, Any]) -> str | None:
    """What a heatmap of this model shows: ``"blend mask"`` (the predicted forged region, an
    absolute probability), ``"reconstruction difference"`` (Eq. 2 attention, relative within
    each face) or None (no map: box and score only)."""
    meta = manifest.get("checkpoint_meta") or {}
    if meta.get("mask_layer"):
        return "blend mask"
    return "reconstruction difference" if meta.get("layers") else None


def model_info(manifest: dict[str, Any], path: str, runtime: str = "torch") -> dict[str, Any]:
    """The ``model`` block from a bundle's manifest; ``path`` as it should be shown;
    ``runtime`` what ran it (``onnx`` or ``torch``)."""
    m = manifest
    return {"path": path, "detector": m["detector"], "image_size": m["image_size"],
            "runtime": runtime,
            "heatmap": heatmap_kind(m),
            "bundle_version": m["bundle_version"], "lorefd_version": m.get("lorefd_version"),
            "created": m.get("created"), "payload_sha256": m.get("payload_sha256"),
            "threshold_source": m["threshold"]["source"], "preprocess": m["preprocess"]}


def build_report(results: list[dict[str, Any]], model: dict[str, Any], threshold: float,
                 seconds: float, heatmap_dir: str | None = None) -> dict[str, Any]:
    """The whole report around the per-file ``results``."""
    counts = Counter(r["status"] for r in results)
    return {
        "lorefd_version": __version__, "model": model, "threshold": float(threshold),
        "heatmap_dir": heatmap_dir,
        "summary": {"inputs": len(results), **{s: counts.get(s, 0) for s in STATUSES},
                    "seconds": round(seconds, 3)},
        "results": results,
    }


def dumps(report: dict[str, Any], indent: int | None = 2) -> str:
    """Strict JSON text (``ValueError`` on NaN/inf, which :func:`nonfinite_error` prevents)."""
    return json.dumps(report, indent=indent, sort_keys=True, allow_nan=False)


def write_json(path: str | Path, report: dict[str, Any]) -> None:
    """Write the report atomically as strict JSON."""
    from lorefd.utils import atomic_write_text

    atomic_write_text(path, dumps(report))


CSV_COLUMNS = ("path", "type", "status", "p_fake", "verdict", "faces", "frames_sampled",
               "frames_decoded", "frames_scored", "heatmap", "message")


def format_csv(report: dict[str, Any]) -> str:
    """One row per input: ``path, type, status, p_fake, verdict, faces`` (faces scored: per
    image, or frames with a face per video), ``frames_sampled`` (frames the video was asked
    for, evenly spaced), ``frames_decoded`` (of those, the ones that could be read),
    ``frames_scored`` (of those, the ones with a face), ``heatmap, message``; empty cells for
    what does not apply."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in report["results"]:
        fr = r["frames"] or {}
        w.writerow([r["path"], r["type"] or "", r["status"],
                    "" if r[SCORE] is None else f"{r[SCORE]:.6f}", r["verdict"] or "",
                    len(r["faces"]), fr.get("sampled", ""), fr.get("decoded", ""),
                    fr.get("count", ""), r["heatmap"] or "", r["message"]])
    return buf.getvalue()


__all__ = ["CSV_COLUMNS", "ERROR", "NO_FACE", "NO_FRAMES", "OK", "RESULT_KEYS", "SCORE", "STATUSES",
           "UNREADABLE", "UNSUPPORTED", "build_report", "dumps", "face_entry", "file_result", "format_csv",
           "heatmap_kind", "model_info", "nonfinite_error", "verdict", "write_json"]
