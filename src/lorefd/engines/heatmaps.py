"""The heatmaps of ``lorefd detect`` and ``lorefd serve``: a file's scored faces drawn on it.

Each face's heat (:func:`lorefd.engines.scorer.attention_heat`) is mapped from the aligned crop
back onto the picture and drawn with its box and score (:func:`lorefd.render.render_overlay`),
with a colour bar saying what the colours mean (:func:`legend`); a detector without maps (the
``xception`` baseline) gets the box and score only, and says so (:func:`heat_note`). An image
gives a PNG, a video an MP4 of its sampled frames, written onto a path claimed before (see
:class:`~lorefd.engines.inputs.HeatmapNamer`; a failed write releases it: :func:`write_claimed`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lorefd.data.preprocess.crops import FaceCrop
from lorefd.engines.report_schema import heatmap_kind
from lorefd.render import render_overlay, shrink

VIDEO_MAX_SIDE = 1280  # heatmap MP4 frames are downscaled to this longer side (memory, size)
IMAGE_MAX_SIDE = 2048  # image heatmaps are drawn on a copy at most this large (memory)


def heat_note(crops: list[FaceCrop], detector: str) -> str | None:
    """What to say on a heatmap when the detector gave no attention maps (baseline)."""
    if not crops or any(c.heat is not None for c in crops):
        return None
    return f"no attention map ({detector} detector): box and score only"


def legend(manifest: dict[str, Any]) -> str | None:
    """What a heatmap's colours mean, for its colour bar."""
    kind = heatmap_kind(manifest)
    if kind == "blend mask":
        return "P(blended in), 0 to 1"
    if kind:
        return "recon. difference (relative)"
    return None


def write_claimed(path: Path, write: Callable[..., None], *args: Any) -> None:
    """Write onto a claimed (empty) path; on failure the claim is released."""
    try:
        write(path, *args)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def image_overlay(rgb: np.ndarray, crops: list[FaceCrop], threshold: float,
                  manifest: dict[str, Any], detector: str) -> tuple[np.ndarray, str | None]:
    """A still image's heatmap (its faces drawn on a copy at most :data:`IMAGE_MAX_SIDE`
    wide) and the note it carries (no attention maps), if any."""
    note = heat_note(crops, detector)
    small, factor = shrink(rgb, IMAGE_MAX_SIDE)  # a 9000 px photo is drawn at 2048 px
    drawn = [c.scaled(factor) for c in crops] if factor != 1.0 else crops
    colours = legend(manifest) if any(c.heat is not None for c in drawn) else None
    return render_overlay(small, drawn, threshold, note, colours), note


def video_overlays(kept: Sequence[tuple[int, np.ndarray, float]], crops: list[FaceCrop],
                   threshold: float, manifest: dict[str, Any], detector: str
                   ) -> tuple[list[np.ndarray], str | None]:
    """A video's heatmap frames: each of ``kept`` (``(index, frame shrunk to
    VIDEO_MAX_SIDE, its factor)``) with its frame's face; and the note, if any."""
    by_frame = {c.frame_index: c for c in crops}
    note_all = heat_note(crops, detector)
    # one legend for the whole video (every frame's strip the same height)
    colours = legend(manifest) if any(c.heat is not None for c in crops) else None
    rendered = []
    for index, rgb, factor in kept:
        c = by_frame.get(index)
        note = note_all if c is not None else "no face"
        c = c.scaled(factor) if c is not None and factor != 1.0 else c
        rendered.append(render_overlay(rgb, [c] if c else [], threshold,
                                       f"frame {index}" + (f" - {note}" if note else ""),
                                       colours))
    return rendered, note_all


__all__ = ["IMAGE_MAX_SIDE", "VIDEO_MAX_SIDE", "heat_note", "image_overlay", "legend",
           "video_overlays", "write_claimed"]
