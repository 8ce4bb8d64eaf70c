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


def _pil_rgb(path: Path) -> np.ndarray:
    """The reference decoding: PIL, orientation applied, converted to RGB."""
    from PIL import ImageOps

    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


@pytest.mark.parametrize("options", [
    {"quality": 90, "subsampling": 2},  # 4:2:0, the usual camera and web JPEG
    {"quality": 50, "subsampling": 1},  # 4:2:2
    {"quality": 98, "subsampling": 0},  # 4:4:4
    {"quality": 85, "subsampling": 2, "progressive": True},
])
def test_jpeg_pixels_equal_pil(tmp_path: Path, options: dict) -> None:
    """Plain colour JPEGs take OpenCV's decoder (faster): the pixels must be PIL's exactly,
    or crops, and scores, would change with the reader."""
    img = Image.open(stills(1)[0]).convert("RGB").resize((333, 517))  # odd sides
    img.save(tmp_path / "x.jpg", **options)
    np.testing.assert_array_equal(load_rgb(tmp_path / "x.jpg"), _pil_rgb(tmp_path / "x.jpg"))


@pytest.mark.parametrize("kind", ["rotated", "grey", "cmyk"])
def test_other_jpegs_read_as_pil_reads_them(face: Image.Image, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.jpg"
    if kind == "rotated":
        exif = Image.Exif()
        exif[0x0112] = 8
        face.save(path, exif=exif.tobytes())
    else:
        face.convert({"grey": "L", "cmyk": "CMYK"}[kind]).save(path)
    arr = load_rgb(path)
    np.testing.assert_array_equal(arr, _pil_rgb(path))
    assert arr.shape == ((120, 80, 3) if kind == "rotated" else (80, 120, 3))


@pytest.mark.parametrize("kept", [0.33, 0.95])
def test_a_cut_jpeg_is_a_clear_error(face: Image.Image, tmp_path: Path, kept: float) -> None:
    """Not a half-grey image scored as if whole (libjpeg's default for a short file)."""
    from lorefd.data.images import ImageLoadError

    face.save(tmp_path / "x.jpg")
    data = (tmp_path / "x.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(ImageLoadError):
        load_rgb(tmp_path / "cut.jpg")
