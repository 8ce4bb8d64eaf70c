"""Self-blended images (idea of Shiohara & Yamasaki, CVPR 2022), written from scratch.

Source and target are two versions of the same real face: the target is the image itself
(the background stays untouched), the source an augmented copy (colour, frequency, small
affine jitter, sometimes JPEG). The source is blended into the target through a deformed,
feathered landmark-hull mask scaled by a blend ratio drawn from a set.
"""

from __future__ import annotations

import numpy as np

from lorefd.data.synth.augment import source_augment
from lorefd.data.synth.core import SynthResult, blend, paste
from lorefd.data.synth.masks import check_landmarks, face_roi, random_face_mask

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


def self_blend(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
               variant: str | None = None) -> SynthResult:
    """One self-blended fake of ``image`` (HxWx3 uint8) with its ``(68, 2)`` landmarks.

    Args:
        variant: hull variant (``masks.HULL_VARIANTS``); drawn at random when None.
    """
    lm = check_landmarks(landmarks, image.shape)
    roi = face_roi(lm, image.shape)
    ys, xs = roi.slices
    target = image[ys, xs]
    lm_roi = roi.local(lm)
    center = tuple(float(v) for v in lm_roi.mean(0))
    source, aug = source_augment(target, rng, center, roi.face_size)
    mask, mask_meta = random_face_mask(lm_roi, roi.shape, roi.face_size, rng, variant)
    ratio = float(rng.choice(BLEND_RATIOS))
    mask = mask * ratio
    out, full_mask = paste(image, roi, blend(target, source, mask), mask)
    return SynthResult(out, full_mask, "sbi",
                       meta={**mask_meta, **aug, "ratio": ratio})
