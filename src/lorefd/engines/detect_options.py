"""The options of one ``lorefd detect`` run, as one checked value.

``lorefd detect`` fills :class:`DetectOptions` from its arguments, ``lorefd.Model.detect`` and
``lorefd.detect`` from their keyword arguments, ``lorefd serve`` from its own options
(:meth:`lorefd.apps.serve.ServeOptions.detect_options`); :func:`lorefd.engines.detect.detect_paths`
takes it. A value out of its range is refused when the options are made
(:class:`~lorefd.errors.OptionError`), before any model is loaded or file read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

from lorefd.errors import OptionError
from lorefd.models.graph import RUNTIMES

COUNTS = ("frames", "batch_size", "threads", "workers")  # whole numbers, at least 1


@dataclass(frozen=True)
class DetectOptions:
    """How to run detection; every field has the default of ``lorefd detect``.

    Loading (used when the model is a path, not a loaded bundle): ``device`` (default CUDA
    when there is one; the ONNX runtime runs on the CPU), ``runtime`` (``"onnx"`` or
    ``"torch"``; default onnx when the bundle has an ONNX graph), ``threads`` (CPU threads of
    either runtime; default its own). Scoring: ``frames`` sampled evenly per video (default:
    the bundle's, 32), ``threshold`` (default: the bundle's), ``batch_size`` faces per forward
    pass (default 4 on CPU, 32 on CUDA), ``workers`` files processed at once, in threads,
    each with a face detector of its own, ``retinaface_weights`` for bundles preprocessed
    with RetinaFace. Output: ``heatmap_dir`` (PNG per image, MP4 per video), ``json_path``
    (the report), ``csv_path`` (one row per file), ``progress`` (bars with ETA on stderr).
    """

    heatmap_dir: str | Path | None = None
    json_path: str | Path | None = None
    csv_path: str | Path | None = None
    frames: int | None = None
    threshold: float | None = None
    batch_size: int | None = None
    device: str | None = None
    runtime: str | None = None
    threads: int | None = None
    workers: int = 1
    progress: bool = False
    retinaface_weights: str | None = None

    def __post_init__(self) -> None:
        for name in COUNTS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)
                                      or value < 1):
                raise OptionError(f"{name} must be a whole number of at least 1, got {value!r}")
        thr = self.threshold
        if thr is not None and (isinstance(thr, bool) or not isinstance(thr, Real)
                                or not (math.isfinite(thr) and 0.0 <= thr <= 1.0)):
            raise OptionError(f"threshold must be in [0, 1], got {thr}")
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise OptionError(f"unknown runtime {self.runtime!r}; choose one of "
                              f"{', '.join(RUNTIMES)}")


__all__ = ["DetectOptions"]
