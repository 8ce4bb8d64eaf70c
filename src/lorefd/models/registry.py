"""Name -> constructor registries, in the manner of timm's ``register_model``.

A new detector is one new file that decorates its builder with ``@register_detector("name")``
and is imported in :mod:`lorefd.models.detectors` (its ``__init__``). An old name stays usable
as a deprecation (:func:`register_detector_deprecations`, like timm's
``register_model_deprecations``): it builds the current detector with a warning and is hidden
from :func:`list_detectors`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

BLEND_MASK = "blend mask"  # key of the predicted blend mask among a detector's maps
_DETECTORS: dict[str, Callable[..., Any]] = {}
_DEPRECATED: dict[str, str] = {}  # old name -> current name
log = logging.getLogger("lorefd")


def register_detector(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _DETECTORS or name in _DEPRECATED:
            raise ValueError(f"detector {name!r} registered twice")
        _DETECTORS[name] = fn
        return fn
    return wrap


def register_detector_deprecations(names: dict[str, str]) -> None:
    """Old names (keys) that resolve to registered detectors (values)."""
    for old, new in names.items():
        if old in _DETECTORS or old in _DEPRECATED:
            raise ValueError(f"detector {old!r} registered twice")
        _DEPRECATED[old] = new


def resolve_detector_name(name: str) -> str:
    """The current registry name of ``name`` (a deprecated name warns); unknown names raise."""
    if name in _DEPRECATED:
        new = _DEPRECATED[name]
        log.warning("detector name %r is deprecated; use %r", name, new)
        name = new
    if name not in _DETECTORS:
        raise KeyError(f"unknown detector {name!r}; available: {', '.join(list_detectors())}")
    return name


def create_detector(name: str, **kwargs: Any) -> Any:
    return _DETECTORS[resolve_detector_name(name)](**kwargs)


def is_detector(name: str) -> bool:
    """A registered or deprecated detector name."""
    return name in _DETECTORS or name in _DEPRECATED


def list_detectors() -> list[str]:
    """The current names (deprecated ones hidden)."""
    return sorted(_DETECTORS)
