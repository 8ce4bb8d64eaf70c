"""Blend masks from 68 landmarks: hull variants, elastic deformation, erode/dilate, blur.

Every mask here is float32 in ``[0, 1]`` and lives in the coordinates of a region of interest
(:class:`Roi`) around the face, so the cost depends on the face size, not the image size.
The outward reach of every mask is bounded: :func:`limit_to_hull` multiplies it by a ramp
that is 1 inside the landmark hull and 0 beyond ``HULL_TOLERANCE * face_size`` outside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lorefd.data.landmarks import (
    JAW,
    LEFT_EYE,
    LEFT_EYEBROW,
    MOUTH,
    NOSE,
    NUM_LANDMARKS,
    RIGHT_EYE,
    RIGHT_EYEBROW,
)

# Masks never reach further than this fraction of the face size outside the 68-point hull.
HULL_TOLERANCE = 0.06
MIN_FACE_SIZE = 16.0  # pixels; smaller landmark sets are rejected

# Hull variants for whole-face blending; every one is a subset of the full 68-point hull.
HULL_VARIANTS: dict[str, list[int]] = {
    "full": list(range(NUM_LANDMARKS)),
    "inner": JAW[2:15] + RIGHT_EYEBROW + LEFT_EYEBROW,  # jaw corners trimmed
    "lower": JAW[1:16] + [29],  # below the nose bridge: cheeks, nose, mouth, chin
    "center": RIGHT_EYEBROW + LEFT_EYEBROW + NOSE + MOUTH,  # no jaw line
}

# Local regions: landmark indices and the outward margin as a fraction of the region's size.
REGIONS: dict[str, tuple[list[int], float]] = {
    "eyes": (RIGHT_EYE + LEFT_EYE, 0.12),
    "right_eye": (RIGHT_EYE, 0.35),
    "left_eye": (LEFT_EYE, 0.35),
    "nose": (NOSE, 0.25),
    "mouth": (MOUTH, 0.25),
}


class SynthError(ValueError):
    """Input a synthesiser cannot use (missing/degenerate landmarks); skip the sample."""


@dataclass(frozen=True)
class Roi:
    """Pixel box ``[y0:y1, x0:x1]`` around a face, and the face size in pixels."""

    x0: int
    y0: int
    x1: int
    y1: int
    face_size: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def local(self, points: np.ndarray) -> np.ndarray:
        """Points in image pixels -> ROI pixels."""
        return np.asarray(points, np.float32) - np.array([self.x0, self.y0], np.float32)


def check_landmarks(landmarks: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Validate ``(68, 2)`` landmarks for an image of ``shape``; raise :class:`SynthError`.

    Rejected: missing, wrong shape, non-finite, a face smaller than ``MIN_FACE_SIZE`` pixels,
    a degenerate hull, or more than half of the points outside the image.
    """
    if landmarks is None:
        raise SynthError("no landmarks")
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.shape != (NUM_LANDMARKS, 2):
        raise SynthError(f"expected (68, 2) landmarks, got {lm.shape}")
    if not np.isfinite(lm).all():
        raise SynthError("non-finite landmarks")
    h, w = shape[:2]
    inside = (lm[:, 0] >= 0) & (lm[:, 0] < w) & (lm[:, 1] >= 0) & (lm[:, 1] < h)
    if inside.sum() < NUM_LANDMARKS // 2:
        raise SynthError(f"{NUM_LANDMARKS - int(inside.sum())} of 68 landmarks outside the "
                         f"{w}x{h} image")
    if face_size(lm) < MIN_FACE_SIZE:
        raise SynthError(f"face too small ({face_size(lm):.1f} px)")
    if cv2.contourArea(cv2.convexHull(lm)) < 0.1 * face_size(lm) ** 2:
        raise SynthError("degenerate landmark hull")
    return lm


def face_size(landmarks: np.ndarray) -> float:
    """The longer side of the landmarks' bounding box, in pixels."""
    span = landmarks.max(0) - landmarks.min(0)
    return float(max(span[0], span[1]))


def face_roi(landmarks: np.ndarray, shape: tuple[int, ...], margin: float = 0.15) -> Roi:
    """The landmarks' bounding box grown by ``margin * face_size``, clipped to the image."""
    size = face_size(landmarks)
    pad = margin * size
    lo = np.floor(landmarks.min(0) - pad).astype(int)
    hi = np.ceil(landmarks.max(0) + pad).astype(int) + 1
    h, w = shape[:2]
    x0, y0 = max(0, int(lo[0])), max(0, int(lo[1]))
    x1, y1 = min(w, int(hi[0])), min(h, int(hi[1]))
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise SynthError("face box outside the image")
    return Roi(x0, y0, x1, y1, size)


def fill_hull(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Convex hull of ``points`` (ROI pixels) filled with 1.0 in a float32 ``shape`` array."""
    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8)
    return mask.astype(np.float32)


def hull_limit(landmarks_roi: np.ndarray, shape: tuple[int, int], reach: float) -> np.ndarray:
    """1 inside the 68-point hull, falling linearly to 0 at ``reach`` pixels outside it."""
    hull = fill_hull(landmarks_roi, shape).astype(np.uint8)
    dist = cv2.distanceTransform(1 - hull, cv2.DIST_L2, 3)
    return np.clip(1.0 - dist / max(reach, 1.0), 0.0, 1.0).astype(np.float32)


def limit_to_hull(mask: np.ndarray, landmarks_roi: np.ndarray, face: float) -> np.ndarray:
    """Clip ``mask`` to the face hull plus ``HULL_TOLERANCE * face`` pixels (soft ramp)."""
    return mask * hull_limit(landmarks_roi, mask.shape, HULL_TOLERANCE * face)


def elastic_deform(mask: np.ndarray, rng: np.random.Generator, amplitude: float,
                   grid: int = 6) -> np.ndarray:
    """Warp ``mask`` by a smooth random displacement field of at most ``amplitude`` pixels.

    The field is drawn on a coarse ``grid x grid`` lattice and upsampled bicubically, so it is
    smooth at any mask size and costs two small resizes and one remap.
    """
    if amplitude <= 0:
        return mask
    h, w = mask.shape
    coarse = rng.uniform(-amplitude, amplitude, size=(2, grid, grid)).astype(np.float32)
    dx = cv2.resize(coarse[0], (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(coarse[1], (w, h), interpolation=cv2.INTER_CUBIC)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)


def erode_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Erode (``radius < 0``) or dilate (``radius > 0``) by an elliptical kernel."""
    if radius == 0:
        return mask
    k = 2 * abs(radius) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    op = cv2.dilate if radius > 0 else cv2.erode
    return op(mask, kernel)


def blur_mask(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian feather with a kernel of radius ``ceil(2.5 sigma)``, renormalised to max 1."""
    if sigma <= 0:
        return mask
    k = 2 * int(np.ceil(2.5 * sigma)) + 1
    out = cv2.GaussianBlur(mask, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
    peak = float(out.max())
    return out / peak if peak > 0 else out


def random_face_mask(landmarks_roi: np.ndarray, shape: tuple[int, int], face: float,
                     rng: np.random.Generator, variant: str | None = None,
                     deform: bool = True) -> tuple[np.ndarray, dict]:
    """A whole-face blend mask: hull variant -> elastic -> erode/dilate -> blur -> hull limit.

    Returns the mask (float32, max 1 unless the hull limit cut it) and the drawn parameters.
    """
    if variant is None:
        variant = str(rng.choice(list(HULL_VARIANTS)))
    mask = fill_hull(landmarks_roi[HULL_VARIANTS[variant]], shape)
    amp = float(rng.uniform(0.0, 0.03) * face) if deform else 0.0
    mask = elastic_deform(mask, rng, amp)
    radius = int(round(rng.uniform(-0.06, 0.02) * face))
    mask = erode_dilate(mask, radius)
    if mask.max() <= 0:  # eroded away on a thin variant: fall back to the plain hull
        mask = fill_hull(landmarks_roi[HULL_VARIANTS[variant]], shape)
    sigma = float(rng.uniform(0.005, 0.03) * face)
    mask = blur_mask(mask, sigma)
    mask = limit_to_hull(mask, landmarks_roi, face)
    return mask, {"variant": variant, "elastic": round(amp, 2), "radius": radius,
                  "sigma": round(sigma, 2)}


def region_mask(landmarks_roi: np.ndarray, shape: tuple[int, int], face: float, region: str,
                rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A local blend mask around one facial region (eyes, nose, mouth), feathered.

    The region hull is grown by its margin (a fraction of the region's own size, jittered),
    lightly deformed and blurred, then limited to the face hull like every other mask.
    """
    if region not in REGIONS:
        raise SynthError(f"unknown region {region!r}; choose from {', '.join(REGIONS)}")
    idx, margin = REGIONS[region]
    pts = landmarks_roi[idx]
    size = face_size(pts)
    mask = fill_hull(pts, shape)
    radius = int(round(margin * rng.uniform(0.8, 1.3) * size))
    mask = erode_dilate(mask, max(radius, 1))
    amp = float(rng.uniform(0.0, 0.08) * size)
    mask = elastic_deform(mask, rng, amp, grid=4)
    sigma = float(rng.uniform(0.06, 0.15) * size)
    mask = blur_mask(mask, sigma)
    mask = limit_to_hull(mask, landmarks_roi, face)
    if mask.max() <= 0:
        raise SynthError(f"empty {region} mask")
    return mask, {"region": region, "radius": radius, "elastic": round(amp, 2),
                  "sigma": round(sigma, 2)}
