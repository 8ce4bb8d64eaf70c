"""Optional RetinaFace detector (the paper's, Section IV-B), via ``facexlib``.

RetinaFace gives boxes; the 68 landmarks the key-region masking needs still come from dlib's
shape predictor on the full-resolution frame. Weights are read from ``--retinaface-weights``,
``$LOREFD_RETINAFACE_WEIGHTS`` or ``~/.cache/lorefd/retinaface/``; only when none exists is a
download attempted, and an offline machine gets a clear error naming the file to provide.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lorefd.data.landmarks import Face, LandmarkBackendError, LandmarkDetector

WEIGHTS_FILE = "detection_Resnet50_Final.pth"
WEIGHTS_URL = f"https://github.com/xinntao/facexlib/releases/download/v0.1.0/{WEIGHTS_FILE}"
ENV_WEIGHTS = "LOREFD_RETINAFACE_WEIGHTS"
CACHE_DIR = Path.home() / ".cache" / "lorefd" / "retinaface"


def _import_facexlib() -> Any:
    try:
        from facexlib.detection import retinaface
    except ImportError as exc:
        raise LandmarkBackendError(
            "--detector retinaface needs facexlib: pip install facexlib "
            "(or use the offline default --detector dlib)") from exc
    return retinaface


def resolve_weights(weights: str | Path | None = None) -> Path:
    """The local weights file, downloading it into the cache only when none is given/found."""
    candidates = [weights, os.environ.get(ENV_WEIGHTS), CACHE_DIR / WEIGHTS_FILE]
    for cand in candidates:
        if cand and Path(cand).is_file():
            return Path(cand)
    if weights:
        raise LandmarkBackendError(f"RetinaFace weights not found: {weights}")
    try:
        import torch.hub

        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(CACHE_DIR / WEIGHTS_FILE), progress=False)
    except Exception as exc:  # noqa: BLE001 - any network/SSL/disk error means the same thing
        raise LandmarkBackendError(
            f"RetinaFace weights could not be obtained ({type(exc).__name__}: {exc}). Download "
            f"{WEIGHTS_URL} on a connected machine and pass --retinaface-weights PATH, set "
            f"{ENV_WEIGHTS}, or copy it to {CACHE_DIR / WEIGHTS_FILE}; or use --detector dlib."
        ) from exc
    return CACHE_DIR / WEIGHTS_FILE


def load_retinaface(weights: str | Path | None = None, device: str = "cpu") -> Any:
    """facexlib's ResNet-50 RetinaFace with the weights loaded, in eval mode."""
    from lorefd.errors import require_training_extra

    require_training_extra("--face-detector retinaface", ("torch",))
    import torch

    retinaface = _import_facexlib()
    path = resolve_weights(weights)
    model = retinaface.RetinaFace(network_name="resnet50", half=False)
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise LandmarkBackendError(f"{path} is not a RetinaFace ResNet-50 checkpoint: {exc}") from exc
    return model.to(device).eval()


class RetinaFaceBackend:
    """RetinaFace boxes + dlib 68-point landmarks; same ``detect`` contract as dlib's."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu",
                 threshold: float = 0.8) -> None:
        self.model = load_retinaface(weights, device)
        self.threshold = threshold
        self.landmarks = LandmarkDetector(max_side=0)

    def detect(self, rgb: np.ndarray, max_side: int | None = None) -> list[Face]:
        """All faces above the threshold, largest first, with 68 landmarks on full res."""
        import torch

        h, w = rgb.shape[:2]
        scale = 1.0
        small = rgb
        if max_side and max(h, w) > max_side:
            scale = max_side / max(h, w)
            small = cv2.resize(rgb, (round(w * scale), round(h * scale)),
                               interpolation=cv2.INTER_AREA)
        with torch.inference_mode():
            dets = self.model.detect_faces(cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                                           conf_threshold=self.threshold)
        faces = []
        for det in np.asarray(dets).reshape(-1, 15):
            box = tuple(float(v) / scale for v in det[:4])
            faces.append(Face(box=box, score=float(det[4]),
                              landmarks=self.landmarks.landmarks_in_box(rgb, box)))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces
