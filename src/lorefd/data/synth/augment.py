"""Image augmentations that turn a face into a slightly different "source" for blending.

All functions take and return HxWx3 uint8 RGB and draw their randomness from the passed
``numpy.random.Generator`` only. :func:`jpeg` is the one global, separable step: apply it (or
not) after blending, to reals and fakes alike.
"""

from __future__ import annotations

import cv2
import numpy as np

from lorefd.data.perturb import jpeg


def _lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Apply a per-channel (3, 256) float lookup table, clipped to uint8."""
    table = np.clip(np.round(table), 0, 255).astype(np.uint8)
    return cv2.LUT(img, np.ascontiguousarray(table.T[:, None, :]))


def rgb_shift_brightness_contrast(img: np.ndarray, rng: np.random.Generator,
                                  shift: float = 20.0, brightness: float = 0.1,
                                  contrast: float = 0.1) -> np.ndarray:
    """Per-channel offsets, then a global brightness/contrast change, as one lookup table."""
    x = np.arange(256, dtype=np.float32)[None, :]
    offsets = rng.uniform(-shift, shift, size=(3, 1)).astype(np.float32)
    alpha = 1.0 + rng.uniform(-contrast, contrast)
    beta = rng.uniform(-brightness, brightness) * 255.0
    table = (x + offsets - 127.5) * alpha + 127.5 + beta
    return _lut(img, table)


def hue_saturation_value(img: np.ndarray, rng: np.random.Generator, hue: float = 10.0,
                         saturation: float = 20.0, value: float = 20.0) -> np.ndarray:
    """Shift hue by up to ``hue`` degrees, saturation and value by up to the given levels."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    dh = int(round(rng.uniform(-hue, hue) / 2))  # OpenCV hue unit is 2 degrees
    ds = rng.uniform(-saturation, saturation)
    dv = rng.uniform(-value, value)
    x = np.arange(256, dtype=np.float32)
    table = np.stack([(x + dh) % 180, x + ds, x + dv])
    return cv2.cvtColor(_lut(hsv, table), cv2.COLOR_HSV2RGB)


def down_up(img: np.ndarray, rng: np.random.Generator, low: float = 0.3,
            high: float = 0.8) -> np.ndarray:
    """Downscale by a random factor in ``[low, high]`` and back: loses high frequencies."""
    h, w = img.shape[:2]
    s = rng.uniform(low, high)
    small = cv2.resize(img, (max(2, round(w * s)), max(2, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_LINEAR if rng.random() < 0.5 else cv2.INTER_CUBIC
    return cv2.resize(small, (w, h), interpolation=interp)


def sharpen(img: np.ndarray, rng: np.random.Generator, amount: tuple[float, float] = (0.3, 1.0)
            ) -> np.ndarray:
    """Unsharp masking: boosts high frequencies."""
    a = rng.uniform(*amount)
    blurred = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 1.5))
    return cv2.addWeighted(img, 1.0 + a, blurred, -a, 0)


def affine_jitter(img: np.ndarray, rng: np.random.Generator, center: tuple[float, float],
                  face: float, translate: float = 0.03, scale: float = 0.05,
                  rotate: float = 2.0) -> np.ndarray:
    """Small random translation (fraction of the face size), scale and rotation (degrees)."""
    m = cv2.getRotationMatrix2D(center, rng.uniform(-rotate, rotate),
                                1.0 + rng.uniform(-scale, scale))
    m[:, 2] += rng.uniform(-translate, translate, size=2) * face
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def random_jpeg(img: np.ndarray, rng: np.random.Generator,
                quality: tuple[int, int] | list[int] | None, p: float = 1.0
                ) -> tuple[np.ndarray, int | None]:
    """With probability ``p`` recompress at a quality drawn from ``[lo, hi]``; returns it."""
    if not quality or rng.random() >= p:
        return img, None
    q = int(rng.integers(int(quality[0]), int(quality[-1]) + 1))
    return jpeg(img, q), q


def source_augment(img: np.ndarray, rng: np.random.Generator, center: tuple[float, float],
                   face: float) -> tuple[np.ndarray, dict]:
    """The self-blending source: colour change, a frequency change, affine jitter, maybe JPEG.

    Colour: RGB shift + brightness/contrast or hue/saturation/value (sometimes both).
    Frequency: down-up scaling or sharpening (or neither). The source differs from the
    target enough to leave a blending boundary, little enough to look like the same face.
    """
    meta: dict = {}
    r = rng.random()
    if r < 0.7:
        img = rgb_shift_brightness_contrast(img, rng)
        meta["rgb"] = True
    if r > 0.4:
        img = hue_saturation_value(img, rng)
        meta["hsv"] = True
    f = rng.random()
    if f < 0.4:
        img = down_up(img, rng)
        meta["freq"] = "down_up"
    elif f < 0.7:
        img = sharpen(img, rng)
        meta["freq"] = "sharpen"
    img = affine_jitter(img, rng, center, face)
    img, q = random_jpeg(img, rng, (40, 90), p=0.2)
    if q is not None:
        meta["source_jpeg"] = q
    return img, meta
