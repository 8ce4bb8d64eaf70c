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


STRIP_BG = (32, 32, 32)


def text_scale(width: int) -> float:
    """Font scale for a picture ``width`` px wide: legible on a 128-px crop and a 1080p frame."""
    return float(np.clip(width / 900, 0.35, 2.0))


def _fit(text: str, scale: float, width: int) -> float:
    """``scale`` shrunk until ``text`` fits in ``width`` px (not below 0.25)."""
    tw = cv2.getTextSize(text, FONT, scale, max(1, round(scale * 2)))[0][0]
    return scale if tw <= width else max(0.25, scale * width / tw)


def _line_height(scale: float) -> int:
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, max(1, round(scale * 2)))
    return th + base + max(4, round(scale * 8))


def _text(img: np.ndarray, text: str, x: int, y: int, scale: float,
          fill: tuple[int, int, int] | None = None) -> int:
    """``text`` with its top-left at (x, y), on a ``fill`` box when given; returns its width."""
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    pad = max(2, round(scale * 4))
    if fill is not None:
        cv2.rectangle(img, (x, y), (x + tw + 2 * pad, y + th + base + pad), fill, -1)
    cv2.putText(img, text, (x + pad, y + th + pad // 2), FONT, scale, WHITE, thick, cv2.LINE_AA)
    return tw + 2 * pad


def info_strip(width: int, verdicts: list[tuple[str, tuple[int, int, int]]],
               note: str | None = None, legend: str | None = None) -> np.ndarray:
    """The strip drawn *below* a heatmap, sized to its width: the verdicts (``fake 0.87`` on
    red, ``real 0.12`` on green), an optional note, and with ``legend`` a JET colour bar with
    what the colours mean and ``low`` / ``high`` under its ends. Its height depends only on
    ``width`` and on which parts are present, so every frame of a video gets the same."""
    scale = text_scale(width)
    lh = _line_height(scale)
    margin = max(2, round(scale * 6))
    inner = width - 2 * margin
    bar_h = max(6, round(lh * 0.45))
    height = margin + lh + (lh if note else 0) + ((lh + bar_h + lh) if legend else 0) + margin
    strip = np.full((height, width, 3), STRIP_BG, np.uint8)
    y, x = margin, margin
    for text, colour in verdicts or [("no face", GREY)]:
        s = _fit(text, scale, max(8, inner - (x - margin)))
        x += _text(strip, text, x, y, s, colour) + margin
    y += lh
    if note:
        _text(strip, note, margin, y, _fit(note, scale * 0.85, inner))
        y += lh
    if legend:
        _text(strip, legend, margin, y, _fit(legend, scale * 0.85, inner))
        y += lh
        ramp = np.tile(np.linspace(0, 255, inner).astype(np.uint8), (bar_h, 1))
        strip[y:y + bar_h, margin:margin + inner] = cv2.applyColorMap(
            ramp, cv2.COLORMAP_JET)[..., ::-1]
        y += bar_h
        small = _fit("low", scale * 0.75, inner // 3)
        _text(strip, "low", margin, y, small)
        tw = cv2.getTextSize("high", FONT, small, max(1, round(small * 2)))[0][0]
        _text(strip, "high", margin + inner - tw - 2 * max(2, round(small * 4)), y, small)
    return strip


def render_overlay(rgb: np.ndarray, crops: list[FaceCrop], threshold: float,
                   note: str | None = None, legend: str | None = None) -> np.ndarray:
    """The original image with each face's heatmap (warped back from the aligned crop with
    the inverse alignment transform) blended inside the face region only (the rest of the
    picture untouched) and its box, then below the picture the :func:`info_strip`: each
    face's ``fake 0.87`` / ``real 0.12``, ``note``, and with ``legend`` the colour bar."""
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
    verdicts = []
    many = len(crops) > 1
    for i, c in enumerate(crops, 1):
        fake = c.score >= threshold
        col = RED if fake else GREEN
        x0, y0, x1, y1 = (int(round(v)) for v in c.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), col, max(1, round(min(h, w) / 350)))
        if many:  # numbers tie the boxes to the verdicts below
            label(out, str(i), (x0, y0 - 2), col, text_scale(w) * 0.8)
        verdicts.append((f"{f'{i}: ' if many else ''}{'fake' if fake else 'real'} "
                         f"{c.score:.2f}", col))
    return np.vstack([out, info_strip(w, verdicts, note, legend)])


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


__all__ = ["face_region", "info_strip", "label", "render_overlay", "shrink", "text_scale",
           "umask_mode", "write_mp4", "write_png"]
