"""Local forgeries: only the eyes, the nose or the mouth are replaced.

Two modes: ``blend`` self-blends an augmented copy of the same face over the region (no
donor needed), ``swap`` warps the region of a different face onto it (needs a donor).
"""

from __future__ import annotations

import numpy as np

from lorefd.data.synth.augment import source_augment
from lorefd.data.synth.core import SynthResult, blend, color_transfer, paste, warp_face
from lorefd.data.synth.masks import REGIONS, SynthError, check_landmarks, face_roi, region_mask

REGION_WEIGHTS = {"eyes": 0.3, "right_eye": 0.1, "left_eye": 0.1, "nose": 0.2, "mouth": 0.3}
LOCAL_RATIOS = (0.5, 0.75, 1.0, 1.0)


def local_forgery(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                  donor: tuple[np.ndarray, np.ndarray] | None = None,
                  region: str | None = None, mode: str | None = None) -> SynthResult:
    """Replace one facial region of ``image``.

    Args:
        donor: ``(image, landmarks)`` of another identity, needed for ``mode="swap"``.
        region: one of ``masks.REGIONS``; drawn (``REGION_WEIGHTS``) when None.
        mode: ``"blend"`` or ``"swap"``; when None, swap half the time if a donor is given.
    """
    lm = check_landmarks(landmarks, image.shape)
    if region is None:
        names = list(REGION_WEIGHTS)
        p = np.array([REGION_WEIGHTS[n] for n in names])
        region = str(rng.choice(names, p=p / p.sum()))
    if region not in REGIONS:
        raise SynthError(f"unknown region {region!r}; choose from {', '.join(REGIONS)}")
    if mode is None:
        mode = "swap" if donor is not None and rng.random() < 0.5 else "blend"
    roi = face_roi(lm, image.shape)
    ys, xs = roi.slices
    target = image[ys, xs]
    lm_roi = roi.local(lm)
    mask, meta = region_mask(lm_roi, roi.shape, roi.face_size, region, rng)
    if mode == "blend":
        center = tuple(float(v) for v in lm_roi[REGIONS[region][0]].mean(0))
        source, aug = source_augment(target, rng, center, 0.5 * roi.face_size)
        meta.update(aug)
    elif mode == "swap":
        if donor is None:
            raise SynthError("local swap needs a donor face")
        dlm = check_landmarks(donor[1], donor[0].shape)
        source = warp_face(donor[0], dlm, lm, roi)
        source = color_transfer(source, target, mask, float(rng.uniform(0.6, 1.0)))
    else:
        raise SynthError(f"unknown local mode {mode!r}")
    ratio = float(rng.choice(LOCAL_RATIOS))
    mask = mask * ratio
    out, full_mask = paste(image, roi, blend(target, source, mask), mask)
    return SynthResult(out, full_mask, "local", meta={**meta, "mode": mode, "ratio": ratio})
