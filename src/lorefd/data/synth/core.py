"""Shared pieces of the synthesisers: the result type, alpha blending, landmark warping.

Blending contract: the fake is ``target + mask * (source - target)`` rounded to uint8, with
``mask`` the returned :attr:`SynthResult.mask`. Where the mask is 0 the fake equals the real
image bit for bit, which the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.spatial import Delaunay, QhullError

from lorefd.data.synth.masks import Roi, SynthError


@dataclass
class SynthResult:
    """A synthesised fake: ``image`` HxWx3 uint8, ``mask`` HxW float32 blend weight in [0, 1]."""

    image: np.ndarray
    mask: np.ndarray
    kind: str
    label: int = 1
    meta: dict[str, Any] = field(default_factory=dict)


def blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``target + mask * (source - target)`` as uint8; exactly ``target`` where mask is 0."""
    t = target.astype(np.float32)
    out = t + mask[..., None] * (source.astype(np.float32) - t)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def paste(image: np.ndarray, roi: Roi, roi_image: np.ndarray, roi_mask: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """Put a blended ROI back into a copy of ``image``; the full-size mask is 0 elsewhere."""
    out = image.copy()
    ys, xs = roi.slices
    out[ys, xs] = roi_image
    mask = np.zeros(image.shape[:2], np.float32)
    mask[ys, xs] = roi_mask
    return out, mask


def _boundary_points(roi: Roi) -> np.ndarray:
    """ROI corners and edge midpoints (8 points, image pixels)."""
    x0, y0, x1, y1 = roi.x0, roi.y0, roi.x1 - 1, roi.y1 - 1
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([[x0, y0], [xm, y0], [x1, y0], [x1, ym], [x1, y1], [xm, y1], [x0, y1],
                     [x0, ym]], np.float32)


def piecewise_affine_maps(dst_points: np.ndarray, src_points: np.ndarray, roi: Roi
                          ) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps that carry ``src_points`` onto ``dst_points`` over the whole ROI.

    The destination landmarks plus the ROI border are Delaunay-triangulated; border points
    follow a similarity transform fitted to the landmarks, so the warp is defined (and
    smooth) outside the face hull too. Each triangle gets its own affine map.
    """
    sim, _ = cv2.estimateAffinePartial2D(dst_points, src_points)
    if sim is None:
        raise SynthError("cannot fit a similarity between the two landmark sets")
    border = _boundary_points(roi)
    dst = np.concatenate([dst_points, border]).astype(np.float64)
    src = np.concatenate([src_points, border @ sim[:, :2].T + sim[:, 2]]).astype(np.float64)
    try:
        tri = Delaunay(dst, qhull_options="QJ").simplices
    except (QhullError, ValueError) as exc:
        raise SynthError(f"landmark triangulation failed: {exc}") from exc
    # Affine per triangle: [x', y'] = A @ [x, y, 1], solved from its three vertex pairs.
    dst_h = np.concatenate([dst[tri], np.ones((len(tri), 3, 1))], axis=2)  # (T, 3, 3)
    det = np.linalg.det(dst_h)
    ok = np.abs(det) > 1e-6
    coeffs = np.tile(sim.astype(np.float64)[None], (len(tri) + 1, 1, 1))  # last: similarity
    if ok.any():
        sol = np.linalg.solve(dst_h[ok], src[tri[ok]])  # (T', 3, 2)
        coeffs[:-1][ok] = sol.transpose(0, 2, 1)
    h, w = roi.shape
    ids = np.full((h, w), len(tri), np.int32)  # pixels no triangle covers: similarity
    local = dst[:, :2] - (roi.x0, roi.y0)
    for t in np.nonzero(ok)[0]:
        cv2.fillConvexPoly(ids, np.round(local[tri[t]]).astype(np.int32), int(t))
    xs, ys = np.meshgrid(np.arange(roi.x0, roi.x1, dtype=np.float32),
                         np.arange(roi.y0, roi.y1, dtype=np.float32))
    c = coeffs.astype(np.float32)[ids]  # (h, w, 2, 3)
    map_x = c[..., 0, 0] * xs + c[..., 0, 1] * ys + c[..., 0, 2]
    map_y = c[..., 1, 0] * xs + c[..., 1, 1] * ys + c[..., 1, 2]
    return map_x, map_y


def warp_face(source: np.ndarray, source_lm: np.ndarray, target_lm: np.ndarray, roi: Roi
              ) -> np.ndarray:
    """The source face piecewise-affinely warped onto the target landmarks, ROI-sized."""
    map_x, map_y = piecewise_affine_maps(target_lm, source_lm, roi)
    return cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def color_transfer(source: np.ndarray, target: np.ndarray, weight: np.ndarray,
                   strength: float = 1.0) -> np.ndarray:
    """Match ``source``'s Lab mean/std to ``target``'s over pixels where ``weight > 0.5``.

    Reinhard-style transfer on 8-bit Lab, applied as one per-channel lookup table;
    ``strength`` in [0, 1] interpolates between no change and full transfer.
    """
    sel = weight > 0.5
    if sel.sum() < 16:
        return source
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB)
    tgt = cv2.cvtColor(target, cv2.COLOR_RGB2LAB)
    sel8 = sel.astype(np.uint8)
    mu_s, sd_s = (v.ravel().astype(np.float32) for v in cv2.meanStdDev(src, mask=sel8))
    mu_t, sd_t = (v.ravel().astype(np.float32) for v in cv2.meanStdDev(tgt, mask=sel8))
    sd_s, sd_t = sd_s + 1e-3, sd_t + 1e-3
    gain = 1.0 + strength * (np.clip(sd_t / sd_s, 0.5, 2.0) - 1.0)
    x = np.arange(256, dtype=np.float32)[None, :]
    table = (x - mu_s[:, None]) * gain[:, None] + mu_s[:, None] + strength * (mu_t - mu_s)[:, None]
    table = np.clip(np.round(table), 0, 255).astype(np.uint8)
    out = cv2.LUT(src, np.ascontiguousarray(table.T[:, None, :]))
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB)
