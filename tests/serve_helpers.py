"""Shared setup of the `lorefd serve` tests: one tiny bundle per session, a real and a fake face."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_detector_checkpoint
from media import FACES_DIR

from lorefd.models.export import export_bundle


def serve_bundle(factory: pytest.TempPathFactory) -> Path:
    """The tiny lre bundle of the detect tests, built once per session (cached on disk)."""
    folder = factory.getbasetemp() / "serve-bundle"
    out = folder / "model.lorefd"
    if not out.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        export_bundle(make_detector_checkpoint(folder), out, verify=False)
    return out


def bundled_real(index: int = 0) -> Path:
    """A bundled real FFHQ face (256x256 JPEG)."""
    return sorted(FACES_DIR.glob("*.jpg"))[index]


def bundled_fake(out: Path, target: int = 0, donor: int = 5) -> Path:
    """A face swap made from two bundled real faces and their stored landmarks (the package
    bundles no fake image; this is what ``lorefd synth`` makes from them)."""
    from lorefd.data.images import load_rgb
    from lorefd.data.synth import synthesize

    def face(i: int) -> tuple[np.ndarray, np.ndarray]:
        path = bundled_real(i)
        lm = np.load(FACES_DIR.parent / "landmarks" / f"{path.stem}.npy")
        return load_rgb(path), lm

    image, lm = face(target)
    fake = synthesize("swap", image, lm, np.random.default_rng(0), donor=face(donor))
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(fake.image, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 95])
    return out
