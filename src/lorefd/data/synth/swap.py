"""Landmark face swap between two different real faces.

The donor face is warped onto the target's landmarks piecewise-affinely (Delaunay
triangles), its colours are matched to the target's face (Lab mean/std), and it is blended
over a deformed, feathered hull mask or Poisson-cloned (``cv2.seamlessClone``) into it.
"""

from __future__ import annotations

import cv2
import numpy as np

from lorefd.data.synth.core import SynthResult, blend, color_transfer, paste, warp_face
from lorefd.data.synth.masks import (
    SynthError,
    blur_mask,
    check_landmarks,
    face_roi,
    random_face_mask,
)

SWAP_RATIOS = (0.75, 1.0, 1.0, 1.0)
POISSON_P = 0.3


def poisson_clone(target: np.ndarray, source: np.ndarray, mask: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-blend ``source`` into ``target`` where ``mask > 0.5`` (ROI arrays).

    Returns the cloned ROI and the blend weight that reproduces it: the binary region
    feathered by one pixel, so pixels outside it keep the target's values exactly.
    """
    binary = (mask > 0.5).astype(np.uint8) * 255
    binary[:2], binary[-2:], binary[:, :2], binary[:, -2:] = 0, 0, 0, 0
    if binary.max() == 0:
        raise SynthError("empty Poisson mask")
    x, y, w, h = cv2.boundingRect(binary)
    # seamlessClone overwrites the mask it is given (OpenCV 4.x): hand it a copy.
    cloned = cv2.seamlessClone(source, target, binary.copy(), (x + w // 2, y + h // 2),
                               cv2.NORMAL_CLONE)
    weight = np.minimum(blur_mask(binary.astype(np.float32) / 255.0, 1.0) * 1.5, 1.0)
    return cloned, weight.astype(np.float32)


def face_swap(image: np.ndarray, landmarks: np.ndarray, donor_image: np.ndarray,
              donor_landmarks: np.ndarray, rng: np.random.Generator,
              variant: str | None = None, method: str | None = None) -> SynthResult:
    """The donor's face on ``image``: warp, colour transfer, then feather or Poisson blend.

    Args:
        variant: hull variant of the blend mask; drawn at random when None.
        method: ``"feather"`` or ``"poisson"``; drawn (``POISSON_P``) when None.
    """
    lm = check_landmarks(landmarks, image.shape)
    dlm = check_landmarks(donor_landmarks, donor_image.shape)
    if np.array_equal(dlm, lm) and np.array_equal(donor_image, image):
        raise SynthError("the donor is the target face itself; a swap needs another identity")
    roi = face_roi(lm, image.shape)
    ys, xs = roi.slices
    target = image[ys, xs]
    lm_roi = roi.local(lm)
    warped = warp_face(donor_image, dlm, lm, roi)
    mask, meta = random_face_mask(lm_roi, roi.shape, roi.face_size, rng, variant)
    strength = float(rng.uniform(0.6, 1.0))
    warped = color_transfer(warped, target, mask, strength)
    if method is None:
        method = "poisson" if rng.random() < POISSON_P else "feather"
    if method == "poisson":
        try:
            source, mask = poisson_clone(target, warped, mask)
        except cv2.error:  # OpenCV refuses odd masks: feather instead
            method, source = "feather", warped
    elif method == "feather":
        source = warped
    else:
        raise SynthError(f"unknown blend method {method!r}")
    ratio = float(rng.choice(SWAP_RATIOS)) if method == "feather" else 1.0
    mask = mask * ratio
    out, full_mask = paste(image, roi, blend(target, source, mask), mask)
    return SynthResult(out, full_mask, "swap",
                       meta={**meta, "method": method, "color": round(strength, 2),
                             "ratio": ratio})
