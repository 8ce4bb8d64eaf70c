"""``lorefd detect``: explainable forgery detection on images, folders and videos.

Callable from Python without argparse::

    report = detect_paths(["photo.jpg", "clips/"], "model.lorefd", heatmap_dir="heat",
                          json_path="report.json")

Pipeline per input (the face pipeline of ``lorefd preprocess``, with the parameters stored in
the bundle, so a face is cropped exactly as in training):

* image: every face the face detector finds (``detect_side`` downscale) is aligned to the
  5-point template (``size``, ``margin``), resized to the detector's ``image_size`` and scored;
  the file's score is the highest face score;
* video: ``frames`` frames evenly spaced (as ``lorefd preprocess``), one face per frame tracked
  with :class:`~lorefd.data.preprocess.faces.FaceFinder`, crops scored in batches; the video's
  score is the mean frame score, with the share of frames at or above the threshold;
* verdict: ``fake`` when the score is at or above the bundle's threshold, else ``real``;
* heatmap (optional): the detector's local difference attention (Eq. 2; mean over its layers),
  mapped from the aligned crop back onto the original image with the inverse alignment
  transform and blended as a colour map inside the crop region, with the face box and score;
  PNG per image, MP4 (h264, 4 fps) of the sampled frames per video. A detector without
  attention maps (the ``xception`` baseline) gets the box and score only, and says so.

Bad inputs never stop a run: each file gets a ``status``.

JSON report (``json_path``; also the return value): the schema of
:mod:`lorefd.engines.report_schema`, shared with ``lorefd serve`` (the score is
``p_fake``; a non-finite score is an ``error`` status, never a verdict).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from lorefd.data.dataset import resize_square, to_tensor
from lorefd.data.images import ImageLoadError, is_image, is_video, load_rgb, walk_files
from lorefd.data.landmarks import Face, LandmarkBackendError
from lorefd.data.preprocess.align import align_face
from lorefd.data.preprocess.faces import FaceBackend, FaceFinder, make_backend
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
from lorefd.models.bundle import Bundle, load_model
from lorefd.models.detectors import Detector
from lorefd.models.detectors.base import BLEND_MASK
from lorefd.utils import atomic_path, pick_device

log = logging.getLogger("lorefd")

VIDEO_FPS = 4
VIDEO_MAX_SIDE = 1280  # heatmap MP4 frames are downscaled to this longer side (memory, size)
IMAGE_MAX_SIDE = 2048  # image heatmaps are drawn on a copy at most this large (memory)
# A second, third... face in an image must reach this face-detector score (dlib: HOG margin;
# RetinaFace: probability); the largest face is always scored.
EXTRA_FACE_MIN_SCORE = {"dlib": 0.3, "retinaface": 0.8}
RED, GREEN, WHITE = (230, 40, 40), (40, 200, 60), (255, 255, 255)


# ------------------------------------------------------------------------------ faces
@dataclass
class FaceCrop:
    """One aligned face: detector input, and what is needed to map results back."""

    box: tuple[float, float, float, float]
    matrix: np.ndarray  # 2x3, original image -> aligned crop of side ``crop_size``
    image: torch.Tensor  # (3, S, S) in [0, 1], S = detector image size
    landmarks: np.ndarray | None = None  # (68, 2) in the original image
    frame_index: int | None = None
    score: float = float("nan")
    heat: np.ndarray | None = None  # (crop_size, crop_size) in [0, 1], or None

    def scaled(self, factor: float) -> FaceCrop:
        """The same face in an image resized by ``factor`` (for drawing on a smaller copy)."""
        matrix = self.matrix.copy()
        matrix[:, :2] /= factor
        return dataclasses.replace(
            self, box=tuple(v * factor for v in self.box), matrix=matrix,
            landmarks=None if self.landmarks is None else self.landmarks * factor)


@dataclass
class FacePipeline:
    """The bundle's preprocessing: face detector, alignment template, crop and resize."""

    backend: FaceBackend
    crop_size: int
    margin: float
    image_size: int
    detect_side: int
    track_face_side: int
    frames: int
    extra_face_min_score: float = EXTRA_FACE_MIN_SCORE["dlib"]

    @classmethod
    def from_bundle(cls, bundle: Bundle, retinaface_weights: str | None = None,
                    device: str = "cpu") -> FacePipeline:
        pre = bundle.preprocess
        backend = make_backend(pre["face_detector"], retinaface_weights, device)
        return cls(backend=backend, crop_size=int(pre["size"]), margin=float(pre["margin"]),
                   image_size=int(bundle.detector.image_size),
                   detect_side=int(pre["detect_side"]),
                   track_face_side=int(pre["track_face_side"]), frames=int(pre["frames"]),
                   extra_face_min_score=EXTRA_FACE_MIN_SCORE.get(pre["face_detector"], 0.5))

    def crop(self, rgb: np.ndarray, face: Face, frame_index: int | None = None) -> FaceCrop:
        """Align exactly as ``lorefd preprocess`` does, then resize as training does."""
        crop, _, matrix = align_face(rgb, face.landmarks, self.crop_size, self.margin)
        image = to_tensor(resize_square(crop, self.image_size))
        return FaceCrop(box=tuple(float(v) for v in face.box), matrix=matrix, image=image,
                        landmarks=np.asarray(face.landmarks, np.float32), frame_index=frame_index)

    def faces(self, rgb: np.ndarray) -> tuple[list[Face], int]:
        """Faces of a still image, largest first, and how many weak extra detections were
        dropped: the largest face is always kept (as in training), others only when the face
        detector is confident (dlib's HOG fires on textured backgrounds at low scores)."""
        faces = self.backend.detect(rgb, max_side=self.detect_side)
        keep = faces[:1] + [f for f in faces[1:] if f.score >= self.extra_face_min_score]
        return keep, len(faces) - len(keep)

    def finder(self) -> FaceFinder:
        return FaceFinder(self.backend, detect_side=self.detect_side,
                          track_face_side=self.track_face_side)


# ------------------------------------------------------------------------------ scoring
def attention_heat(attention: dict[str, torch.Tensor], size: int) -> np.ndarray | None:
    """Mean over layers of the attention maps, upsampled to ``size``, each face scaled to
    ``[0, 1]`` by its own maximum: ``(B, size, size)``; None without maps.

    A detector with a blend-mask head gives ``"blend mask"``: the probability that each pixel
    was blended in, shown as it is (not rescaled, so a clean real face stays dark)."""
    if not attention:
        return None
    if BLEND_MASK in attention:
        m = F.interpolate(attention[BLEND_MASK].float(), size=(size, size), mode="bilinear",
                          align_corners=False)[:, 0]
        return m.clamp(0, 1).cpu().numpy().astype(np.float32)
    ups = [F.interpolate(a.float(), size=(size, size), mode="bilinear", align_corners=False)
           for a in attention.values()]
    heat = torch.stack(ups).mean(0)[:, 0]
    peak = heat.flatten(1).amax(1).clamp_min(1e-8)[:, None, None]
    return (heat / peak).clamp(0, 1).cpu().numpy().astype(np.float32)


@torch.no_grad()
def score_crops(detector: Detector, crops: list[FaceCrop], device: torch.device,
                batch_size: int = 16, heat_size: int | None = None) -> None:
    """Fill ``score`` (and, with ``heat_size``, ``heat``) of every crop, in batches."""
    for start in range(0, len(crops), batch_size):
        chunk = crops[start:start + batch_size]
        images = torch.stack([c.image for c in chunk]).to(device)
        if heat_size:
            ex = detector.explain(images)
            probs = ex["prob"]
            heat = attention_heat(ex.get("attention") or {}, heat_size)
        else:
            probs, heat = detector.predict_proba(images), None
        for i, c in enumerate(chunk):
            c.score = float(probs[i])
            c.heat = None if heat is None else heat[i]


# ------------------------------------------------------------------------------ rendering
def _label(img: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int],
           scale: float) -> None:
    """Text on a filled box, kept inside the image."""
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    h, w = img.shape[:2]
    x = int(np.clip(org[0], 0, max(0, w - tw - 4)))
    y = int(np.clip(org[1], th + base + 4, h - 1))
    cv2.rectangle(img, (x, y - th - base - 4), (x + tw + 4, y), colour, -1)
    cv2.putText(img, text, (x + 2, y - base - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, thick,
                cv2.LINE_AA)


def face_region(c: FaceCrop, shape: tuple[int, int]) -> np.ndarray:
    """Soft ``[0, 1]`` mask of the face in the original image: the convex hull of the 68
    landmarks, enlarged 15% about its centre (forehead, cheeks) and feathered; the aligned crop
    square when landmarks are unknown."""
    h, w = shape
    if c.landmarks is None:
        ones = np.ones((int(c.heat.shape[0]),) * 2, np.float32)
        return cv2.warpAffine(ones, cv2.invertAffineTransform(c.matrix), (w, h))
    hull = cv2.convexHull(c.landmarks.astype(np.float32)).reshape(-1, 2)
    centre = hull.mean(0)
    hull = centre + (hull - centre) * 1.15
    mask = np.zeros((h, w), np.float32)
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1.0, cv2.LINE_AA)
    side = max(float(np.ptp(hull[:, 0])), float(np.ptp(hull[:, 1])), 1.0)
    k = int(side * 0.06) * 2 + 1
    return cv2.GaussianBlur(mask, (k, k), 0) if k > 1 else mask


def render_overlay(rgb: np.ndarray, crops: list[FaceCrop], threshold: float,
                   note: str | None = None) -> np.ndarray:
    """The original image with each face's attention heatmap (warped back from the aligned
    crop with the inverse alignment transform) blended inside the face region, its box and
    ``fake 0.87`` / ``real 0.12``; ``note`` is written top-left."""
    h, w = rgb.shape[:2]
    out = rgb.astype(np.float32)
    for c in crops:
        if c.heat is None:
            continue
        inv = cv2.invertAffineTransform(c.matrix)
        heat = cv2.warpAffine(c.heat, inv, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        colour = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
        colour = colour[..., ::-1].astype(np.float32)  # BGR -> RGB
        alpha = (face_region(c, (h, w)) * (0.2 + 0.5 * heat))[..., None]
        out = out * (1 - alpha) + colour * alpha
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    scale = max(0.4, min(h, w) / 700)
    for c in crops:
        fake = c.score >= threshold
        col = RED if fake else GREEN
        x0, y0, x1, y1 = (int(round(v)) for v in c.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), col, max(1, round(scale * 2)))
        _label(out, f"{'fake' if fake else 'real'} {c.score:.2f}", (x0, y0 - 2), col, scale)
    if note:
        _note(out, note, scale * 0.8)
    return out


def _note(img: np.ndarray, text: str, scale: float) -> None:
    """``text`` top-left, shrunk (down to 0.35) and then wrapped to fit the image width."""
    w = img.shape[1]
    width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, round(scale * 2)))[0][0]
    if width > w - 8:
        scale = max(0.35, scale * (w - 8) / width)
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        thick = max(1, round(scale * 2))
        if lines and cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] <= w - 8:
            lines[-1] = trial
        else:
            lines.append(word)
    line_h = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][1] + 10
    for i, line in enumerate(lines):
        _label(img, line, (0, (i + 1) * line_h), (60, 60, 60), scale)


def _umask_mode(path: Path) -> None:
    """Regular file permissions (temporary files are created 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(buf.tobytes())
        _umask_mode(tmp)


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = VIDEO_FPS) -> None:
    """RGB frames as an h264 MP4 (PyAV; mpeg4 when libx264 is missing), written atomically."""
    import av

    h, w = frames[0].shape[:2]
    h2, w2 = h - h % 2, w - w % 2  # yuv420p needs even sides
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with atomic_path(path, suffix=".mp4") as tmp, av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "23", "preset": "veryfast"}
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h2, :w2]),
                                               format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    _umask_mode(path)


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


@dataclass
class HeatmapNamer:
    """Unique heatmap paths mirroring the inputs' folders: ``DIR/<folder>/<stem>_heatmap.png``."""

    root: Path
    used: set[Path] = field(default_factory=set)

    def __call__(self, item: InputFile, ext: str) -> Path:
        parent = self.root / item.rel.parent
        stem = item.rel.stem
        for cand in (stem, f"{stem}_{item.rel.suffix.lstrip('.')}"):
            path = parent / f"{cand}_heatmap{ext}"
            if path not in self.used:
                break
        n = 2
        while path in self.used:
            path = parent / f"{stem}_{n}_heatmap{ext}"
            n += 1
        self.used.add(path)
        return path


# ------------------------------------------------------------------------------ per file
@dataclass
class Context:
    """What every file needs: the bundle, the face pipeline, device and options."""

    bundle: Bundle
    faces: FacePipeline
    device: torch.device
    threshold: float
    frames: int
    batch_size: int
    heatmaps: HeatmapNamer | None

    def heat_note(self, crops: list[FaceCrop]) -> str | None:
        """What to say on a heatmap when the detector gave no attention maps (baseline)."""
        if not crops or any(c.heat is not None for c in crops):
            return None
        return f"no attention map ({self.bundle.detector.name} detector): box and score only"


def _result(item: InputFile, kind: str | None) -> dict[str, Any]:
    return file_result(str(item.path), kind)


def _face_entry(c: FaceCrop) -> dict[str, Any]:
    return face_entry(c.box, c.score, c.frame_index)


def detect_image(item: InputFile, ctx: Context) -> dict[str, Any]:
    """Score every face of a still image (file score = max)."""
    res = _result(item, "image")
    try:
        rgb = load_rgb(item.path)
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
        small, factor = _shrink(rgb, IMAGE_MAX_SIDE)  # a 9000 px photo is drawn at 2048 px
        drawn = [c.scaled(factor) for c in crops] if factor != 1.0 else crops
        write_png(out, render_overlay(small, drawn, ctx.threshold, note))
        res["heatmap"] = str(out)
        if note:
            notes.append(note)
    res["message"] = "; ".join(notes)
    return res


def _shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``rgb`` with its longer side at most ``max_side`` (INTER_AREA) and the factor used."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb, 1.0
    factor = max_side / max(h, w)
    size = (max(2, round(w * factor)), max(2, round(h * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), factor


def _video_status(exc: VideoError) -> str:
    msg = str(exc)
    if msg.startswith("unsupported codec"):
        return UNSUPPORTED
    if msg == "no frames" or msg.startswith("no video stream"):
        return NO_FRAMES
    return UNREADABLE


def detect_video(item: InputFile, ctx: Context) -> dict[str, Any]:
    """Sample frames evenly, track one face, score each frame (video score = mean)."""
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
    try:
        for index, rgb in read_frames(item.path, indices):
            decoded += 1
            face, n_faces = finder.find(rgb)
            multi += n_faces > 1
            if face is not None:
                crops.append(ctx.faces.crop(rgb, face, index))
            if ctx.heatmaps is not None:
                kept.append((index, *_shrink(rgb, VIDEO_MAX_SIDE)))
    except VideoError as exc:
        res.update(status=_video_status(exc), message=str(exc))
        return res
    frames = {"count": len(crops), "mean": None, "share_above_threshold": None,
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
    score_crops(ctx.bundle.detector, crops, ctx.device, ctx.batch_size,
                ctx.faces.crop_size if ctx.heatmaps is not None else None)
    bad = nonfinite_error(c.score for c in crops)
    if bad:
        res.update(status=ERROR, message=bad, faces=[])
        return res
    scores = np.array([c.score for c in crops])
    mean = float(scores.mean())
    frames.update(mean=round(mean, 6),
                  share_above_threshold=round(float((scores >= ctx.threshold).mean()), 6))
    res.update({SCORE: round(mean, 6), "verdict": verdict(mean, ctx.threshold),
                "faces": [_face_entry(c) for c in crops]})
    if ctx.heatmaps is not None:
        by_frame = {c.frame_index: c for c in crops}
        heat_note = ctx.heat_note(crops)
        rendered = []
        for index, rgb, factor in kept:
            c = by_frame.get(index)
            note = heat_note if c is not None else "no face"
            c = c.scaled(factor) if c is not None and factor != 1.0 else c
            rendered.append(render_overlay(rgb, [c] if c else [], ctx.threshold,
                                           f"frame {index}" + (f" - {note}" if note else "")))
        out = ctx.heatmaps(item, ".mp4")
        write_mp4(out, rendered)
        res["heatmap"] = str(out)
        if heat_note:
            notes.append(heat_note)
    res["message"] = "; ".join(notes)
    return res


def _kind(path: Path) -> str | None:
    return "image" if is_image(path) else "video" if is_video(path) else None


def detect_file(item: InputFile, ctx: Context) -> dict[str, Any]:
    """One input of any kind; never raises for a bad file (status instead)."""
    t0 = time.perf_counter()
    try:
        if not item.path.exists():
            res = _result(item, _kind(item.path))
            res.update(status=UNREADABLE, message="broken symbolic link (target missing)"
                       if item.path.is_symlink() else "not found")
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
    return schema.model_info(bundle.manifest, str(bundle.path))


def detect_paths(paths: list[str | Path], bundle_path: str | Path | Bundle,
                 heatmap_dir: str | Path | None = None, device: str | None = None,
                 json_path: str | Path | None = None, frames: int | None = None,
                 threshold: float | None = None, batch_size: int | None = None,
                 retinaface_weights: str | None = None) -> dict[str, Any]:
    """Detect on images, videos and folders; returns (and writes to ``json_path``) the report.

    Raises :class:`~lorefd.models.bundle.BundleError` for a bad bundle; every input problem is a
    per-file ``status`` instead. ``frames``: sampled per video (default: the bundle's, 32);
    ``threshold``: overrides the bundle's decision threshold; ``batch_size``: faces per forward
    pass (default 4 on CPU, where larger batches were not faster, 32 on CUDA).
    """
    t0 = time.perf_counter()
    if isinstance(paths, (str, Path)):
        paths = [paths]
    dev = pick_device(device)
    batch_size = batch_size or (32 if dev.type == "cuda" else 4)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    # a bundle, a run folder or a checkpoint folder; or a Bundle already loaded (serve, benchmarks)
    bundle = (bundle_path.to(dev) if isinstance(bundle_path, Bundle)
              else load_model(bundle_path, dev))
    thr = bundle.threshold if threshold is None else float(threshold)
    pipeline = FacePipeline.from_bundle(bundle, retinaface_weights, str(dev))
    ctx = Context(bundle=bundle, faces=pipeline, device=dev, threshold=thr,
                  frames=int(frames or pipeline.frames), batch_size=max(1, batch_size),
                  heatmaps=HeatmapNamer(Path(heatmap_dir)) if heatmap_dir is not None else None)
    results = []
    for item in collect_inputs(paths):
        res = detect_file(item, ctx)
        log.info("%s: %s%s", item.path, res["status"],
                 f" P(fake) {res[SCORE]:.3f}" if res[SCORE] is not None else "")
        results.append(res)
    report = schema.build_report(results, model_info(bundle), thr, time.perf_counter() - t0,
                                 None if heatmap_dir is None else str(heatmap_dir))
    if json_path is not None:
        schema.write_json(json_path, report)
        _umask_mode(Path(json_path))
    return report


def processed_any(report: dict[str, Any]) -> bool:
    """True when at least one input could be looked at (scored, or searched for a face)."""
    return any(r["status"] in (OK, NO_FACE) for r in report["results"])


def format_table(report: dict[str, Any], width: int | None = None) -> str:
    """The printed table: path, type, faces/frames, score, verdict, status (and message)."""
    rows = [("PATH", "TYPE", "FACES/FRAMES", "P(FAKE)", "VERDICT", "STATUS")]
    for r in report["results"]:
        if r["type"] == "video" and r["frames"] is not None:
            ff = f"{r['frames']['count']}/{r['frames']['decoded']} fr"
        elif r["type"] == "image" and r["status"] in (OK, NO_FACE):
            ff = f"{len(r['faces'])} face" + ("s" if len(r["faces"]) != 1 else "")
        else:
            ff = "-"
        status = r["status"] + (f": {r['message']}" if r["message"] else "")
        rows.append((r["path"], r["type"] or "-", ff,
                     "-" if r[SCORE] is None else f"{r[SCORE]:.3f}", r["verdict"] or "-",
                     status))
    width = width or shutil.get_terminal_size((200, 24)).columns
    pw = min(max(len(r[0]) for r in rows), max(20, width - 60))
    lines = []
    for r in rows:
        path = r[0] if len(r[0]) <= pw else "..." + r[0][-(pw - 3):]
        lines.append(f"{path:<{pw}}  {r[1]:<5}  {r[2]:>12}  {r[3]:>7}  {r[4]:<7}  {r[5]}")
    s = report["summary"]
    lines.append(f"{s['inputs']} input(s): " + ", ".join(
        f"{s[k]} {k}" for k in STATUSES if s[k]) + f"; threshold {report['threshold']:.3f}; "
        f"{s['seconds']:.1f} s")
    return "\n".join(lines)


__all__ = ["STATUSES", "FaceCrop", "FacePipeline", "attention_heat", "collect_inputs",
           "detect_file", "detect_paths", "format_table", "processed_any", "render_overlay",
           "score_crops", "write_mp4"]
