"""``lorefd detect``: explainable forgery detection on images, folders and videos.

Callable from Python without argparse::

    report = detect_paths(["photo.jpg", "clips/"], "model.lorefd", heatmap_dir="heat",
                          json_path="report.json")

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
  the box and score only, and says so. Names are claimed on disk, so runs sharing a folder
  never overwrite each other (:class:`HeatmapNamer`).

Bad inputs never stop a run: each file gets a ``status``. This module orchestrates: faces are
found and cropped by :mod:`lorefd.data.preprocess.crops` (shared with preprocessing), drawn by
:mod:`lorefd.render`, reported through :mod:`lorefd.engines.report_schema`.

JSON report (``json_path``; also the return value): the schema of
:mod:`lorefd.engines.report_schema`, shared with ``lorefd serve`` (the score is
``p_fake``; a non-finite score is an ``error`` status, never a verdict).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lorefd.aggregate import DEFAULT as AGGREGATE
from lorefd.aggregate import aggregate
from lorefd.data.images import (
    SCREEN_MAX_PIXELS,
    ImageLoadError,
    is_image,
    is_video,
    load_rgb,
    walk_files,
)
from lorefd.data.landmarks import LandmarkBackendError
from lorefd.data.preprocess.crops import FaceCrop, FacePipeline
from lorefd.data.preprocess.frames import VideoError, probe_video, read_frames, sample_indices
from lorefd.engines import report_schema as schema
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
    nonfinite_error,
    verdict,
)
from lorefd.models.bundle import Bundle
from lorefd.models.graph import OnnxDetector, load_runtime_model
from lorefd.models.registry import BLEND_MASK
from lorefd.render import render_overlay, shrink, umask_mode, write_mp4, write_png
from lorefd.utils import atomic_write_text

log = logging.getLogger("lorefd")

VIDEO_MAX_SIDE = 1280  # heatmap MP4 frames are downscaled to this longer side (memory, size)
IMAGE_MAX_SIDE = 2048  # image heatmaps are drawn on a copy at most this large (memory)
PROGRESS_MIN_FRAMES = 64  # a video with this many sampled frames gets its own progress bar


# ------------------------------------------------------------------------------ scoring
def attention_heat(attention: dict[str, np.ndarray], size: int) -> np.ndarray | None:
    """Mean over layers of the attention maps ``(B, 1, h, w)``, upsampled (bilinear) to
    ``size``, each face scaled to ``[0, 1]`` by its own maximum: ``(B, size, size)``; None
    without maps.

    A detector with a blend-mask head gives ``"blend mask"``: the probability that each pixel
    was blended in, shown as it is (not rescaled, so a clean real face stays dark)."""
    if not attention:
        return None

    def up(maps: np.ndarray) -> np.ndarray:
        return np.stack([cv2.resize(np.asarray(m[0], np.float32), (size, size),
                                    interpolation=cv2.INTER_LINEAR) for m in maps])

    if BLEND_MASK in attention:
        return up(attention[BLEND_MASK]).clip(0, 1).astype(np.float32)
    heat = np.mean([up(a) for a in attention.values()], axis=0)
    peak = np.maximum(heat.reshape(len(heat), -1).max(1), 1e-8)[:, None, None]
    return (heat / peak).clip(0, 1).astype(np.float32)


def run_detector(detector: Any, images: np.ndarray, device: Any = "cpu", maps: bool = False
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(prob (B,), maps)`` of either runtime for crops ``images (B, 3, S, S)`` in [0, 1]:
    an :class:`~lorefd.models.graph.OnnxDetector` or a PyTorch detector (on ``device``);
    ``maps`` (the attention / blend-mask maps) only when asked for."""
    if isinstance(detector, OnnxDetector):
        prob, out = detector.run(images)
        return prob, out if maps else {}
    import torch

    with torch.no_grad():
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        if not maps:
            return detector.predict_proba(batch).float().cpu().numpy(), {}
        ex = detector.explain(batch)
        return (ex["prob"].float().cpu().numpy(),
                {k: v.float().cpu().numpy() for k, v in (ex.get("attention") or {}).items()})


def score_crops(detector: Any, crops: list[FaceCrop], device: Any = "cpu",
                batch_size: int = 16, heat_size: int | None = None) -> None:
    """Fill ``score`` (and, with ``heat_size``, ``heat``) of every crop, in batches."""
    for start in range(0, len(crops), batch_size):
        chunk = crops[start:start + batch_size]
        probs, maps = run_detector(detector, np.stack([c.image for c in chunk]), device,
                                   maps=bool(heat_size))
        heat = attention_heat(maps, heat_size) if heat_size else None
        for i, c in enumerate(chunk):
            c.score = float(probs[i])
            c.heat = None if heat is None else heat[i]


class StreamScorer:
    """Scores a video's crops in batches on a second thread as they are found, so that
    decoding and the face stage of the next frames overlap the network (``with`` block;
    :meth:`wait` returns when every crop added has its score)."""

    def __init__(self, ctx: DetectContext, heat_size: int | None) -> None:
        self.ctx, self.heat_size = ctx, heat_size
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="lorefd-score")
        self.pending: list[FaceCrop] = []
        self.futures: list[Any] = []

    def add(self, crop: FaceCrop) -> None:
        self.pending.append(crop)
        if len(self.pending) >= self.ctx.batch_size:
            self._submit()

    def _submit(self) -> None:
        if self.pending:
            self.futures.append(self.pool.submit(
                score_crops, self.ctx.bundle.detector, self.pending, self.ctx.device,
                self.ctx.batch_size, self.heat_size))
            self.pending = []

    def wait(self) -> None:
        self._submit()
        for f in self.futures:
            f.result()  # re-raises a failure of the network

    def __enter__(self) -> StreamScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------ inputs
@dataclass
class InputFile:
    """One file to process; ``rel`` is its path under the folder argument (for heatmaps)."""

    path: Path
    rel: Path


def collect_inputs(paths: list[str | Path]) -> list[InputFile]:
    """Files of the arguments: a file as is, a folder recursively (hidden entries skipped,
    symbolic links to folders followed), in argument order then sorted; a missing path or a
    dangling link is kept (reported as unreadable)."""
    out: list[InputFile] = []
    for p in map(Path, paths):
        if p.is_dir():
            files, broken = walk_files(p)
            for f in sorted(files + broken):
                out.append(InputFile(f, Path(p.name or "input") / f.relative_to(p)))
        else:
            out.append(InputFile(p, Path(p.name)))
    return out


def claim(path: Path) -> bool:
    """Create ``path`` empty if nothing is there (``O_EXCL``: atomic even against another
    process writing into the same folder); False when it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


@dataclass
class HeatmapNamer:
    """Heatmap paths mirroring the inputs' folders: ``DIR/<folder>/<stem>_heatmap.png``.

    A name is claimed on disk (an empty file, created exclusively) before it is returned, so
    two inputs of one run, or two runs writing into the same folder at once or one after the
    other, never overwrite each other's heatmaps: a taken name gets ``_<ext>`` then ``_2``,
    ``_3``... (the report's ``heatmap`` says which file is whose).
    """

    root: Path
    used: set[Path] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)  # detect_paths(workers=N)

    def candidates(self, item: InputFile, ext: str) -> Iterator[Path]:
        parent, stem = self.root / item.rel.parent, item.rel.stem
        yield parent / f"{stem}_heatmap{ext}"
        yield parent / f"{stem}_{item.rel.suffix.lstrip('.')}_heatmap{ext}"
        n = 2
        while True:
            yield parent / f"{stem}_{n}_heatmap{ext}"
            n += 1

    def __call__(self, item: InputFile, ext: str) -> Path:
        with self.lock:
            for path in self.candidates(item, ext):
                if path not in self.used and claim(path):
                    self.used.add(path)
                    return path
        raise AssertionError("unreachable")  # candidates() never ends


# ------------------------------------------------------------------------------ per file
@dataclass
class DetectContext:
    """What every file needs: the bundle, the face pipeline, device and options.

    ``heatmaps`` maps an input and an extension to the path to write (claimed, see
    :class:`HeatmapNamer`); ``progress``: a progress bar for long videos (stderr)."""

    bundle: Bundle
    faces: FacePipeline
    device: Any  # torch.device, or "cpu" for the ONNX runtime
    threshold: float
    frames: int
    batch_size: int
    heatmaps: Any | None  # Callable[[InputFile, str], Path]
    progress: bool = False

    def heat_note(self, crops: list[FaceCrop]) -> str | None:
        """What to say on a heatmap when the detector gave no attention maps (baseline)."""
        if not crops or any(c.heat is not None for c in crops):
            return None
        return f"no attention map ({self.bundle.detector.name} detector): box and score only"

    def legend(self) -> str | None:
        """What a heatmap's colours mean, for its colour bar."""
        kind = schema.heatmap_kind(self.bundle.manifest)
        if kind == "blend mask":
            return "P(blended in), 0 to 1"
        if kind:
            return "recon. difference (relative)"
        return None


def _write_claimed(path: Path, write: Any, *args: Any) -> None:
    """Write onto a claimed (empty) path; on failure the claim is released."""
    try:
        write(path, *args)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


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
    score_crops(ctx.bundle.detector, crops, ctx.device, ctx.batch_size,
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
        note = ctx.heat_note(crops)
        small, factor = shrink(rgb, IMAGE_MAX_SIDE)  # a 9000 px photo is drawn at 2048 px
        drawn = [c.scaled(factor) for c in crops] if factor != 1.0 else crops
        legend = ctx.legend() if any(c.heat is not None for c in drawn) else None
        _write_claimed(out, write_png,
                       render_overlay(small, drawn, ctx.threshold, note, legend))
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
    with StreamScorer(ctx, heat_size) as scorer:
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
                    kept.append((index, *shrink(rgb, VIDEO_MAX_SIDE)))
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
        by_frame = {c.frame_index: c for c in crops}
        heat_note = ctx.heat_note(crops)
        # one legend for the whole video (every frame's strip the same height)
        legend = ctx.legend() if any(c.heat is not None for c in crops) else None
        rendered = []
        for index, rgb, factor in kept:
            c = by_frame.get(index)
            note = heat_note if c is not None else "no face"
            c = c.scaled(factor) if c is not None and factor != 1.0 else c
            rendered.append(render_overlay(rgb, [c] if c else [], ctx.threshold,
                                           f"frame {index}" + (f" - {note}" if note else ""),
                                           legend))
        out = ctx.heatmaps(item, ".mp4")
        _write_claimed(out, write_mp4, rendered)
        res["heatmap"] = str(out)
        if heat_note:
            notes.append(heat_note)
    res["message"] = "; ".join(notes)
    return res


def _frame_progress(frames: Iterable[tuple[int, np.ndarray]], total: int, name: str,
                    show: bool) -> Iterable[tuple[int, np.ndarray]]:
    """``frames`` with a progress bar (ETA, stderr) for a long video when ``show``."""
    if not show or total < PROGRESS_MIN_FRAMES:
        return frames
    from tqdm import tqdm

    return tqdm(frames, total=total, desc=name[:30], unit="frame", leave=False, position=1)


def _kind(path: Path) -> str | None:
    return "image" if is_image(path) else "video" if is_video(path) else None


def _missing_reason(path: Path) -> str:
    """Why ``path`` (which does not exist) cannot be read: a link loop, a dangling link, none."""
    if not path.is_symlink():
        return "not found"
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 on a loop
        return "symbolic link loop (it points back to itself)"
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            return "symbolic link loop (it points back to itself)"
    return "broken symbolic link (target missing)"


def detect_file(item: InputFile, ctx: DetectContext) -> dict[str, Any]:
    """One input of any kind; never raises for a bad file (status instead)."""
    t0 = time.perf_counter()
    try:
        if not item.path.exists():
            res = _result(item, _kind(item.path))
            res.update(status=UNREADABLE, message=_missing_reason(item.path))
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
        res = _result(item, _kind(item.path))
        res.update(status=ERROR, message=f"{type(exc).__name__}: {exc}")
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


# ------------------------------------------------------------------------------ the run
def model_info(bundle: Bundle) -> dict[str, Any]:
    return schema.model_info(bundle.manifest, str(bundle.path),
                             getattr(bundle.detector, "runtime", "torch"))


def detect_paths(paths: list[str | Path], bundle_path: str | Path | Bundle,
                 heatmap_dir: str | Path | None = None, device: str | None = None,
                 json_path: str | Path | None = None, frames: int | None = None,
                 threshold: float | None = None, batch_size: int | None = None,
                 retinaface_weights: str | None = None, csv_path: str | Path | None = None,
                 progress: bool = False, runtime: str | None = None,
                 threads: int | None = None,
                 faces: FacePipeline | list[FacePipeline] | None = None, workers: int = 1
                 ) -> dict[str, Any]:
    """Detect on images, videos and folders; returns (and writes to ``json_path``, and one row
    per file to ``csv_path``: :func:`format_csv`) the report.

    Raises :class:`~lorefd.models.bundle.BundleError` for a bad bundle; every input problem is a
    per-file ``status`` instead. ``frames``: sampled per video (default: the bundle's, 32);
    ``threshold``: overrides the bundle's decision threshold; ``batch_size``: faces per forward
    pass (default 4 on CPU, where larger batches were not faster, 32 on CUDA); ``progress``:
    progress bars with ETA on stderr over the inputs and over long videos (tqdm);
    ``runtime``: ``onnx`` or ``torch`` (default: onnx when the bundle has an ONNX graph, see
    :func:`~lorefd.models.graph.load_runtime_model`); ``threads``: CPU threads of either;
    ``faces``: a face pipeline already made for this bundle, or a list of them (one per
    worker; a list is extended with the pipelines this call makes, so that :class:`lorefd.Model`
    keeps them); ``workers``: files processed at once, in threads, each with a face detector
    of its own (about 1 s to load each, once per list; give the runtime ``threads=1`` each).
    """
    t0 = time.perf_counter()
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    # a bundle, a run folder or a checkpoint folder; or a Bundle already loaded (serve, benchmarks)
    if isinstance(bundle_path, Bundle) and not isinstance(bundle_path.detector, OnnxDetector):
        from lorefd.utils import pick_device

        bundle = bundle_path.to(pick_device(device))
    else:
        bundle = load_runtime_model(bundle_path, device, runtime, threads)
    dev = (next(bundle.detector.parameters()).device
           if not isinstance(bundle.detector, OnnxDetector) else "cpu")
    batch_size = batch_size or (32 if getattr(dev, "type", dev) == "cuda" else 4)
    thr = bundle.threshold if threshold is None else float(threshold)
    pipelines = faces if isinstance(faces, list) else [faces] if faces is not None else []
    if not pipelines:
        pipelines.append(FacePipeline.from_bundle(bundle, retinaface_weights, str(dev)))
    ctx = DetectContext(bundle=bundle, faces=pipelines[0], device=dev, threshold=thr,
                  frames=int(frames or pipelines[0].frames), batch_size=max(1, batch_size),
                  heatmaps=HeatmapNamer(Path(heatmap_dir)) if heatmap_dir is not None else None,
                  progress=progress)
    results = []
    items = collect_inputs(paths)
    bar = None
    if progress and len(items) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="file", desc="detect", position=0)
    for item, res in zip(items, run_files(items, ctx, pipelines, workers), strict=True):
        if bar is not None:
            bar.update(1)
        log.info("%s: %s%s", item.path, res["status"],
                 f" P(fake) {res[SCORE]:.3f}" if res[SCORE] is not None else "")
        results.append(res)
    report = schema.build_report(results, model_info(bundle), thr, time.perf_counter() - t0,
                                 None if heatmap_dir is None else str(heatmap_dir))
    if bar is not None:
        bar.close()
    if json_path is not None:
        schema.write_json(json_path, report)
        umask_mode(Path(json_path))
    if csv_path is not None:
        atomic_write_text(csv_path, format_csv(report))
        umask_mode(Path(csv_path))
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


def processed_any(report: dict[str, Any]) -> bool:
    """True when at least one input could be looked at (scored, or searched for a face)."""
    return any(r["status"] in (OK, NO_FACE) for r in report["results"])


__all__ = ["CSV_COLUMNS", "STATUSES", "DetectContext", "HeatmapNamer", "InputFile", "attention_heat",
           "run_files",
           "claim", "collect_inputs", "detect_file", "detect_paths", "format_csv",
           "processed_any", "score_crops"]
