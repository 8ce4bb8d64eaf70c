"""Name -> constructor registries, in the manner of timm's ``register_model``.

A new detector is one new file that decorates its builder with ``@register_detector("name")``
and is imported in :mod:`lorefd.models`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BLEND_MASK = "blend mask"  # key of the predicted blend mask among a detector's maps
_DETECTORS: dict[str, Callable[..., Any]] = {}


def register_detector(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _DETECTORS:
            raise ValueError(f"detector {name!r} registered twice")
        _DETECTORS[name] = fn
        return fn
    return wrap


def create_detector(name: str, **kwargs: Any) -> Any:
    if name not in _DETECTORS:
        raise KeyError(f"unknown detector {name!r}; available: {', '.join(list_detectors())}")
    return _DETECTORS[name](**kwargs)


def list_detectors() -> list[str]:
    return sorted(_DETECTORS)
