"""Drawing detection results onto images and writing them (PNG, MP4).

The OpenCV side of lorefd's figures: ``lorefd detect`` and ``lorefd serve`` overlays (heatmap
warped back from the aligned crop, face box, ``fake 0.87`` label, a colour bar saying what
the colours mean). The matplotlib figures are in :mod:`lorefd.evaluation.figures`. Below the
layers (like :mod:`lorefd.utils`) so that engines and evaluation can both use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from lorefd.utils import atomic_path

if TYPE_CHECKING:
    from lorefd.data.preprocess.crops import FaceCrop

VIDEO_FPS = 4
RED, GREEN, WHITE, GREY = (230, 40, 40), (40, 200, 60), (255, 255, 255), (60, 60, 60)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def label(img: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int],
          scale: float) -> None:
    """Text on a filled box, kept inside the image."""
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    h, w = img.shape[:2]
    x = int(np.clip(org[0], 0, max(0, w - tw - 4)))
    y = int(np.clip(org[1], th + base + 4, h - 1))
    cv2.rectangle(img, (x, y - th - base - 4), (x + tw + 4, y), colour, -1)
    cv2.putText(img, text, (x + 2, y - base - 2), FONT, scale, WHITE, thick, cv2.LINE_AA)


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


def colour_bar(img: np.ndarray, legend: str, scale: float, top: int = 0) -> int:
    """A JET colour bar top-left from ``top`` down: ``legend`` (what the colours mean), the
    bar, then ``low`` / ``high`` under its ends; drawn in place, returns the y below it."""
    h, w = img.shape[:2]
    small = max(0.35, scale * 0.7)
    line_h = cv2.getTextSize("Ag", FONT, small, 1)[0][1] + 10
    label(img, legend, (0, top + line_h), GREY, small)
    bw = int(min(w - 8, max(80, w * 0.3)))
    bh = max(6, int(h * 0.02))
    y0 = min(top + line_h + 2, max(0, h - bh))
    ramp = np.tile(np.linspace(0, 255, bw).astype(np.uint8), (bh, 1))
    img[y0:y0 + bh, 0:bw] = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)[..., ::-1][:h - y0]
    y = y0 + bh + line_h
    label(img, "low", (0, y), GREY, small)
    (tw, _), _ = cv2.getTextSize("high", FONT, small, max(1, round(small * 2)))
    label(img, "high", (bw - tw - 4, y), GREY, small)
    return y


def render_overlay(rgb: np.ndarray, crops: list[FaceCrop], threshold: float,
                   note: str | None = None, legend: str | None = None) -> np.ndarray:
    """The original image with each face's heatmap (warped back from the aligned crop with
    the inverse alignment transform) blended inside the face region, its box and
    ``fake 0.87`` / ``real 0.12``; ``note`` is written top-left; with ``legend`` and a heatmap
    drawn, a colour bar under it says what the colours mean."""
    h, w = rgb.shape[:2]
    out = rgb.astype(np.float32)
    drawn = False
    for c in crops:
        if c.heat is None:
            continue
        drawn = True
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
        label(out, f"{'fake' if fake else 'real'} {c.score:.2f}", (x0, y0 - 2), col, scale)
    top = note_text(out, note, scale * 0.8) if note else 0
    if legend and drawn:
        colour_bar(out, legend, scale, top)
    return out


def note_text(img: np.ndarray, text: str, scale: float) -> int:
    """``text`` top-left, shrunk (down to 0.35) and then wrapped to fit the image width;
    returns the y below it."""
    w = img.shape[1]
    width = cv2.getTextSize(text, FONT, scale, max(1, round(scale * 2)))[0][0]
    if width > w - 8:
        scale = max(0.35, scale * (w - 8) / width)
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        thick = max(1, round(scale * 2))
        if lines and cv2.getTextSize(trial, FONT, scale, thick)[0][0] <= w - 8:
            lines[-1] = trial
        else:
            lines.append(word)
    line_h = cv2.getTextSize("Ag", FONT, scale, 1)[0][1] + 10
    for i, line in enumerate(lines):
        label(img, line, (0, (i + 1) * line_h), GREY, scale)
    return len(lines) * line_h + 4


def shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``rgb`` with its longer side at most ``max_side`` (INTER_AREA) and the factor used."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb, 1.0
    factor = max_side / max(h, w)
    size = (max(2, round(w * factor)), max(2, round(h * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), factor


def umask_mode(path: Path) -> None:
    """Regular file permissions (temporary files are created 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An RGB image as PNG, written atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(buf.tobytes())
        umask_mode(tmp)


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
    umask_mode(path)


__all__ = ["colour_bar", "face_region", "label", "note_text", "render_overlay", "shrink",
           "umask_mode", "write_mp4", "write_png"]
