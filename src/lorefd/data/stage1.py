"""Stage-1 data (Section III-B): the real faces with landmarks the key-region MAE trains on,
and the dataset-level key region with its patch set T."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lorefd.config import Config, ConfigError
from lorefd.data.images import ImageLoadError
from lorefd.data.keyregion import KeyRegion, dataset_key_region, normalise_landmarks
from lorefd.data.landmarks import LandmarkCache
from lorefd.data.manifest import FAKE, REAL, Sample, load_samples
from lorefd.errors import NothingProcessedError

log = logging.getLogger("lorefd")


class EmptyDatasetError(NothingProcessedError, ValueError):
    """No usable real face is left after filtering; raised before any model is built."""


def _image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` from the image header (no decoding)."""
    with Image.open(path) as img:
        return img.size


def prepare_pretrain_samples(source: str | Path | list[Sample], cfg: Config,
                             out_dir: str | Path | None = None, verbose: bool = True
                             ) -> tuple[list[Sample], Counter]:
    """Real faces with landmarks for stage 1, and a counter of what was skipped and why.

    ``source`` is a manifest, a folder (with ``manifest.csv`` or plain images) or samples.
    Fakes are dropped (stage 1 learns real faces only); unreadable images are skipped;
    samples without landmarks get them from :class:`LandmarkCache` (cached under
    ``data.landmark_cache`` or ``OUT/landmarks``), and faces where none is found are skipped.
    Raises :class:`EmptyDatasetError` when nothing is left.
    """
    samples = list(source) if isinstance(source, list) else load_samples(source)
    skipped: Counter = Counter()
    real = [s for s in samples if s.label == REAL]
    if len(real) < len(samples):
        skipped["fake (stage 1 trains on real faces only)"] = sum(s.label == FAKE for s in samples)
    kept: list[Sample] = []
    cache: LandmarkCache | None = None
    need = [s for s in real if s.points is None and not s.landmarks]
    it = real
    if need and verbose:
        from tqdm import tqdm

        log.info("finding landmarks of %d faces (dlib, cached)", len(need))
        it = tqdm(real, desc="landmarks", unit="img", leave=False)
    for s in it:
        try:
            _image_size(s.path)
        except (OSError, ValueError, Image.DecompressionBombError):
            skipped["unreadable image"] += 1
            continue
        if s.points is None and not s.landmarks:
            if cache is None:
                root = cfg.data.landmark_cache or (Path(out_dir) / "landmarks" if out_dir else None)
                if root is None:
                    raise ConfigError("samples without landmarks need data.landmark_cache or "
                                      "out_dir")
                cache = LandmarkCache(root)
            try:
                pts = cache.get(s.path)
            except (ImageLoadError, OSError, ValueError):
                skipped["unreadable image"] += 1
                continue
            if pts is None:
                skipped["no face/landmarks found"] += 1
                continue
            s = Sample(**{**s.__dict__, "points": np.asarray(pts, dtype=np.float32)})
        elif s.points is None:
            try:
                pts = s.load_landmarks()
            except (OSError, ValueError):  # missing, corrupt or not (68, 2)
                skipped["unreadable landmarks file"] += 1
                continue
            s = Sample(**{**s.__dict__, "points": pts})
        kept.append(s)
    if skipped and verbose:
        log.warning("stage-1 data: skipped %d of %d samples (%s)", sum(skipped.values()),
                    len(samples), ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())))
    if not kept:
        raise EmptyDatasetError(
            f"no usable real face in {source if not isinstance(source, list) else 'the samples'}"
            f" ({len(samples)} samples; skipped: {dict(skipped) or 'none'}); stage 1 needs real "
            "faces (label 0) whose landmarks can be found")
    if verbose:
        log.info("stage-1 data: %d real faces", len(kept))
    return kept, skipped


def compute_key_region(samples: list[Sample], cfg: Config) -> tuple[KeyRegion, list[int]]:
    """The dataset-level key region and T (Section III-B-1, Fig. 2).

    Landmarks are normalised by each crop's own width and height (read from the header), so
    crops of any size share one region; T is then computed for ``data.image_size``.
    """
    pts = []
    for s in samples:
        lm = s.load_landmarks()
        if lm is None:
            continue
        w, h = _image_size(s.path)
        pts.append(normalise_landmarks(lm, w, h))
    if not pts:
        raise EmptyDatasetError("no landmarks to compute the key region from")
    region = dataset_key_region(np.stack(pts), cfg.mask.margin)
    return region, region.patch_set(cfg.data.image_size, cfg.mask.patch_size)


def key_region_record(region: KeyRegion, patch_set: list[int], cfg: Config) -> dict[str, Any]:
    """What ``key_region.json`` and checkpoint meta hold."""
    return {"key_region": region.to_dict(), "key_patches": list(patch_set),
            "image_size": cfg.data.image_size, "patch_size": cfg.mask.patch_size,
            "region_mode": cfg.mask.region, "mask_ratio": cfg.mask.mask_ratio}


__all__ = ["EmptyDatasetError", "compute_key_region", "key_region_record",
           "prepare_pretrain_samples"]
