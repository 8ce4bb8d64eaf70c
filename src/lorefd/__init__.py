"""lorefd: face forgery detection by learning local reconstruction errors.

Layers import one way: ``data`` -> ``models`` -> ``engines`` -> ``evaluation`` -> ``apps`` ->
``cli``; this package root is the Python API above them all.

Scoring with the model shipped in the package takes two lines::

    import lorefd
    report = lorefd.detect("photo.jpg")  # report["results"][0]["p_fake"], ["verdict"]

A second call reuses the loaded model. For an explicit handle (your own model, a runtime)::

    model = lorefd.Model("model.lorefd", runtime="onnx")
    for path in paths:
        print(model.detect(path)["results"][0]["verdict"])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lorefd.version import __version__

PathLike = str | os.PathLike


def _as_paths(paths: Any) -> list[str]:
    """A path or a list/tuple of paths as strings; anything else is a TypeError naming it."""
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    if isinstance(paths, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in paths):
        return [os.fspath(p) for p in paths]
    what = type(paths).__name__
    if isinstance(paths, (list, tuple)):
        what += " holding " + ", ".join(sorted({type(p).__name__ for p in paths
                                                if not isinstance(p, (str, os.PathLike))}))
    raise TypeError(f"lorefd.detect: expected a path or a list of paths, got {what}")


class Model:
    """A detector loaded once for repeated use: the network (ONNX Runtime or PyTorch) and the
    face finder are built on the first call and kept. ``model``: a ``.lorefd`` bundle, a
    ``lorefd train`` run or a checkpoint folder (default: the shipped model); ``runtime``:
    ``"onnx"`` or ``"torch"`` (default onnx when the bundle has a graph)."""

    def __init__(self, model: PathLike | None = None, runtime: str | None = None,
                 device: str | None = None, threads: int | None = None,
                 retinaface_weights: str | None = None) -> None:
        from lorefd.engines.detect import DetectOptions
        from lorefd.models.graph import load_runtime_model

        DetectOptions(device=device, runtime=runtime, threads=threads)  # OptionError first
        self.bundle = load_runtime_model(None if model is None else os.fspath(model), device,
                                         runtime, threads)
        self.device = device
        self.retinaface_weights = retinaface_weights
        self._faces: list[Any] = []  # face pipelines, one per worker (detect(workers=N))

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def detect(self, paths: PathLike | list[PathLike], **options: Any) -> dict[str, Any]:
        """Score images, videos or folders (a path or a list); keyword arguments: the fields
        of :class:`lorefd.engines.detect.DetectOptions` (``heatmap_dir``, ``frames``,
        ``threshold``, ``json_path``, ...; the device is this model's). Returns the
        ``detect --json`` report."""
        from lorefd.data.preprocess.crops import FacePipeline
        from lorefd.engines.detect import DetectOptions, detect_paths

        items = _as_paths(paths)
        opts = DetectOptions(device=self.device, **options)
        if not self._faces:
            self._faces.append(FacePipeline.from_bundle(self.bundle, self.retinaface_weights,
                                                        str(self.device or "cpu")))
        return detect_paths(items, self.bundle, opts, faces=self._faces)


_LOADED: dict[tuple[Any, ...], Model] = {}


def detect(paths: PathLike | list[PathLike], model: PathLike | None = None,
           runtime: str | None = None, device: str | None = None, **kwargs: Any
           ) -> dict[str, Any]:
    """``lorefd detect`` from Python: a path or a list of paths (images, videos, folders)
    scored by ``model`` (default: the shipped model). The loaded model is kept for the next
    call with the same model, runtime and device (a changed file is reloaded). Keyword
    arguments as :meth:`Model.detect` (the fields of ``DetectOptions``). Returns the report
    (the ``detect --json`` schema)."""
    items = _as_paths(paths)
    from lorefd.engines.detect import DetectOptions
    from lorefd.models.bundle import resolve_model

    DetectOptions(runtime=runtime, device=device, **kwargs)  # refused before any loading

    path = Path(resolve_model(None if model is None else os.fspath(model))).resolve()
    stamp = path.stat().st_mtime_ns if path.exists() else None
    key = (str(path), stamp, runtime, device)
    if key not in _LOADED:
        _LOADED.clear()  # one model at a time: a new one replaces the old
        _LOADED[key] = Model(path, runtime=runtime, device=device)
    return _LOADED[key].detect(items, **kwargs)


__all__ = ["Model", "__version__", "detect"]
