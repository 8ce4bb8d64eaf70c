"""Quality invariance: real videos made worse must not look more fake.

A detector that reads low bitrate or low resolution as forgery calls re-uploaded real videos
fake. The check re-encodes each *real* video (its identity and content unchanged) at lower
quality -- H.264 at CRF 35, 40 and 45, and downscaled x0.5 -- scores every variant with the
model's own ``detect`` pipeline, and compares, pooled over the videos' frames, the share of
frames called fake and the median P(fake) with those of the videos as published. A variant
passes when neither is higher than as published.

    lorefd quality REAL_VIDEOS... --model M --out DIR
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorefd.data.perturb import PerturbationError, degrade_video
from lorefd.utils import atomic_write_json, atomic_write_text

log = logging.getLogger("lorefd")

ORIGINAL = "as published"


@dataclass(frozen=True)
class Variant:
    """One way of making a video worse: H.264 ``crf`` (None: CRF 18) after resizing by ``scale``."""

    name: str
    crf: int | None = None
    scale: float = 1.0


VARIANTS = (Variant("crf35", 35), Variant("crf40", 40), Variant("crf45", 45),
            Variant("half", None, 0.5), Variant("half_crf40", 40, 0.5))


def make_variants(videos: list[Path], out_dir: Path, variants: tuple[Variant, ...] = VARIANTS
                  ) -> dict[str, list[Path | None]]:
    """``out_dir/NAME/IDX_STEM.mp4`` for every variant and video (kept when already made:
    the check resumes); None where a video could not be re-encoded (logged)."""
    made: dict[str, list[Path | None]] = {}
    for v in variants:
        (out_dir / v.name).mkdir(parents=True, exist_ok=True)
        paths: list[Path | None] = []
        for i, src in enumerate(videos):
            dst = out_dir / v.name / f"{i:03d}_{src.stem}.mp4"
            if not dst.exists():
                try:
                    degrade_video(src, dst, v.crf, v.scale)
                except PerturbationError as exc:
                    log.warning("skip %s for %s: %s", v.name, src, exc)
                    dst = None
            paths.append(dst)
        made[v.name] = paths
    return made


def _frame_scores(report: dict[str, Any]) -> list[np.ndarray | None]:
    """Per input, its scored frames' P(fake) (None when the video gave none)."""
    out: list[np.ndarray | None] = []
    for r in report["results"]:
        p = [f["p_fake"] for f in r["faces"]] if r["status"] == "ok" else []
        out.append(np.asarray(p, float) if p else None)
    return out


def summarise(scores: list[np.ndarray | None], threshold: float) -> dict[str, Any]:
    """Pooled over the videos with frames: frames, share called fake, median P(fake); per
    video its median and its frames' scores (to apply another threshold without scoring)."""
    kept = [s for s in scores if s is not None]
    pooled = np.concatenate(kept) if kept else np.zeros(0)
    return {"videos": len(kept), "frames": int(pooled.size),
            "share_fake": float(np.mean(pooled >= threshold)) if pooled.size else None,
            "median_p_fake": float(np.median(pooled)) if pooled.size else None,
            "video_medians": [None if s is None else float(np.median(s)) for s in scores],
            "frame_scores": [None if s is None else [round(float(x), 6) for x in s]
                             for s in scores]}


def quality_check(model: Any, videos: list[str | Path], out_dir: str | Path,
                  variants: tuple[Variant, ...] = VARIANTS, frames: int = 32,
                  threshold: float | None = None, threads: int | None = None,
                  variants_dir: str | Path | None = None) -> dict[str, Any]:
    """Score ``videos`` (real) as published and as each variant; writes ``OUT/quality.json``
    and ``OUT/quality.md``, returns the report. ``model``: what ``--model`` takes, or a loaded
    bundle; ``variants_dir`` (default ``OUT/variants``) keeps the copies, to reuse for
    another model. Only frames of the same videos are compared: a video whose variant lost its
    face is left out of that variant's comparison on both sides."""
    from lorefd.engines.detect import DetectOptions, detect_paths
    from lorefd.models.graph import load_runtime_model

    out_dir = Path(out_dir)
    videos = [Path(v) for v in videos]
    options = DetectOptions(frames=frames, threads=threads)  # checked before any work
    bundle = load_runtime_model(model, threads=threads)
    thr = float(bundle.threshold if threshold is None else threshold)
    made = make_variants(videos, Path(variants_dir or out_dir / "variants"), variants)

    def scores(paths: list[Path | None]) -> list[np.ndarray | None]:
        todo = [p for p in paths if p is not None]
        got = iter(_frame_scores(detect_paths(todo, bundle, options)) if todo else [])
        return [None if p is None else next(got) for p in paths]

    base = scores(list(videos))
    rows = {ORIGINAL: summarise(base, thr)}
    for v in variants:
        var = scores(made[v.name])
        both = [i for i in range(len(videos)) if base[i] is not None and var[i] is not None]
        ref = summarise([base[i] for i in both], thr)
        row = summarise([var[i] for i in both], thr)
        row.update({"crf": v.crf, "scale": v.scale,
                    "as_published": {k: ref[k] for k in ("videos", "share_fake",
                                                         "median_p_fake")}})
        row["passes"] = bool(row["frames"]) and (
            row["share_fake"] <= ref["share_fake"] and row["median_p_fake"]
            <= ref["median_p_fake"])
        rows[v.name] = row
    report = {"model": str(getattr(bundle, "path", model)), "threshold": thr,
              "frames_per_video": frames, "videos": [str(v) for v in videos],
              "variants": rows, "passes": all(r.get("passes", True) for r in rows.values())}
    atomic_write_json(out_dir / "quality.json", report)
    atomic_write_text(out_dir / "quality.md", format_markdown(report))
    return report


def format_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (one row per variant)."""
    lines = [f"Quality invariance of {report['model']} on {len(report['videos'])} real videos "
             f"(threshold {report['threshold']:.3f}, {report['frames_per_video']} frames each)",
             "", "| variant | videos | frames | called fake | median P(fake) | as published: "
             "called fake / median | passes |", "|---|---|---|---|---|---|---|"]

    def f(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    for name, r in report["variants"].items():
        ref = r.get("as_published")
        lines.append(f"| {name} | {r['videos']} | {r['frames']} | {f(r['share_fake'])} | "
                     f"{f(r['median_p_fake'])} | "
                     f"{'–' if ref is None else f(ref['share_fake']) + ' / ' + f(ref['median_p_fake'])}"
                     f" | {'' if 'passes' not in r else ('yes' if r['passes'] else '**no**')} |")
    return "\n".join(lines) + "\n"


__all__ = ["ORIGINAL", "VARIANTS", "Variant", "format_markdown", "make_variants",
           "quality_check", "summarise"]
