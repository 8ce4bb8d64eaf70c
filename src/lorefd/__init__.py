"""lorefd: face forgery detection by learning local reconstruction errors.

Layers import one way: ``data`` -> ``models`` -> ``engines`` -> ``evaluation`` -> ``cli``.

Scoring with the model shipped in the package takes two lines::

    import lorefd
    report = lorefd.detect(["photo.jpg"])  # report["results"][0]["p_fake"], ["verdict"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorefd.version import __version__


def detect(paths: list[str | Path], model: str | Path | None = None, **kwargs: Any
           ) -> dict[str, Any]:
    """``lorefd detect`` from Python: images, videos or folders scored by ``model`` (a bundle,
    run or checkpoint folder; default the shipped model). Keyword arguments as
    :func:`lorefd.engines.detect.detect_paths` (``heatmap_dir``, ``frames``, ``threshold``,
    ``runtime`` -- ``"onnx"`` or ``"torch"``, default onnx when the bundle has a graph --, ...).
    Returns the report (the ``detect --json`` schema)."""
    from lorefd.engines.detect import detect_paths
    from lorefd.models.bundle import resolve_model

    return detect_paths([str(p) for p in paths], resolve_model(model), **kwargs)


__all__ = ["__version__", "detect"]
