"""Reading images of any common mode as 8-bit RGB, with a clear reason when that is impossible."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lorefd.errors import UserError

if TYPE_CHECKING:
    import torch

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}

# Decompression-bomb guard: refuse images above this many pixels (a 16k x 16k photo is fine).
MAX_PIXELS = 300_000_000
# Photos screened by detect and serve: 64 MP is above any camera's; a 9400 x 9400 PNG of a few
# hundred KB would otherwise cost 1.5 GB of memory and seconds of the only serve worker.
SCREEN_MAX_PIXELS = 64_000_000
# ... and by bytes: the decoded samples (width x height x channels x bytes per sample) of an
# image are budgeted at 3 bytes a pixel of the pixel limit (a 64 MP 8-bit RGB photo: 192 MB),
# so a 16-bit or float image (2-4 bytes a sample) or one with alpha gets fewer pixels. Wide
# (16-bit, 32-bit, float) images are then converted to 8 bits in strips of STRIP_PIXELS, so
# decoding costs the decoded image, the 3-byte RGB result and a few MB, never a float64 copy
# of the whole image (a 7990 x 7990 16-bit PNG of 124 KB took 1.9 GB).
BYTES_PER_PIXEL_BUDGET = 3
STRIP_PIXELS = 1 << 20
# bytes of one pixel's samples in each PIL mode (channels x bytes per sample); others: 4
SAMPLE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "RGB": 3, "YCbCr": 3,
                "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I;16": 2,
                "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4}
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class ImageLoadError(UserError, ValueError):
    """An image that cannot be read; ``str(exc)`` is the reason for the skip log."""


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


ORIENTATION_TAG = 0x0112  # EXIF orientation; 1 = as stored


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode (L, LA, P, RGBA, CMYK, I;16, I, F) to HxWx3 uint8 RGB.

    Alpha is composited over black; 16/32-bit and float images are rescaled to 8 bit
    (:func:`wide_to_rgb`).
    """
    # exif_transpose and convert copy the image even when there is nothing to do (14 ms for a
    # 1024-px photo): only call them when the orientation or the mode needs it
    if img.getexif().get(ORIENTATION_TAG, 1) not in (0, 1):
        img = ImageOps.exif_transpose(img)
    if img.mode in WIDE_MODES:
        return wide_to_rgb(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        base = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(base, img)
    arr = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)


def _strips(img: Image.Image) -> list[tuple[int, int]]:
    rows = max(1, STRIP_PIXELS // max(1, img.width))
    return [(y, min(img.height, y + rows)) for y in range(0, img.height, rows)]


def wide_to_rgb(img: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit integer or float grey image as HxWx3 uint8, converted strip by strip
    (memory: the RGB result and one strip, never a float64 copy of the whole image).

    16-bit images span 0..65535; 32-bit integer and float images 0..65535 when they exceed
    255, else 0..255; a float image within [0, 1] spans 0..1 (not black). NaN or infinite
    samples are an :class:`ImageLoadError`, never a score."""
    strips = _strips(img)
    if img.mode.startswith("I;16"):
        hi = 65535.0
    else:
        top, low = -np.inf, np.inf
        for y0, y1 in strips:
            part = np.asarray(img.crop((0, y0, img.width, y1)))
            if img.mode == "F" and not np.isfinite(part).all():
                raise ImageLoadError("float image with NaN or infinite values")
            top, low = max(top, float(part.max())), min(low, float(part.min()))
        hi = (65535.0 if top > 255 else
              1.0 if img.mode == "F" and low >= 0.0 and top <= 1.0 else 255.0)
    out = np.empty((img.height, img.width, 3), np.uint8)
    for y0, y1 in strips:
        part = np.asarray(img.crop((0, y0, img.width, y1)), dtype=np.float64)
        out[y0:y1] = np.clip(part / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None]
    return out


def decoded_bytes(img: Image.Image) -> int:
    """Bytes of the decoded samples: width x height x channels x bytes per sample."""
    return img.width * img.height * SAMPLE_BYTES.get(img.mode, 4)


def _decode_jpeg(path: Path, img: Image.Image) -> np.ndarray | None:
    """A plain colour JPEG (no rotation to apply) decoded by OpenCV into its array, else None.

    The same libjpeg-turbo decoding as PIL's, pixel for pixel (tests/test_images.py), in half
    the time: PIL hands its pixels to numpy through two more copies (4 ms a 1024-px photo)."""
    if img.format != "JPEG" or img.mode != "RGB":
        return None
    if img.getexif().get(ORIENTATION_TAG, 1) not in (0, 1):
        return None
    bgr = cv2.imdecode(np.fromfile(path, np.uint8),
                       cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.shape[:2] != (img.height, img.width):
        return None  # PIL reads it, or says why not
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS,
             max_bytes: int | None = None) -> np.ndarray:
    """Read ``path`` as HxWx3 uint8 RGB or raise :class:`ImageLoadError` with the reason.
    Images above ``max_pixels``, or whose decoded samples (:func:`decoded_bytes`) exceed
    ``max_bytes`` (default :data:`BYTES_PER_PIXEL_BUDGET` bytes per pixel of ``max_pixels``),
    are refused from their header, before decoding."""
    if max_bytes is None:
        max_bytes = BYTES_PER_PIXEL_BUDGET * max_pixels
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"empty file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    raise ImageLoadError(f"image too large ({img.width}x{img.height} px, above "
                                         f"{max_pixels / 1e6:g} MP): {path}")
                if decoded_bytes(img) > max_bytes:
                    raise ImageLoadError(
                        f"image too large to decode ({img.width}x{img.height} px of "
                        f"{img.mode}: {decoded_bytes(img) / 1e6:.3g} MB, above "
                        f"{max_bytes / 1e6:g} MB): {path}")
                arr = _decode_jpeg(path, img)
                if arr is None:
                    img.load()
                    arr = to_rgb_array(img)
    except ImageLoadError as exc:
        if str(path) in str(exc):
            raise
        raise ImageLoadError(f"unreadable image {path}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"unreadable image {path}: {exc}") from exc
    if arr.ndim != 3 or arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ImageLoadError(f"image too small {arr.shape}: {path}")
    return arr


def walk_files(root: str | Path, skip_hidden: bool = True) -> tuple[list[Path], list[Path]]:
    """Every file under ``root`` (sorted as ``sorted(root.rglob("*"))`` would) and the
    dangling symbolic links found there.

    Symbolic links to folders are followed (each real folder once, so link loops end);
    entries starting with ``.`` are skipped with ``skip_hidden``. Callers report the dangling
    links: nothing is skipped without a word.
    """
    root = Path(root)
    files: list[Path] = []
    broken: list[Path] = []
    seen: set[Path] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(folder.iterdir())
        except OSError:
            broken.append(folder)
            continue
        for entry in entries:
            if skip_hidden and entry.name.startswith("."):
                continue
            if entry.is_dir():
                stack.append(entry)
            elif entry.is_file():
                files.append(entry)
            elif entry.is_symlink():
                broken.append(entry)
    return sorted(files), sorted(broken)


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize a crop to ``size x size`` (area interpolation when shrinking)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    interp = cv2.INTER_AREA if min(rgb.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def to_chw(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32 in ``[0, 1]``: the detector input of both runtimes."""
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 tensor in ``[0, 1]`` (:func:`to_chw`; torch imported here,
    so the ONNX path never loads it).

    Converted in numpy: torch's ``float()`` on a permuted view measured 10-18x slower here."""
    import torch

    return torch.from_numpy(to_chw(rgb))
