"""Crops of a manifest under one perturbation setting: the data of ``lorefd robustness``.

A :class:`Setting` is one column of the sweep: ``clean`` or a perturbation type of
:mod:`lorefd.data.perturb` at a level. :class:`PerturbedCrops` yields the stored crops under
it, resized to a model's input, each with its own random generator (:func:`item_rng`:
independent of order, filters and workers); ``h264`` encodes a video's crops (its rows in frame
order) as one video. An item the perturbation cannot apply to is marked, never replaced.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from lorefd.data.images import ImageLoadError, load_rgb, resize_square, to_tensor
from lorefd.data.manifest import Sample
from lorefd.data.perturb import TYPES, VIDEO_TYPES, PerturbationError, apply, h264, parameter

CLEAN = "clean"


@dataclass(frozen=True)
class Setting:
    """One column of the sweep: ``clean`` (level 0) or a perturbation type at a level."""

    kind: str
    level: int = 0

    @property
    def key(self) -> str:
        return CLEAN if self.kind == CLEAN else f"{self.kind}/{self.level}"

    @property
    def param(self) -> float | None:
        return None if self.kind == CLEAN else parameter(self.kind, self.level)


def item_rng(seed: int, setting: Setting, sample: Sample) -> np.random.Generator:
    """The generator of one item in one setting: independent of order, filters and workers."""
    key = zlib.crc32(f"{sample.group}|{Path(sample.path).name}".encode())
    kind = TYPES.index(setting.kind) if setting.kind in TYPES else len(TYPES)
    return np.random.default_rng([seed, kind, setting.level, key])


class PerturbedCrops(Dataset):
    """Crops of ``samples`` under one setting, resized to ``image_size``.

    Items: ``image`` (3xSxS in [0, 1]), ``ok`` (False: left out, with ``reason``), ``index``.
    Unlike training datasets no sample stands in for another: a failed item is marked.
    """

    def __init__(self, samples: Sequence[Sample], setting: Setting, image_size: int,
                 seed: int = 0) -> None:
        self.samples = list(samples)
        self.setting = setting
        self.image_size = image_size
        self.seed = seed
        self.videos: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(self.samples):
            self.videos[s.group].append(i)
        for idx in self.videos.values():
            idx.sort(key=lambda i: (self.samples[i].frame_index, self.samples[i].path))
        self._cache: tuple[str, dict[int, np.ndarray | Exception]] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def _video(self, group: str) -> dict[int, np.ndarray | Exception]:
        """Every frame of ``group`` after video compression (or the reason it failed)."""
        if self._cache is not None and self._cache[0] == group:
            return self._cache[1]
        out: dict[int, np.ndarray | Exception] = {}
        frames: dict[int, np.ndarray] = {}
        for i in self.videos[group]:
            try:
                frames[i] = load_rgb(self.samples[i].path)
            except ImageLoadError as exc:
                out[i] = exc
        if len(frames) < 2:
            err: Exception | None = PerturbationError("one-frame video: no video to compress")
        elif len({f.shape for f in frames.values()}) > 1:
            err = PerturbationError("frames of different sizes: not one video")
        else:
            err = None
            coded = h264(list(frames.values()), int(parameter(self.setting.kind, self.setting.level)))
            out.update(zip(frames, coded, strict=True))
        if err is not None:
            out.update(dict.fromkeys(frames, err))
        self._cache = (group, out)
        return out

    def perturbed(self, index: int) -> np.ndarray:
        """The crop of item ``index`` under this setting, at its stored size."""
        s, st = self.samples[index], self.setting
        if st.kind in VIDEO_TYPES:
            got = self._video(s.group)[index]
            if isinstance(got, Exception):
                raise got
            return got
        rgb = load_rgb(s.path)
        if st.kind == CLEAN:
            return rgb
        return apply(st.kind, rgb, st.param, item_rng(self.seed, st, s))

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            rgb, ok, reason = resize_square(self.perturbed(index), self.image_size), True, ""
        except ImageLoadError:
            rgb, ok, reason = None, False, "unreadable image"
        except PerturbationError as exc:
            rgb, ok, reason = None, False, str(exc)
        if rgb is None:
            rgb = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        return {"image": to_tensor(rgb), "ok": ok, "reason": reason, "index": index}


__all__ = ["CLEAN", "PerturbedCrops", "Setting", "item_rng"]
