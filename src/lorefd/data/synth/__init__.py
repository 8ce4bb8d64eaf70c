"""Forgery synthesis from real faces and their 68 landmarks (no deepfake data needed).

``synthesize(kind, image, landmarks, rng, donor=None)`` is the entry point; ``kind`` is one
of :data:`KINDS`:

- ``sbi``: self-blended image (an augmented copy of the face blended into itself),
- ``swap``: landmark face swap from a donor of another identity (donor required),
- ``local``: only the eyes, nose or mouth blended (or swapped when a donor is given).

Every fake satisfies ``image == real`` where ``mask == 0`` unless ``jpeg`` is set: JPEG
recompression is the last, separable step (apply it to reals too when training).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lorefd.data.perturb import jpeg as jpeg_roundtrip
from lorefd.data.synth.core import SynthResult
from lorefd.data.synth.local import local_forgery
from lorefd.data.synth.masks import HULL_TOLERANCE, SynthError
from lorefd.data.synth.sbi import self_blend
from lorefd.data.synth.swap import face_swap

Donor = tuple[np.ndarray, np.ndarray]  # (image HxWx3 uint8, landmarks (68, 2))


def _sbi(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
         donor: Donor | None) -> SynthResult:
    return self_blend(image, landmarks, rng)


def _swap(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
          donor: Donor | None) -> SynthResult:
    if donor is None:
        raise SynthError("swap needs a donor face of another identity")
    return face_swap(image, landmarks, donor[0], donor[1], rng)


def _local(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
           donor: Donor | None) -> SynthResult:
    return local_forgery(image, landmarks, rng, donor=donor)


SYNTHESIZERS: dict[str, Callable[..., SynthResult]] = {
    "sbi": _sbi, "swap": _swap, "local": _local,
}
KINDS = tuple(SYNTHESIZERS)
NEEDS_DONOR = frozenset({"swap"})  # "local" uses a donor when given, never needs one
USES_DONOR = frozenset({"swap", "local"})


def synthesize(kind: str, image: np.ndarray, landmarks: np.ndarray | None,
               rng: np.random.Generator, donor: Donor | None = None,
               jpeg: int | None = None) -> SynthResult:
    """One fake of ``kind`` from a real ``image`` (HxWx3 uint8) and its landmarks.

    Args:
        rng: the only source of randomness: the same generator state gives the same fake.
        donor: ``(image, landmarks)`` of a different identity (``swap``; optional ``local``).
        jpeg: if given, JPEG-recompress the whole fake at this quality (changes pixels
            outside the mask too).

    Raises:
        SynthError: unusable input (missing/degenerate landmarks, no donor for ``swap``).
    """
    if kind not in SYNTHESIZERS:
        raise SynthError(f"unknown synthesis kind {kind!r}; choose from {', '.join(KINDS)}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SynthError(f"expected an HxWx3 uint8 image, got {image.shape} {image.dtype}")
    result = SYNTHESIZERS[kind](image, landmarks, rng, donor)
    if jpeg is not None:
        result.image = jpeg_roundtrip(result.image, jpeg)
        result.meta["jpeg"] = int(jpeg)
    return result


__all__ = [
    "HULL_TOLERANCE", "KINDS", "NEEDS_DONOR", "SYNTHESIZERS", "USES_DONOR", "Donor",
    "SynthError", "SynthResult", "synthesize",
]
