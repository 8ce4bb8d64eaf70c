"""A video's score from its frames' scores: one rule, shared by ``detect``, ``serve`` and
``evaluate`` (which also reports the video AUC of every rule in :data:`COMPARED`).

Rules (``spec``):

* ``median`` (the default): robust to a few frames where the face tracker slipped or the
  face is blurred; at or above the mean's video AUC in every baseline run measured on real
  face-swap videos (docs/levers.md), by up to 0.03;
* ``mean``: the mean frame probability (the paper's video-level protocol);
* ``max``: the most suspicious frame;
* ``topK``: the mean of the highest ``K`` % of frames (``top25``: the top quarter), for a
  forgery that shows in part of a video only;
* ``qNN``: the ``NN``-th percentile (``q90``).

Sits below every layer (like :mod:`lorefd.utils`): plain NumPy, no model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from lorefd.errors import OptionError

DEFAULT = "median"
COMPARED = ("mean", "median", "top25", "q90", "max")
_SPEC = re.compile(r"^(mean|median|max|top(\d{1,3})|q(\d{1,3}))$")


def check_spec(spec: str) -> str:
    """``spec`` if it names a rule, else an :class:`~lorefd.errors.OptionError` listing the
    rules."""
    m = _SPEC.match(str(spec))
    k = next((int(g) for g in (m.group(2), m.group(3)) if g is not None), None) if m else None
    if m is None or (k is not None and not 1 <= k <= 100):
        raise OptionError(f"unknown frame aggregation {spec!r}: use mean, median, max, topK "
                          "(mean of the highest K % of frames, 1-100) or qNN (percentile, 1-100)")
    return spec


def aggregate(scores: Sequence[float] | np.ndarray, spec: str = DEFAULT) -> float:
    """One video score from its frame scores by rule ``spec`` (see the module docstring);
    NaN for no frames."""
    p = np.asarray(scores, dtype=np.float64).ravel()
    check_spec(spec)
    if p.size == 0:
        return float("nan")
    if spec == "mean":
        return float(p.mean())
    if spec == "median":
        return float(np.median(p))
    if spec == "max":
        return float(p.max())
    if spec.startswith("top"):
        k = max(1, int(np.ceil(p.size * int(spec[3:]) / 100)))
        return float(np.sort(p)[-k:].mean())
    return float(np.percentile(p, int(spec[1:])))


__all__ = ["COMPARED", "DEFAULT", "aggregate", "check_spec"]
