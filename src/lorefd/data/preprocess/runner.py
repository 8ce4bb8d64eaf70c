"""Run preprocessing over a dataset index: workers, resume, atomic outputs, summary.

Layout of ``OUT``::

    crops/<video_id>/<frame:06d>.png|jpg   aligned face crops (``--size`` square)
    crops/<video_id>/<frame:06d>.npy       (68, 2) float32 landmarks in crop pixels
    crops/<video_id>/done.json             the video's manifest rows + stats (resume marker)
    manifest.csv                           every crop of the selection (lorefd.data.manifest)
    failures.jsonl                         one line per skipped video/image, with its reason
    summary.json                           counts for the run

Every file is written through a temporary name and renamed, so a killed run leaves no
half-written crop, ``done.json`` or manifest; a video without ``done.json`` is redone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import multiprocessing.context
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from lorefd.data.images import ImageLoadError, is_video, load_rgb
from lorefd.data.landmarks import LandmarkBackendError
from lorefd.data.manifest import Sample, write_manifest
from lorefd.data.preprocess.adapters import DatasetIndex, MediaItem, index_dataset
from lorefd.data.preprocess.align import DEFAULT_CROP, align_face
from lorefd.data.preprocess.faces import FaceFinder, make_backend
from lorefd.data.preprocess.frames import VideoError, probe_video, read_frames, sample_indices
from lorefd.utils import atomic_path, atomic_write_json, atomic_write_text, log

DONE_FILE = "done.json"
FORMAT_VERSION = 1


@dataclass
class PreprocessOptions:
    """Everything that shapes the outputs (see ``lorefd preprocess --help``)."""

    frames: int = 32
    every: int | None = None
    size: int = 224
    margin: float = 0.25
    crop: str = DEFAULT_CROP
    image_format: str = "png"
    quality: int = 95
    detector: str = "dlib"
    retinaface_weights: str | None = None
    detect_side: int = 640
    track_face_side: int = 100
    workers: int = 1
    decode_threads: int = 0
    progress: bool | None = None

    @classmethod
    def for_model(cls, pre: dict[str, Any], **kwargs: Any) -> PreprocessOptions:
        """The options that crop faces as a model's training crops were made, from the
        ``preprocess`` block a bundle records (face detector, crop size, template margin,
        detection and tracking sides, frames per video); ``kwargs`` set the rest (workers,
        progress) and may override ``frames``."""
        fields = {"detector": pre["face_detector"], "size": int(pre["size"]),
                  "margin": float(pre["margin"]), "crop": str(pre.get("crop", DEFAULT_CROP))}
        for key in ("detect_side", "track_face_side", "frames"):
            if pre.get(key) is not None:
                fields[key] = int(pre[key])
        fields.update({k: v for k, v in kwargs.items() if v is not None})
        return cls(**fields)

    def cache_name(self) -> str:
        """A folder name for crops made with these options: readable, and unique per
        :meth:`fingerprint` (``s128-m0.1-dlib-f32-1a2b3c4d``)."""
        digest = hashlib.sha1(json.dumps(self.fingerprint(), sort_keys=True).encode())
        mode = "" if self.crop == DEFAULT_CROP else f"-{self.crop}"
        return (f"s{self.size}-m{self.margin:g}{mode}-{self.detector}-f{self.frames}"
                f"-{digest.hexdigest()[:8]}")

    def fingerprint(self) -> dict[str, Any]:
        """The options a finished video's outputs depend on (a change redoes the video)."""
        keys = ["frames", "every", "size", "margin", "image_format", "quality", "detector",
                "detect_side", "track_face_side"]
        if self.crop != DEFAULT_CROP:  # template crops keep the fingerprint they always had
            keys.append("crop")
        return {"version": FORMAT_VERSION, **{k: getattr(self, k) for k in keys}}


@dataclass
class RunSummary:
    """Counts of one run; ``to_dict`` is what ``summary.json`` holds."""

    dataset: str = ""
    root: str = ""
    out: str = ""
    videos: int = 0
    resumed: int = 0
    processed: int = 0
    ok: int = 0
    no_face: int = 0
    failed: int = 0
    short_videos: int = 0
    frames_sampled: int = 0
    faces_found: int = 0
    frames_without_face: int = 0
    multi_face_frames: int = 0
    crops: int = 0
    seconds: float = 0.0
    sampled_frames_per_second: float | None = None
    by_split: dict[str, int] = field(default_factory=dict)
    by_label: dict[str, int] = field(default_factory=dict)
    by_method: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------- outputs

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_relpath(video_id: str) -> Path:
    """A filesystem-safe relative folder for ``video_id``; a part that had to be changed gets a
    short hash of its original so two odd names never collide."""
    parts = []
    for part in video_id.split("/"):
        clean = _UNSAFE.sub("_", part).strip("._") or "_"
        if clean != part:
            clean = f"{clean[:80]}-{hashlib.sha1(part.encode()).hexdigest()[:8]}"
        parts.append(clean)
    return Path(*parts)


def write_image_atomic(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    """PNG or JPEG (by suffix) through a temporary file."""
    # PNG level 1: ~2x faster to write than OpenCV's default 3, a few % larger, same pixels
    params = ([cv2.IMWRITE_JPEG_QUALITY, int(quality)] if path.suffix == ".jpg"
              else [cv2.IMWRITE_PNG_COMPRESSION, 1])
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"could not encode {path.name}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def write_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def _source_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def load_done(unit_dir: Path, item: MediaItem, opts: PreprocessOptions) -> dict | None:
    """The finished record of a video, or None when it must be (re)done."""
    done = unit_dir / DONE_FILE
    if not done.is_file():
        return None
    try:
        record = json.loads(done.read_text())
        if record.get("options") != opts.fingerprint():
            return None
        if record.get("source_key") != _source_key(item.path):
            return None
    except (OSError, ValueError):
        return None
    return record


# ------------------------------------------------------------------------------ one video

_FINDERS: dict[tuple, FaceFinder] = {}


def _finder(opts: PreprocessOptions) -> FaceFinder:
    """This process's face finder for ``opts`` (built once: loading models is slow)."""
    key = (opts.detector, opts.retinaface_weights, opts.detect_side, opts.track_face_side)
    if key not in _FINDERS:
        backend = make_backend(opts.detector, opts.retinaface_weights)
        _FINDERS.clear()
        _FINDERS[key] = FaceFinder(backend, detect_side=opts.detect_side,
                                   track_face_side=opts.track_face_side)
    return _FINDERS[key]


def _init_worker(opts: PreprocessOptions) -> None:
    """Process-pool initializer: one OpenCV/torch thread per process, detector built once."""
    cv2.setNumThreads(1)
    if opts.detector == "retinaface":
        import torch

        torch.set_num_threads(1)
    _finder(opts)


def pool_context() -> multiprocessing.context.BaseContext:
    """``forkserver`` where available: forking a parent that already ran threaded codecs
    (PyAV/x264, OpenMP) can deadlock its children; the server imports lorefd once."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["lorefd.data.preprocess.runner"])
        return ctx
    return multiprocessing.get_context("spawn")


def _frames_of(item: MediaItem, opts: PreprocessOptions, stats: dict, warnings: list[str]):
    """Yield ``(frame_index, rgb)`` for the item (a still image is one frame, index -1)."""
    if item.is_image:
        rgb = load_rgb(item.path)
        stats["frames_expected"] = 1
        yield -1, rgb
        return
    info = probe_video(item.path)
    indices = sample_indices(info.frames, opts.frames, opts.every)
    stats["frames_expected"] = len(indices)
    stats["video_frames"] = info.frames
    if not opts.every and info.frames < opts.frames:
        stats["short"] = True
        warnings.append(f"only {info.frames} frames (< --frames {opts.frames}): keeping all")
    # with several worker processes, one decoder thread each avoids oversubscribing the cores
    threads = opts.decode_threads or (1 if opts.workers > 1 else 0)
    yield from read_frames(item.path, indices, threads=threads)


def process_item(item: MediaItem, out: str | Path, opts: PreprocessOptions) -> dict:
    """Sample, detect, align and write one video or image; return (and store) its record.

    Known bad input (unreadable file, no frames, no face) gives a record with ``status`` and
    ``reason`` that is stored like a success, so a re-run does not retry it; an unexpected
    error is returned but not stored (a re-run retries).
    """
    t0 = time.perf_counter()
    out = Path(out)
    unit_dir = out / "crops" / safe_relpath(item.video_id)
    stats = {"frames_expected": 0, "frames_sampled": 0, "faces_found": 0,
             "frames_without_face": 0, "multi_face_frames": 0, "short": False}
    warnings: list[str] = []
    rows: list[dict] = []
    record = {"video_id": item.video_id, "path": str(item.path), "status": "ok", "reason": "",
              "options": opts.fingerprint(), "stats": stats, "warnings": warnings, "rows": rows}
    store = True
    try:
        record["source_key"] = _source_key(item.path)
        if unit_dir.exists():  # leftovers of an interrupted or outdated run
            shutil.rmtree(unit_dir)
        finder = _finder(opts)
        finder.reset()
        ext = ".jpg" if opts.image_format in ("jpg", "jpeg") else ".png"
        for frame_index, rgb in _frames_of(item, opts, stats, warnings):
            stats["frames_sampled"] += 1
            face, n_faces = finder.find(rgb)
            if n_faces > 1:
                stats["multi_face_frames"] += 1
            if face is None:
                stats["frames_without_face"] += 1
                continue
            crop, points, _ = align_face(rgb, face.landmarks, opts.size, opts.margin, opts.crop)
            stem = f"{max(frame_index, 0):06d}"
            crop_path, lm_path = unit_dir / f"{stem}{ext}", unit_dir / f"{stem}.npy"
            write_image_atomic(crop_path, crop, opts.quality)
            write_npy_atomic(lm_path, points.astype(np.float32))
            stats["faces_found"] += 1
            rows.append({
                "path": crop_path.relative_to(out).as_posix(), "label": item.label,
                "dataset": item.dataset, "split": item.split, "video_id": item.video_id,
                "frame_index": frame_index, "method": item.method,
                "compression": item.compression, "source_id": item.source_id,
                "target_id": item.target_id,
                "box": " ".join(f"{v:.1f}" for v in face.box), "score": round(face.score, 4),
                "landmarks": lm_path.relative_to(out).as_posix(),
            })
        if stats["frames_sampled"] == 0:
            record.update(status="failed", reason="no frame could be decoded")
        elif not rows:
            record.update(status="no_face",
                          reason=f"no face in any of {stats['frames_sampled']} frames")
        if stats["frames_sampled"] < stats["frames_expected"] and not item.is_image:
            warnings.append(f"decoded {stats['frames_sampled']} of {stats['frames_expected']} "
                            "sampled frames (truncated or corrupt stream)")
        if stats["multi_face_frames"]:
            warnings.append(f"{stats['multi_face_frames']} frame(s) with several faces: kept the "
                            "largest / the one tracked from the previous frame")
    except (VideoError, ImageLoadError) as exc:
        record.update(status="failed", reason=str(exc))
    except LandmarkBackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop a dataset run
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        store = False
    record["seconds"] = round(time.perf_counter() - t0, 3)
    if store:
        atomic_write_json(unit_dir / DONE_FILE, record)
    return record


# --------------------------------------------------------------------------------- the run

def _log_record(record: dict) -> None:
    for w in record["warnings"]:
        log.warning("%s: %s", record["path"], w)
    if record["status"] != "ok":
        log.warning("skip %s: %s", record["path"], record["reason"])


def _run_items(items: list[MediaItem], out: Path, opts: PreprocessOptions) -> list[dict]:
    """Process ``items`` inline (1 worker) or in a process pool, with a progress bar."""
    records: list[dict] = []
    bar = tqdm(total=len(items), unit="video", desc="preprocess", dynamic_ncols=True,
               disable=(not opts.progress) if opts.progress is not None else None)
    try:
        if opts.workers <= 1 or len(items) <= 1:
            _init_worker(opts)
            for item in items:
                records.append(process_item(item, out, opts))
                _log_record(records[-1])
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=opts.workers, mp_context=pool_context(),
                                     initializer=_init_worker, initargs=(opts,)) as pool:
                futures = [pool.submit(process_item, item, out, opts) for item in items]
                for fut in as_completed(futures):
                    records.append(fut.result())
                    _log_record(records[-1])
                    bar.update()
    finally:
        bar.close()
    return records


def _rows_to_samples(out: Path, rows: list[dict]) -> list[Sample]:
    samples = []
    for r in rows:
        fields = dict(r)
        fields["path"] = str(out / r["path"])
        fields["landmarks"] = str(out / r["landmarks"]) if r["landmarks"] else ""
        samples.append(Sample(**fields))
    return samples


def _count_media(items: list[MediaItem]) -> str:
    """``"12 videos"``, ``"160 images"`` or ``"3 videos and 5 images"``."""
    videos = sum(1 for i in items if is_video(i.path))
    parts = [f"{n} {noun}{'s' if n != 1 else ''}" for n, noun in
             ((videos, "video"), (len(items) - videos, "image")) if n]
    return " and ".join(parts) or "0 videos or images"


def run_preprocess(kind: str, root: str | Path, out: str | Path, opts: PreprocessOptions,
                   split: str = "all", compressions: list[str] | None = None,
                   methods: list[str] | None = None, overwrite: bool = False,
                   limit: int | None = None) -> RunSummary:
    """Index ``root`` with the ``kind`` layout and preprocess it into ``out`` (resumable).

    Writes ``out/manifest.csv`` (every crop of this selection, finished earlier or now),
    ``out/failures.jsonl`` and ``out/summary.json``.
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # a manifest/summary temp file from a killed run
        stale.unlink(missing_ok=True)
    index: DatasetIndex = index_dataset(kind, root, split, compressions, methods)
    for note in index.missing:  # partial datasets are normal: said, and listed in summary.json
        (log.info if index.items else log.warning)("not present: %s", note)
    items = index.items[:limit] if limit else index.items
    what = _count_media(items)
    log.info("%s: %s selected (split %s)", kind, what, split)

    finished: dict[str, dict] = {}
    todo = []
    for item in items:
        record = None if overwrite else load_done(out / "crops" / safe_relpath(item.video_id),
                                                  item, opts)
        if record is None:
            todo.append(item)
        else:
            finished[item.video_id] = record
    if finished:
        log.info("resume: %d already done, %d to do", len(finished), len(todo))
    if todo:
        _finder(opts)  # a missing backend or weights fails here, once, with a clear message
    t_run = time.perf_counter()
    for record in _run_items(todo, out, opts):
        finished[record["video_id"]] = record
    run_seconds = time.perf_counter() - t_run

    summary = RunSummary(dataset=kind, root=str(root), out=str(out), videos=len(items),
                         resumed=len(items) - len(todo), processed=len(todo),
                         missing=index.missing, options=dataclasses.asdict(opts))
    rows, failures = [], []
    for item in items:  # index order: a stable manifest whatever the worker order
        record = finished[item.video_id]
        rows += record["rows"]
        st = record["stats"]
        setattr(summary, record["status"], getattr(summary, record["status"]) + 1)
        summary.short_videos += int(bool(st.get("short")))
        for key in ("frames_sampled", "faces_found", "frames_without_face", "multi_face_frames"):
            setattr(summary, key, getattr(summary, key) + int(st.get(key, 0)))
        if record["status"] != "ok":
            failures.append({**{k: record[k] for k in ("video_id", "path", "status", "reason")},
                             "label": item.label, "method": item.method})
    summary.crops = len(rows)
    for r in rows:
        for attr, key in (("by_split", r["split"] or "none"), ("by_label", str(r["label"])),
                          ("by_method", r["method"] or ("real" if r["label"] == 0 else "?"))):
            counts = getattr(summary, attr)
            counts[key] = counts.get(key, 0) + 1
    processed_frames = sum(finished[i.video_id]["stats"]["frames_sampled"] for i in todo)
    if todo and run_seconds > 0:
        summary.sampled_frames_per_second = round(processed_frames / run_seconds, 2)
    summary.seconds = round(time.perf_counter() - t0, 2)
    write_manifest(out / "manifest.csv", _rows_to_samples(out, rows))
    atomic_write_text(out / "failures.jsonl", "".join(json.dumps(f) + "\n" for f in failures))
    atomic_write_json(out / "summary.json", summary.to_dict())
    log.info("%s (%d resumed): %d ok, %d no face, %d failed; %d frames sampled, "
             "%d faces, %d frames without a face -> %s", what, summary.resumed,
             summary.ok, summary.no_face, summary.failed, summary.frames_sampled,
             summary.faces_found, summary.frames_without_face, out / "manifest.csv")
    return summary
