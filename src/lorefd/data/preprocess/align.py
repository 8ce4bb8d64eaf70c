"""How a face is cut out of a frame (Section IV-B: align and crop); two crop modes.

``template`` (the default): a similarity alignment to the standard 112x112 ArcFace 5-point
template (image-left eye, image-right eye, nose tip, image-left and image-right mouth corners),
shrunk by ``margin`` so the whole face, chin and eyebrows included, stays inside the crop, and
scaled to the crop ``size``. Roll is removed; every face has the same scale.

``box``: the face-X-ray / SBI way, no alignment: the axis-aligned box of the 68 landmarks,
widened by ``margin`` of its width on the left and right and of its height below, by twice that
above (the landmarks stop at the eyebrows: the forehead is where many blends end), cut out and
stretched to ``size`` x ``size``. Roll and the face's aspect stay as filmed.
"""

from __future__ import annotations

import cv2
import numpy as np

from lorefd.data.landmarks import five_points
from lorefd.errors import OptionError

# ArcFace (insightface) 5-point reference for a 112x112 crop, in the order of five_points().
ARCFACE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)
DEFAULT_MARGIN = 0.25
CROP_MODES = ("template", "box")
DEFAULT_CROP = "template"


def five_point_template(size: int = 224, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The ``(5, 2)`` template for a ``size`` crop; ``margin`` is added on each side as a
    fraction of the template box (0 gives the tight ArcFace crop)."""
    unit = ARCFACE_112 / 112.0
    return ((unit + margin) / (1.0 + 2.0 * margin) * size).astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) ``2x3`` matrix src->dst."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    x, y = src[:, 0], src[:, 1]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    # u = a*x - b*y + tx ; v = b*x + a*y + ty
    design = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])
    target = np.concatenate([dst[:, 0], dst[:, 1]])
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, target, rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]], dtype=np.float64)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``2x3`` affine ``matrix`` to ``(N, 2)`` points."""
    pts = np.asarray(points, dtype=np.float64)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def box_matrix(landmarks: np.ndarray, size: int, margin: float) -> np.ndarray:
    """The ``2x3`` matrix of a ``box`` crop: the landmarks' box, widened by ``margin`` (twice
    that above), onto ``size x size`` (an axis-aligned scale per axis and a translation)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    left, right = x0 - margin * w, x1 + margin * w
    top, bottom = y0 - 2.0 * margin * h, y1 + margin * h
    sx, sy = size / (right - left), size / (bottom - top)
    return np.array([[sx, 0.0, -sx * left], [0.0, sy, -sy * top]], dtype=np.float64)


def crop_matrix(landmarks: np.ndarray, size: int = 224, margin: float = DEFAULT_MARGIN,
                crop: str = DEFAULT_CROP) -> np.ndarray:
    """The ``2x3`` matrix from the frame to a ``size`` crop of the face with 68 ``landmarks``,
    in crop mode ``crop`` (``template`` or ``box``, see the module docstring)."""
    if crop == "template":
        return similarity_transform(five_points(landmarks), five_point_template(size, margin))
    if crop == "box":
        return box_matrix(landmarks, size, margin)
    raise OptionError(f"unknown crop mode {crop!r}; choose from {', '.join(CROP_MODES)}")


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = 224,
               margin: float = DEFAULT_MARGIN, crop: str = DEFAULT_CROP
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut out the face with 68 ``landmarks`` as crop mode ``crop`` says.

    Returns ``(crop, landmarks_in_crop, matrix)``: the ``size x size`` RGB crop, the 68 points
    mapped with the same matrix (crop pixel coordinates), and the ``2x3`` matrix itself.
    """
    matrix = crop_matrix(landmarks, size, margin, crop)
    # Downscaling a lot with bilinear sampling aliases; INTER_AREA is not available to
    # warpAffine, so pre-shrink big faces with a pyramid step when the scale is tiny.
    scale = float(min(np.hypot(matrix[0, 0], matrix[1, 0]), np.hypot(matrix[0, 1], matrix[1, 1])))
    src = rgb
    if scale < 0.5:
        factor = 2 ** int(np.floor(np.log2(1.0 / scale)))
        h, w = rgb.shape[:2]
        src = cv2.resize(rgb, (max(1, w // factor), max(1, h // factor)),
                         interpolation=cv2.INTER_AREA)
        shrink = np.array([w / src.shape[1], h / src.shape[0]])
        matrix_src = matrix.copy()
        matrix_src[:, 0] *= shrink[0]
        matrix_src[:, 1] *= shrink[1]
    else:
        matrix_src = matrix
    crop_rgb = cv2.warpAffine(src, matrix_src, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return crop_rgb, transform_points(landmarks, matrix), matrix
