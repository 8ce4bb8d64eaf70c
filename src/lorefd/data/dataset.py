"""Torch datasets of face crops: ``[0, 1]`` image tensors, labels and normalised landmarks."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lorefd.data.images import ImageLoadError, load_rgb, resize_square, to_tensor
from lorefd.data.manifest import REAL, ManifestError, Sample
from lorefd.data.perturb import random_perturbation

log = logging.getLogger("lorefd")

# Index permutation that mirrors the 68-point layout left <-> right (for horizontal flips).
FLIP_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


def validate_samples(samples: list[Sample], need_landmarks: bool = False,
                     what: str = "data") -> tuple[list[Sample], Counter]:
    """Drop samples whose image header cannot be read (or that lack landmarks when needed).

    Returns the kept samples and a counter of skip reasons, which callers log. Cheap: only the
    image header is read here; a file that fails later while decoding is replaced at load time.
    """
    kept, skipped = [], Counter()
    for s in samples:
        try:
            with Image.open(s.path) as img:
                img.size  # noqa: B018 - header only
        except (OSError, ValueError, Image.DecompressionBombError):
            skipped["unreadable image"] += 1
            continue
        if need_landmarks and s.points is None and not s.landmarks:
            skipped["no landmarks"] += 1
            continue
        kept.append(s)
    if skipped:
        log.warning("%s: skipped %d of %d samples (%s)", what, sum(skipped.values()), len(samples),
                    ", ".join(f"{k}: {v}" for k, v in skipped.items()))
    return kept, skipped


class FaceDataset(Dataset):
    """Face crops from manifest samples, resized to ``image_size``.

    Each item is a dict: ``image`` (3xSxS float in [0, 1]), ``label`` (float 0/1),
    ``landmarks`` ((68, 2) normalised to [0, 1], zeros when unknown), ``has_landmarks``,
    ``index``, ``mask`` (1xSxS blend-mask target, zeros) and ``has_mask`` (True for reals,
    whose mask is known to be empty). With ``augment`` a horizontal flip (landmarks mirrored) and light brightness /
    contrast jitter are applied. A file that fails to decode is logged and replaced by the next
    sample, so a long run never dies on one bad crop.
    """

    def __init__(self, samples: list[Sample], image_size: int, augment: bool | str = False,
                 seed: int = 0, perturb: bool | None = None) -> None:
        if not samples:
            raise ManifestError("empty dataset")
        self.samples = samples
        self.image_size = image_size
        self.augment = augment
        # "robust": also a random DeeperForensics-style degradation (lorefd.data.perturb),
        # reals and fakes alike; ``perturb`` alone (stage 1) degrades without flip / jitter
        self.perturb = augment == "robust" if perturb is None else perturb
        self.seed = seed
        self.epoch = 0
        self.failures: Counter = Counter()

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
        """The crop (resized) and its normalised landmarks."""
        rgb = load_rgb(sample.path)
        h, w = rgb.shape[:2]
        pts = sample.load_landmarks()
        norm = None if pts is None else (pts / np.array([w, h], dtype=np.float32))
        return resize_square(rgb, self.image_size), norm

    def _augment(self, rgb: np.ndarray, pts: np.ndarray | None, rng: np.random.Generator):
        if rng.random() < 0.5:
            rgb = rgb[:, ::-1]
            if pts is not None:
                pts = pts[FLIP_68].copy()
                pts[:, 0] = 1.0 - pts[:, 0]
        alpha, beta = rng.uniform(0.85, 1.15), rng.uniform(-20, 20)
        rgb = np.clip(rgb.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)
        return rgb, pts

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(len(self.samples)):
            i = (index + attempt) % len(self.samples)
            try:
                rgb, pts = self.load(self.samples[i])
                break
            except (ImageLoadError, OSError, ValueError) as exc:
                self.failures[str(type(exc).__name__)] += 1
                log.warning("skipping unreadable sample %s: %s", self.samples[i].path, exc)
        else:
            raise RuntimeError("no readable sample in the dataset")
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            rgb, pts = self._augment(rgb, pts, rng)
        if self.perturb:
            rgb = random_perturbation(rgb, np.random.default_rng((self.seed, self.epoch, index, 1)))
        return {
            "image": to_tensor(rgb),
            "label": torch.tensor(float(self.samples[i].label)),
            "landmarks": torch.from_numpy(pts if pts is not None else np.zeros((68, 2), np.float32)).float(),
            "has_landmarks": torch.tensor(pts is not None),
            "index": torch.tensor(i),
            # the blend mask target: known (empty) for reals, unknown for manifest fakes
            "mask": torch.zeros(1, self.image_size, self.image_size),
            "has_mask": torch.tensor(self.samples[i].label == REAL),
        }
