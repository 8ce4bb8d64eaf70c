"""``lorefd detect``: explainable forgery detection on images, folders and videos.

Callable from Python without argparse::

    report = detect_paths(["photo.jpg", "clips/"], "model.lorefd",
                          DetectOptions(heatmap_dir="heat", json_path="report.json"))

Pipeline per input (the face pipeline of ``lorefd preprocess``, with the parameters stored in
the bundle, so a face is cropped exactly as in training):

* image: every face the face detector finds (``detect_side`` downscale) is aligned to the
  5-point template (``size``, ``margin``), resized to the detector's ``image_size`` and scored;
  the file's score is the highest face score;
* video: ``frames`` frames *sampled* evenly spaced (as ``lorefd preprocess``); of those, the
  ones *decoded* (fewer when the file is truncated or corrupt; the message says so); one face
  per decoded frame tracked with :class:`~lorefd.data.preprocess.faces.FaceFinder`; the frames
  with a face are *scored* (``frames.count``) in batches; the video's score is the median frame
  score, with the share of frames at or above the threshold;
* verdict: ``fake`` when the score is at or above the bundle's threshold, else ``real``;
* heatmap (optional): the detector's local difference attention (Eq. 2; mean over its layers),
  mapped from the aligned crop back onto the original image with the inverse alignment
  transform and blended as a colour map inside the crop region, with the face box and score;
  PNG per image, MP4 (h264, 4 fps) of the sampled frames per video, with a colour bar saying
  what the colours mean. A detector without attention maps (the ``xception`` baseline) gets
  the box and score only, and says so (:mod:`lorefd.engines.heatmaps`). Names are claimed on
  disk, so runs sharing a folder never overwrite each other
  (:class:`~lorefd.engines.inputs.HeatmapNamer`).

Bad inputs never stop a run: each file gets a ``status``. This module orchestrates: the inputs
are collected by :mod:`lorefd.engines.inputs`, faces found and cropped by
:mod:`lorefd.data.preprocess.crops` (shared with preprocessing), scored through the
:class:`~lorefd.engines.scorer.Scorer` of either runtime, drawn by :mod:`lorefd.render`,
reported through :mod:`lorefd.engines.report_schema`; the options are one
:class:`~lorefd.engines.detect_options.DetectOptions`.

JSON report (``json_path``; also the return value): the schema of
:mod:`lorefd.engines.report_schema`, shared with ``lorefd serve`` (the score is
``p_fake``; a non-finite score is an ``error`` status, never a verdict).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorefd.aggregate import DEFAULT as AGGREGATE
from lorefd.aggregate import aggregate
from lorefd.data.images import SCREEN_MAX_PIXELS, ImageLoadError, is_image, is_video, load_rgb
from lorefd.data.landmarks import LandmarkBackendError
from lorefd.data.preprocess.crops import FaceCrop, FacePipeline
from lorefd.data.preprocess.frames import VideoError, probe_video, read_frames, sample_indices
from lorefd.engines import heatmaps
from lorefd.engines import report_schema as schema
from lorefd.engines.detect_options import DetectOptions
from lorefd.engines.heatmaps import image_overlay, video_overlays, write_claimed
from lorefd.engines.inputs import (
    HeatmapNamer,
    HeatmapPaths,
    InputFile,
    collect_inputs,
    input_kind,
    missing_reason,
)
from lorefd.engines.report_schema import (
    ERROR,
    NO_FACE,
    NO_FRAMES,
    OK,
    SCORE,
    STATUSES,
    UNREADABLE,
    UNSUPPORTED,
    face_entry,
    file_result,
    format_csv,
    nonfinite_error,
    verdict,
)
from lorefd.engines.scorer import Scorer, StreamScorer, default_batch, score_crops, scorer_for
from lorefd.models.bundle import Bundle
from lorefd.models.graph import load_runtime_model
from lorefd.render import shrink, umask_mode, write_mp4, write_png
from lorefd.utils import atomic_write_text

log = logging.getLogger("lorefd")

PROGRESS_MIN_FRAMES = 64  # a video with this many sampled frames gets its own progress bar


# ------------------------------------------------------------------------------ per file
@dataclass
class DetectContext:
    """What every file needs: the bundle, its scorer, the face pipeline and the options.

    ``heatmaps`` maps an input and an extension to the path to write (claimed, see
    :class:`~lorefd.engines.inputs.HeatmapNamer`); ``progress``: a progress bar for long
    videos (stderr)."""

    bundle: Bundle
    scorer: Scorer
    faces: FacePipeline
    threshold: float
    frames: int
    batch_size: int
    heatmaps: HeatmapPaths | None
    progress: bool = False


def _result(item: InputFile, kind: str | None) -> dict[str, Any]:
    return file_result(str(item.path), kind)


def _face_entry(c: FaceCrop) -> dict[str, Any]:
    return face_entry(c.box, c.score, c.frame_index)


def detect_image(item: InputFile, ctx: DetectContext) -> dict[str, Any]:
    """Score every face of a still image (file score = max)."""
    res = _result(item, "image")
    try:
        rgb = load_rgb(item.path, SCREEN_MAX_PIXELS)
    except ImageLoadError as exc:
        res.update(status=UNREADABLE, message=str(exc))
        return res
    faces, dropped = ctx.faces.faces(rgb)
    if not faces:
        res.update(status=NO_FACE, message="no face found")
        return res
    notes = [f"ignored {dropped} weak face detection(s)"] if dropped else []
    crops = [ctx.faces.crop(rgb, f) for f in faces]
    score_crops(ctx.scorer, crops, ctx.batch_size,
                ctx.faces.crop_size if ctx.heatmaps is not None else None)
    bad = nonfinite_error(c.score for c in crops)
    if bad:
        res.update(status=ERROR, message=bad)
        return res
    score = max(c.score for c in crops)
    res.update({SCORE: round(score, 6), "verdict": verdict(score, ctx.threshold),
                "faces": [_face_entry(c) for c in crops]})
    if len(crops) > 1:
        notes.append(f"{len(crops)} faces: file score is the highest")
    if ctx.heatmaps is not None:
        out = ctx.heatmaps(item, ".png")
        drawn, note = image_overlay(rgb, crops, ctx.threshold, ctx.bundle.manifest,
                                    ctx.scorer.name)
        write_claimed(out, write_png, drawn)
        res["heatmap"] = str(out)
        if note:
            notes.append(note)
    res["message"] = "; ".join(notes)
    return res


def _video_status(exc: VideoError) -> str:
    msg = str(exc)
    if msg.startswith("unsupported codec"):
        return UNSUPPORTED
    if msg == "no frames" or msg.startswith("no video stream"):
        return NO_FRAMES
    return UNREADABLE


def detect_video(item: InputFile, ctx: DetectContext) -> dict[str, Any]:
    """Sample frames evenly, track one face, score each frame (video score: the frames' median,
    :data:`lorefd.aggregate.DEFAULT`)."""
    res = _result(item, "video")
    try:
        info = probe_video(item.path)
    except VideoError as exc:
        res.update(status=_video_status(exc), message=str(exc))
        return res
    indices = sample_indices(info.frames, ctx.frames)
    finder = ctx.faces.finder()
    crops: list[FaceCrop] = []
    kept: list[tuple[int, np.ndarray, float]] = []
    decoded = multi = 0
    heat_size = ctx.faces.crop_size if ctx.heatmaps is not None else None
    with StreamScorer(ctx.scorer, ctx.batch_size, heat_size) as scorer:
        try:
            for index, rgb in _frame_progress(read_frames(item.path, indices), len(indices),
                                              item.path.name, ctx.progress):
                decoded += 1
                face, n_faces = finder.find(rgb)
                multi += n_faces > 1
                if face is not None:
                    crops.append(ctx.faces.crop(rgb, face, index))
                    scorer.add(crops[-1])
                if ctx.heatmaps is not None:
                    kept.append((index, *shrink(rgb, heatmaps.VIDEO_MAX_SIDE)))
        except VideoError as exc:
            res.update(status=_video_status(exc), message=str(exc))
            return res
        scorer.wait()
    frames = {"count": len(crops), "mean": None, "median": None, "aggregate": AGGREGATE,
              "share_above_threshold": None,
              "sampled": len(indices), "decoded": decoded, "total": info.frames,
              "fps": round(info.fps, 3)}
    res["frames"] = frames
    notes = []
    if decoded == 0:
        res.update(status=NO_FRAMES, message="no frame could be decoded")
        return res
    if decoded < len(indices):
        notes.append(f"decoded {decoded} of {len(indices)} sampled frames (truncated or corrupt)")
    if not crops:
        res.update(status=NO_FACE, message=f"no face in any of {decoded} frames")
        return res
    if len(crops) < decoded:
        notes.append(f"no face in {decoded - len(crops)} of {decoded} frames")
    if multi:
        notes.append(f"several faces in {multi} frame(s): scored the tracked (largest) one")
    bad = nonfinite_error(c.score for c in crops)
    if bad:
        res.update(status=ERROR, message=bad, faces=[])
        return res
    scores = np.array([c.score for c in crops])
    score = aggregate(scores, AGGREGATE)
    frames.update(mean=round(float(scores.mean()), 6), median=round(float(np.median(scores)), 6),
                  share_above_threshold=round(float((scores >= ctx.threshold).mean()), 6))
    res.update({SCORE: round(score, 6), "verdict": verdict(score, ctx.threshold),
                "faces": [_face_entry(c) for c in crops]})
    if ctx.heatmaps is not None:
        rendered, note = video_overlays(kept, crops, ctx.threshold, ctx.bundle.manifest,
                                        ctx.scorer.name)
        out = ctx.heatmaps(item, ".mp4")
        write_claimed(out, write_mp4, rendered)
        res["heatmap"] = str(out)
        if note:
            notes.append(note)
    res["message"] = "; ".join(notes)
    return res


def _frame_progress(frames: Iterable[tuple[int, np.ndarray]], total: int, name: str,
                    show: bool) -> Iterable[tuple[int, np.ndarray]]:
    """``frames`` with a progress bar (ETA, stderr) for a long video when ``show``."""
    if not show or total < PROGRESS_MIN_FRAMES:
        return frames
    from tqdm import tqdm

    return tqdm(frames, total=total, desc=name[:30], unit="frame", leave=False, position=1)


def detect_file(item: InputFile, ctx: DetectContext) -> dict[str, Any]:
    """One input of any kind; never raises for a bad file (status instead)."""
    t0 = time.perf_counter()
    try:
        if not item.path.exists():
            res = _result(item, input_kind(item.path))
            res.update(status=UNREADABLE, message=missing_reason(item.path))
        elif is_image(item.path):
            res = detect_image(item, ctx)
        elif is_video(item.path):
            res = detect_video(item, ctx)
        else:
            res = _result(item, None)
            res.update(status=UNSUPPORTED, message=f"not an image or video "
                                                   f"({item.path.suffix or 'no extension'})")
    except LandmarkBackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
        log.debug("detect %s failed", item.path, exc_info=True)
        res = _result(item, input_kind(item.path))
        res.update(status=ERROR, message=f"{type(exc).__name__}: {exc}")
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


# ------------------------------------------------------------------------------ the run
def detect_paths(paths: list[str | Path] | str | Path, model: str | Path | Bundle | None,
                 options: DetectOptions | None = None,
                 faces: FacePipeline | list[FacePipeline] | None = None) -> dict[str, Any]:
    """Detect on images, videos and folders; returns (and writes to ``options.json_path``, and
    one row per file to ``options.csv_path``: :func:`~lorefd.engines.report_schema.format_csv`)
    the report.

    ``model``: a bundle, a run folder or a checkpoint folder (None: the shipped model), loaded
    with ``options.device``, ``runtime`` and ``threads``
    (:func:`~lorefd.models.graph.load_runtime_model`), or a :class:`Bundle` already loaded
    (``lorefd serve``, :class:`lorefd.Model`). Raises
    :class:`~lorefd.models.bundle.BundleError` for a bad bundle; every input problem is a
    per-file ``status`` instead. ``options``: :class:`DetectOptions` (default: its defaults);
    ``faces``: a face pipeline already made for this bundle, or a list of them (one per
    worker; a list is extended with the pipelines this call makes, so that
    :class:`lorefd.Model` keeps them). With ``options.workers > 1`` each worker has a face
    detector of its own (about 0.3 s to load each, once per list; give the runtime
    ``threads=1`` each).
    """
    t0 = time.perf_counter()
    opts = options if options is not None else DetectOptions()
    if isinstance(paths, (str, Path)):
        paths = [paths]
    # a Bundle already loaded is passed through as it is
    bundle = load_runtime_model(model, opts.device, opts.runtime, opts.threads)
    scorer = scorer_for(bundle, opts.device)
    thr = bundle.threshold if opts.threshold is None else float(opts.threshold)
    pipelines = faces if isinstance(faces, list) else [faces] if faces is not None else []
    if not pipelines:
        pipelines.append(FacePipeline.from_bundle(bundle, opts.retinaface_weights, scorer.device))
    heat_dir = opts.heatmap_dir
    ctx = DetectContext(bundle=bundle, scorer=scorer, faces=pipelines[0], threshold=thr,
                        frames=int(opts.frames or pipelines[0].frames),
                        batch_size=opts.batch_size or default_batch(scorer),
                        heatmaps=HeatmapNamer(Path(heat_dir)) if heat_dir is not None else None,
                        progress=opts.progress)
    results = []
    items = collect_inputs(paths)
    bar = None
    if opts.progress and len(items) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="file", desc="detect", position=0)
    for item, res in zip(items, run_files(items, ctx, pipelines, opts.workers), strict=True):
        if bar is not None:
            bar.update(1)
        log.info("%s: %s%s", item.path, res["status"],
                 f" P(fake) {res[SCORE]:.3f}" if res[SCORE] is not None else "")
        results.append(res)
    model_block = schema.model_info(bundle.manifest, str(bundle.path), scorer.runtime)
    report = schema.build_report(results, model_block, thr, time.perf_counter() - t0,
                                 None if heat_dir is None else str(heat_dir))
    if bar is not None:
        bar.close()
    if opts.json_path is not None:
        schema.write_json(opts.json_path, report)
        umask_mode(Path(opts.json_path))
    if opts.csv_path is not None:
        atomic_write_text(opts.csv_path, format_csv(report))
        umask_mode(Path(opts.csv_path))
    return report


def run_files(items: list[InputFile], ctx: DetectContext, pipelines: list[FacePipeline],
              workers: int = 1) -> Iterator[dict[str, Any]]:
    """:func:`detect_file` of every item, in order. With ``workers > 1`` the files run in that
    many threads (dlib, OpenCV and ONNX Runtime release the GIL), each thread with a face
    pipeline of its own: one of ``pipelines``, or a new one appended to it."""
    workers = max(1, min(int(workers), len(items)))
    if workers == 1:
        yield from (detect_file(item, ctx) for item in items)
        return
    free: queue.SimpleQueue[FacePipeline] = queue.SimpleQueue()
    for p in pipelines[:workers]:
        free.put(p)
    made = threading.Lock()
    local = threading.local()

    def one(item: InputFile) -> dict[str, Any]:
        if getattr(local, "ctx", None) is None:
            try:
                faces = free.get_nowait()
            except queue.Empty:
                faces = ctx.faces.fresh()
                with made:
                    pipelines.append(faces)
            local.ctx = dataclasses.replace(ctx, faces=faces)
        return detect_file(item, local.ctx)

    with ThreadPoolExecutor(workers, thread_name_prefix="lorefd-detect") as pool:
        yield from pool.map(one, items)


def processed_any(report: dict[str, Any]) -> bool:
    """True when at least one input could be looked at (scored, or searched for a face)."""
    return any(r["status"] in (OK, NO_FACE) for r in report["results"])


__all__ = ["STATUSES", "DetectContext", "DetectOptions", "detect_file", "detect_image",
           "detect_paths", "detect_video", "processed_any", "run_files"]
