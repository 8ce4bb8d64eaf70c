"""Stage-2 detectors; importing this package registers them (one file per detector)."""

from lorefd.models.detectors import baseline, lre  # noqa: F401  (registration)
from lorefd.models.detectors.base import (
    Detector,
    build_detector,
    detector_from_state,
    detector_meta,
    save_detector,
)

__all__ = ["Detector", "build_detector", "detector_from_state", "detector_meta", "save_detector"]
