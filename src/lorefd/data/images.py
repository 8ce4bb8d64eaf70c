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


class ImageLoadError(UserError, ValueError):
    """An image that cannot be read; ``str(exc)`` is the reason for the skip log."""


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


ORIENTATION_TAG = 0x0112  # EXIF orientation; 1 = as stored


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode (L, LA, P, RGBA, CMYK, I;16, I, F) to HxWx3 uint8 RGB.

    Alpha is composited over black; 16/32-bit and float images are rescaled to 8 bit.
    """
    # exif_transpose and convert copy the image even when there is nothing to do (14 ms for a
    # 1024-px photo): only call them when the orientation or the mode needs it
    if img.getexif().get(ORIENTATION_TAG, 1) not in (0, 1):
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        base = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(base, img)
    arr = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)


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


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read ``path`` as HxWx3 uint8 RGB or raise :class:`ImageLoadError` with the reason.
    Images above ``max_pixels`` are refused from their header, before decoding."""
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
                arr = _decode_jpeg(path, img)
                if arr is None:
                    img.load()
                    arr = to_rgb_array(img)
    except ImageLoadError:
        raise
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
