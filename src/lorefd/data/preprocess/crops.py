"""Faces of a photo or video frame cropped exactly as ``lorefd preprocess`` crops training data.

Shared by ``lorefd detect`` and ``lorefd serve``: the face detector (:mod:`.faces`), the
alignment (:mod:`.align`) with the crop mode, size and margin recorded at preprocessing, then the
training resize (:func:`~lorefd.data.images.resize_square`). Crops are numpy arrays,
the input of both runtimes (PyTorch and ONNX Runtime); nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from lorefd.data.images import resize_square, to_chw
from lorefd.data.landmarks import Face
from lorefd.data.preprocess.align import DEFAULT_CROP, align_face
from lorefd.data.preprocess.faces import FaceBackend, FaceFinder, make_backend

# A second, third... face in an image must reach this face-detector score (dlib: HOG margin;
# RetinaFace: probability); the largest face is always scored.
EXTRA_FACE_MIN_SCORE = {"dlib": 0.3, "retinaface": 0.8}


@dataclass
class FaceCrop:
    """One aligned face: detector input, and what is needed to map results back."""

    box: tuple[float, float, float, float]
    matrix: np.ndarray  # 2x3, original image -> aligned crop of side ``crop_size``
    image: np.ndarray  # (3, S, S) float32 in [0, 1], S = detector image size
    landmarks: np.ndarray | None = None  # (68, 2) in the original image
    frame_index: int | None = None
    score: float = float("nan")
    heat: np.ndarray | None = None  # (crop_size, crop_size) in [0, 1], or None

    def scaled(self, factor: float) -> FaceCrop:
        """The same face in an image resized by ``factor`` (for drawing on a smaller copy)."""
        matrix = self.matrix.copy()
        matrix[:, :2] /= factor
        return dataclasses.replace(
            self, box=tuple(v * factor for v in self.box), matrix=matrix,
            landmarks=None if self.landmarks is None else self.landmarks * factor)


@dataclass
class FacePipeline:
    """The preprocessing a model was trained with: face detector, alignment, crop, resize."""

    backend: FaceBackend
    crop_size: int
    margin: float
    image_size: int
    detect_side: int
    track_face_side: int
    frames: int
    extra_face_min_score: float = EXTRA_FACE_MIN_SCORE["dlib"]
    crop_mode: str = DEFAULT_CROP  # ``template`` or ``box`` (:mod:`.align`)
    # how ``backend`` was made (name, RetinaFace weights, device), for :meth:`fresh`
    backend_args: tuple[str, str | None, str] = ("dlib", None, "cpu")

    @classmethod
    def from_preprocess(cls, pre: dict[str, Any], image_size: int,
                        retinaface_weights: str | None = None,
                        device: str = "cpu") -> FacePipeline:
        """From the ``preprocess`` block a bundle records and the detector's input size."""
        backend = make_backend(pre["face_detector"], retinaface_weights, device)
        return cls(backend=backend, crop_size=int(pre["size"]), margin=float(pre["margin"]),
                   image_size=int(image_size), detect_side=int(pre["detect_side"]),
                   track_face_side=int(pre["track_face_side"]), frames=int(pre["frames"]),
                   extra_face_min_score=EXTRA_FACE_MIN_SCORE.get(pre["face_detector"], 0.5),
                   crop_mode=str(pre.get("crop", DEFAULT_CROP)),
                   backend_args=(pre["face_detector"], retinaface_weights, device))

    def fresh(self) -> FacePipeline:
        """The same pipeline with a face detector of its own (detectors are not shared between
        threads: one per worker of :func:`lorefd.engines.detect.detect_paths`)."""
        return dataclasses.replace(self, backend=make_backend(*self.backend_args))

    @classmethod
    def from_bundle(cls, bundle: Any, retinaface_weights: str | None = None,
                    device: str = "cpu") -> FacePipeline:
        """From a loaded :class:`~lorefd.models.bundle.Bundle` (duck-typed: data does not
        import models)."""
        return cls.from_preprocess(bundle.preprocess, int(bundle.detector.image_size),
                                   retinaface_weights, device)

    def crop(self, rgb: np.ndarray, face: Face, frame_index: int | None = None) -> FaceCrop:
        """Align exactly as ``lorefd preprocess`` does, then resize as training does."""
        crop, _, matrix = align_face(rgb, face.landmarks, self.crop_size, self.margin,
                                     self.crop_mode)
        image = to_chw(resize_square(crop, self.image_size))
        return FaceCrop(box=tuple(float(v) for v in face.box), matrix=matrix, image=image,
                        landmarks=np.asarray(face.landmarks, np.float32), frame_index=frame_index)

    def faces(self, rgb: np.ndarray) -> tuple[list[Face], int]:
        """Faces of a still image, largest first, and how many weak extra detections were
        dropped: the largest face is always kept (as in training), others only when the face
        detector is confident (dlib's HOG fires on textured backgrounds at low scores)."""
        faces = self.backend.detect(rgb, max_side=self.detect_side)
        keep = faces[:1] + [f for f in faces[1:] if f.score >= self.extra_face_min_score]
        return keep, len(faces) - len(keep)

    def finder(self) -> FaceFinder:
        """A face tracker for one video."""
        return FaceFinder(self.backend, detect_side=self.detect_side,
                          track_face_side=self.track_face_side)


__all__ = ["EXTRA_FACE_MIN_SCORE", "FaceCrop", "FacePipeline"]
