"""Reading any image as HxWx3 uint8 RGB: modes, alpha, EXIF orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media import stills
from PIL import Image

from lorefd.data.images import load_rgb


@pytest.fixture()
def face() -> Image.Image:
    return Image.open(stills(1)[0]).convert("RGB").resize((120, 80))


def test_exif_orientation_is_applied(face: Image.Image, tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees clockwise
    face.save(tmp_path / "rot.png", exif=exif.tobytes())
    face.save(tmp_path / "plain.png")
    plain, rotated = load_rgb(tmp_path / "plain.png"), load_rgb(tmp_path / "rot.png")
    assert plain.shape == (80, 120, 3) and rotated.shape == (120, 80, 3)
    np.testing.assert_array_equal(rotated, np.rot90(plain, k=-1))


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "CMYK"])
def test_every_mode_gives_rgb_uint8(face: Image.Image, tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    face.convert(mode).save(path)
    arr = load_rgb(path)
    assert arr.shape == (80, 120, 3) and arr.dtype == np.uint8 and arr.flags.c_contiguous
    if mode in ("RGB", "RGBA"):
        np.testing.assert_array_equal(arr, np.asarray(face))  # opaque alpha: unchanged
