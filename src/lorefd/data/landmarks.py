"""68-point facial landmarks (iBUG 300-W layout), offline, cached per image.

Faces are found by dlib's HOG detector, imported lazily (training and evaluating from a
manifest with stored landmarks never needs it), on a downscaled copy of the image
(``max_side``); their 68 points by dlib's shape predictor run in NumPy
(:mod:`lorefd.data.shape_predictor`) on the full-resolution image.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lorefd.data.shape_predictor import shared_predictor
from lorefd.errors import UserError

# Index groups of the 68-point layout. "Left"/"right" are the subject's: the subject's right
# eyebrow (17-21) appears on the image's left.
JAW = list(range(0, 17))
RIGHT_EYEBROW = list(range(17, 22))
LEFT_EYEBROW = list(range(22, 27))
NOSE = list(range(27, 36))
RIGHT_EYE = list(range(36, 42))
LEFT_EYE = list(range(42, 48))
MOUTH = list(range(48, 68))
NUM_LANDMARKS = 68

# dlib's 68-point model (iBUG 300-W), converted for NumPy (lorefd.data.shape_predictor)
PREDICTOR_PATH = (Path(__file__).resolve().parents[1] / "assets" / "landmarks"
                  / "shape_predictor_68.safetensors")


class LandmarkBackendError(UserError, RuntimeError):
    """dlib (the face detector) is not installed, or a face finder's model is missing."""


@dataclass
class Face:
    """One detected face: box ``(x0, y0, x1, y1)`` and ``(68, 2)`` landmarks in pixels."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners ``(5, 2)`` derived from the 68 points."""
    lm = np.asarray(landmarks, dtype=np.float32)
    return np.stack([
        lm[RIGHT_EYE].mean(0),  # image-left eye
        lm[LEFT_EYE].mean(0),
        lm[30],
        lm[48],
        lm[54],
    ])


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise LandmarkBackendError(
            "dlib is not installed (it finds the faces in new images; part of lorefd's base "
            "install): pip install dlib-bin") from exc
    return dlib


class LandmarkDetector:
    """dlib HOG face detector + 68-point shape predictor.

    Args:
        max_side: the detector sees a copy whose longer side is at most this (speed); the
            predictor always runs on full resolution. ``0`` disables downscaling.
        upsample: dlib upsampling passes for small faces.
    """

    def __init__(self, max_side: int = 640, upsample: int = 0,
                 predictor_path: str | Path | None = None) -> None:
        dlib = _import_dlib()
        self.max_side = max_side
        self.upsample = upsample
        self._predictor = shared_predictor(Path(predictor_path or PREDICTOR_PATH).resolve())
        self._detector = dlib.get_frontal_face_detector()
        self._lock = threading.Lock()

    def _shape(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        return self._predictor(rgb, tuple(int(round(v)) for v in box))

    def detect(self, rgb: np.ndarray, max_side: int | None = None) -> list[Face]:
        """All faces in ``rgb`` (HxWx3 uint8), largest first.

        ``max_side`` overrides the detector's downscaling for this call (e.g. a small value
        for a region of interest around a face tracked from the previous frame).
        """
        rgb = np.ascontiguousarray(rgb)
        h, w = rgb.shape[:2]
        scale = 1.0
        small = rgb
        max_side = self.max_side if max_side is None else max_side
        if max_side and max(h, w) > max_side:
            scale = max_side / max(h, w)
            small = cv2.resize(rgb, (round(w * scale), round(h * scale)),
                               interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        with self._lock:
            rects, scores, _ = self._detector.run(gray, self.upsample, 0.0)
            faces = []
            for rect, score in zip(rects, scores, strict=False):
                box = (rect.left() / scale, rect.top() / scale,
                       rect.right() / scale, rect.bottom() / scale)
                faces.append(Face(box=box, score=float(score), landmarks=self._shape(rgb, box)))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def landmarks_in_box(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """68 points for a known face box (e.g. an aligned crop whose face fills the image)."""
        with self._lock:
            return self._shape(np.ascontiguousarray(rgb), box)

    def largest(self, rgb: np.ndarray) -> Face | None:
        faces = self.detect(rgb)
        return faces[0] if faces else None


class LandmarkCache:
    """Landmarks of plain image files, computed once and stored as JSON per image.

    The key is the absolute path, size and mtime, so an edited file is recomputed. A missing
    face is cached too (``null``) so an epoch does not retry it.
    """

    def __init__(self, cache_dir: str | Path, detector: LandmarkDetector | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._detector = detector

    @property
    def detector(self) -> LandmarkDetector:
        if self._detector is None:
            self._detector = LandmarkDetector()
        return self._detector

    def _key(self, path: Path) -> Path:
        st = path.stat()
        token = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
        return self.cache_dir / f"{hashlib.sha1(token).hexdigest()}.json"

    def get(self, path: str | Path, rgb: np.ndarray | None = None) -> np.ndarray | None:
        """``(68, 2)`` landmarks of the largest face in ``path``, or None when there is none."""
        from lorefd.data.images import load_rgb
        from lorefd.utils import atomic_write_text

        path = Path(path)
        entry = self._key(path)
        if entry.is_file():
            value = json.loads(entry.read_text())["landmarks"]
            return None if value is None else np.asarray(value, dtype=np.float32)
        face = self.detector.largest(load_rgb(path) if rgb is None else rgb)
        value = None if face is None else face.landmarks.round(2).tolist()
        atomic_write_text(entry, json.dumps({"path": str(path), "landmarks": value}))
        return None if face is None else face.landmarks
