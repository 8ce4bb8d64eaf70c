"""Finding one face per frame: full-frame detection once, then a cheap tracked region.

The first frame of a video (and any frame where tracking is lost) runs the detector on a copy
downscaled to ``detect_side`` (then at twice that side if no face is found); later frames run it only on a region around the previous box,
scaled so the face is about ``track_face_side`` pixels (dlib's HOG window is 80 px). The 68
landmarks are always predicted on the full-resolution frame.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from lorefd.data.landmarks import Face, LandmarkDetector
from lorefd.errors import OptionError

Box = tuple[float, float, float, float]


class FaceBackend(Protocol):
    """Anything with ``detect(rgb, max_side) -> list[Face]`` (largest first, 68 landmarks)."""

    def detect(self, rgb: np.ndarray, max_side: int | None = None) -> list[Face]: ...


def make_backend(name: str = "dlib", retinaface_weights: str | None = None,
                 device: str = "cpu") -> FaceBackend:
    """The detector backend: ``dlib`` (offline default) or ``retinaface`` (the paper's)."""
    if name == "dlib":
        return LandmarkDetector(max_side=0)
    if name == "retinaface":
        from lorefd.data.preprocess.retinaface import RetinaFaceBackend

        return RetinaFaceBackend(weights=retinaface_weights, device=device)
    raise OptionError(f"unknown detector {name!r} (dlib or retinaface)")


def box_centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def nearest_face(faces: list[Face], previous: Box | None) -> Face:
    """The face whose centre is nearest the previous box's, else the largest."""
    if previous is None:
        return max(faces, key=lambda f: f.area)
    px, py = box_centre(previous)
    return min(faces, key=lambda f: (box_centre(f.box)[0] - px) ** 2
               + (box_centre(f.box)[1] - py) ** 2)


def _shift(face: Face, dx: float, dy: float) -> Face:
    b = face.box
    return Face(box=(b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy), score=face.score,
                landmarks=face.landmarks + np.array([dx, dy], dtype=np.float32))


class FaceFinder:
    """Per-video face finder with tracking; call :meth:`reset` between videos.

    Args:
        backend: a :class:`FaceBackend`.
        detect_side: longer side of the downscaled copy for full-frame detection (0: none).
        track_face_side: the face size (px) the tracked region is scaled to; 0 disables
            tracking (every frame is a full-frame detection).
        roi_scale: the tracked region is this many face sides wide, centred on the last box.
    """

    def __init__(self, backend: FaceBackend, detect_side: int = 640, track_face_side: int = 100,
                 roi_scale: float = 2.2) -> None:
        self.backend = backend
        self.detect_side = detect_side
        self.track_face_side = track_face_side
        self.roi_scale = roi_scale
        self.previous: Box | None = None

    def reset(self) -> None:
        self.previous = None

    def _track(self, rgb: np.ndarray, previous: Box) -> Face | None:
        h, w = rgb.shape[:2]
        side = max(previous[2] - previous[0], previous[3] - previous[1], 1.0)
        cx, cy = box_centre(previous)
        half = side * self.roi_scale / 2.0
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(w, int(cx + half)), min(h, int(cy + half))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        roi = rgb[y0:y1, x0:x1]
        max_side = round(max(x1 - x0, y1 - y0) * min(1.0, self.track_face_side / side))
        faces = self.backend.detect(roi, max_side=max_side)
        if not faces:
            return None
        return _shift(nearest_face(faces, (previous[0] - x0, previous[1] - y0,
                                           previous[2] - x0, previous[3] - y0)), x0, y0)

    def find(self, rgb: np.ndarray) -> tuple[Face | None, int]:
        """``(face, n_faces)``: the tracked (or largest) face and how many the full-frame pass
        saw (1 when the tracked region answered, 0 when no face)."""
        face = None
        if self.previous is not None and self.track_face_side:
            face = self._track(rgb, self.previous)
            if face is not None:
                self.previous = face.box
                return face, 1
        faces = self.backend.detect(rgb, max_side=self.detect_side)
        if not faces and self.detect_side and max(rgb.shape[:2]) > self.detect_side:
            # Faces too small for the downscaled copy (dlib's window is 80 px): one retry at
            # twice the side. Tracking makes this rare (first frame, lost face).
            faces = self.backend.detect(rgb, max_side=2 * self.detect_side)
        if not faces:
            return None, 0
        face = nearest_face(faces, self.previous)
        self.previous = face.box
        return face, len(faces)
