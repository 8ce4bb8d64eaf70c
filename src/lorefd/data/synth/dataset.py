"""A torch ``Dataset`` of fakes synthesised on the fly from real faces, new ones every epoch.

Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: the same in any DataLoader
worker, on any run. Call :meth:`SynthDataset.set_epoch` before each epoch (with
``persistent_workers=False``, the default, workers pick the new epoch up when they start).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lorefd.config import ConfigError
from lorefd.data.images import ImageLoadError, load_rgb, to_tensor
from lorefd.data.manifest import REAL, ManifestError, Sample
from lorefd.data.perturb import PerturbationError, h264, random_perturbation
from lorefd.data.synth import KINDS, NEEDS_DONOR, USES_DONOR, SynthError, synthesize
from lorefd.data.synth.augment import random_jpeg
from lorefd.data.synth.core import SynthResult

if TYPE_CHECKING:
    from lorefd.config import SynthConfig

log = logging.getLogger("lorefd")


def usable_reals(samples: Sequence[Sample]) -> tuple[list[Sample], list[np.ndarray]]:
    """The real samples with well-formed landmarks, and those landmarks (loaded once)."""
    kept, points = [], []
    skipped = 0
    for s in samples:
        if s.label != REAL:
            continue
        try:
            lm = s.load_landmarks()
        except (OSError, ValueError, ManifestError):
            lm = None
        if lm is None or lm.shape != (68, 2) or not np.isfinite(lm).all():
            skipped += 1
            continue
        kept.append(s)
        points.append(np.asarray(lm, np.float32))
    if skipped:
        log.warning("synth: %d real sample(s) without usable landmarks skipped", skipped)
    return kept, points


def normalised_shape(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks centred and scaled to unit size: compares poses across image sizes."""
    c = landmarks - landmarks.mean(0)
    return c / (np.sqrt((c ** 2).sum(1).mean()) + 1e-6)


class DonorPicker:
    """Donors of another identity (``Sample.group``: ``video_id``, else the file path).

    Out of ``candidates`` random faces of other identities, the one with the most similar
    normalised landmark shape is taken (closer poses give fewer warp artefacts).
    """

    def __init__(self, samples: Sequence[Sample], points: Sequence[np.ndarray],
                 candidates: int = 8) -> None:
        self.ids = np.array([s.group for s in samples])
        self.shapes = np.stack([normalised_shape(p) for p in points]) if points else None
        self.candidates = candidates
        self.num_identities = len(set(self.ids.tolist()))

    def pick(self, index: int, rng: np.random.Generator) -> int | None:
        """Index of a donor for sample ``index`` (never the same identity); None if none."""
        if self.num_identities < 2:
            return None
        cand = rng.integers(0, len(self.ids), size=self.candidates)
        cand = cand[self.ids[cand] != self.ids[index]]
        if len(cand) == 0:  # unlucky draw (or one identity dominates): sample among others
            others = np.nonzero(self.ids != self.ids[index])[0]
            cand = rng.choice(others, size=min(self.candidates, len(others)), replace=False)
        assert self.shapes is not None
        dist = ((self.shapes[cand] - self.shapes[index]) ** 2).sum((1, 2))
        return int(cand[int(np.argmin(dist))])


def compress(image: np.ndarray, rng: np.random.Generator, jpeg_quality: Sequence[int] | None,
             h264_ratio: float = 0.0, h264_crf: Sequence[int] = (23, 45)) -> np.ndarray:
    """The last, separable step of every training item, real or fake: with probability
    ``h264_ratio`` an H.264 round trip at a CRF drawn from ``h264_crf``, else a JPEG round
    trip at a quality drawn from ``jpeg_quality`` (None: none). ``h264_ratio`` 0 draws no
    extra random number, so older runs replay exactly."""
    if h264_ratio > 0 and rng.random() < h264_ratio:
        crf = int(rng.integers(int(h264_crf[0]), int(h264_crf[-1]) + 1))
        try:
            return h264([image], crf)[0]
        except PerturbationError as exc:  # e.g. a face too small for the encoder
            log.debug("h264 round trip skipped: %s", exc)
            return image
    return random_jpeg(image, rng, jpeg_quality)[0]


class SynthDataset(Dataset):
    """Fakes made on the fly from real ``samples`` (those without landmarks are skipped).

    Args:
        kinds, weights: synthesis kinds and their sampling weights.
        seed: with the epoch and the index, fixes every random choice.
        fake_ratio: share of items that are fakes; the rest are the reals themselves
            (1.0: fakes only, mix reals in elsewhere).
        jpeg_quality: ``[lo, hi]``: JPEG-recompress every item, real or fake, at a quality
            drawn in that range (None: never) so compression is no shortcut.
        h264_ratio, h264_crf: the share of items compressed with H.264 instead (the image as
            one intra-coded libx264 frame at a CRF drawn from ``[lo, hi]``), reals and fakes
            alike: the codec real deepfake videos come in (:func:`compress`).
        image_size: resize items to this square size (landmarks scaled with them).

    Items are dicts: ``image`` float32 (3, H, W) in [0, 1], ``label`` int64 (1 fake, 0 real),
    ``mask`` float32 (1, H, W) blend weight (zeros for reals), ``landmarks`` float32
    (68, 2), ``kind`` (``"real"`` or the kind), ``index`` and ``donor`` (sample index or -1).
    """

    def __init__(self, samples: Sequence[Sample], kinds: Sequence[str] = KINDS,
                 weights: Sequence[float] | None = None, seed: int = 0,
                 fake_ratio: float = 1.0, jpeg_quality: Sequence[int] | None = None,
                 image_size: int | None = None, max_tries: int = 4,
                 donor_candidates: int = 8, h264_ratio: float = 0.0,
                 h264_crf: Sequence[int] = (23, 45)) -> None:
        self.samples, self.points = usable_reals(samples)
        if not self.samples:
            raise ManifestError("synth: no real samples with landmarks")
        kinds = list(kinds)
        weights = list(weights) if weights is not None else [1.0] * len(kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or len(weights) != len(kinds) or not kinds:
            raise ConfigError(f"synth kinds {kinds} / weights {weights}: kinds must be among "
                              f"{', '.join(KINDS)}, one weight each")
        self.donors = DonorPicker(self.samples, self.points, donor_candidates)
        if self.donors.num_identities < 2 and any(k in NEEDS_DONOR for k in kinds):
            log.warning("synth: one identity only, dropping %s", sorted(NEEDS_DONOR & set(kinds)))
            keep = [i for i, k in enumerate(kinds) if k not in NEEDS_DONOR]
            kinds, weights = [kinds[i] for i in keep], [weights[i] for i in keep]
            if not kinds:
                raise ManifestError("synth: face swaps need at least two identities")
        p = np.asarray(weights, np.float64)
        if (p < 0).any() or p.sum() <= 0:
            raise ConfigError(f"synth weights must be >= 0 with a positive sum: {weights}")
        self.kinds, self.probs = kinds, p / p.sum()
        self.seed, self.epoch = int(seed), 0
        self.fake_ratio = float(fake_ratio)
        self.jpeg_quality = list(jpeg_quality) if jpeg_quality else None
        self.h264_ratio, self.h264_crf = float(h264_ratio), list(h264_crf)
        self.image_size = image_size
        self.max_tries = max_tries

    @classmethod
    def from_config(cls, samples: Sequence[Sample], cfg: SynthConfig, seed: int = 0,
                    image_size: int | None = None, fake_ratio: float | None = None
                    ) -> SynthDataset:
        """Kinds, weights, JPEG range and (unless given) ``fake_ratio`` from the config.

        Pass ``fake_ratio=1.0`` when the reals are sampled elsewhere (e.g. a balanced
        sampler over a real manifest); then recompress those reals with ``jpeg_quality`` too.
        """
        ratio = cfg.fake_ratio if fake_ratio is None else fake_ratio
        return cls(samples, cfg.kinds, cfg.weights, seed=seed, fake_ratio=ratio,
                   jpeg_quality=cfg.jpeg_quality, image_size=image_size,
                   h264_ratio=cfg.h264_ratio, h264_crf=cfg.h264_crf)

    def set_epoch(self, epoch: int) -> None:
        """Select the fakes of ``epoch`` (call before building each epoch's iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def rng(self, index: int, attempt: int = 0) -> np.random.Generator:
        """The generator of item ``index`` this epoch (``attempt`` > 0: after skips)."""
        return np.random.default_rng([self.seed, self.epoch, index, attempt])

    def make_fake(self, index: int, rng: np.random.Generator, kind: str | None = None
                  ) -> tuple[SynthResult, int]:
        """One fake of sample ``index`` and its donor's index (-1: none), retried on bad input.

        ``kind`` None draws one per try from the weights; bad input raises :class:`SynthError`
        after ``max_tries``.
        """
        sample = self.samples[index]
        image = load_rgb(sample.path)
        error: Exception | None = None
        fixed = kind
        for _ in range(self.max_tries):
            kind = fixed or str(rng.choice(self.kinds, p=self.probs))
            donor_index, donor = -1, None
            if kind in USES_DONOR:
                picked = self.donors.pick(index, rng)
                if picked is not None:
                    try:
                        donor = (load_rgb(self.samples[picked].path), self.points[picked])
                        donor_index = picked
                    except ImageLoadError as exc:
                        error = exc
                        continue
            try:
                result = synthesize(kind, image, self.points[index], rng, donor=donor)
            except SynthError as exc:
                error = exc
                continue
            result.meta["target_id"] = sample.group
            if donor_index >= 0 and (kind == "swap" or result.meta.get("mode") == "swap"):
                result.meta["source_id"] = self.samples[donor_index].group
            else:
                donor_index = -1
            return result, donor_index
        raise SynthError(f"{sample.path}: {error}")

    def _resize(self, image: np.ndarray, mask: np.ndarray, lm: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        s = self.image_size
        if s is None or (h == s and w == s):
            return image, mask, lm
        interp = cv2.INTER_AREA if s < min(h, w) else cv2.INTER_LINEAR
        image = cv2.resize(image, (s, s), interpolation=interp)
        mask = cv2.resize(mask, (s, s), interpolation=cv2.INTER_LINEAR)
        return image, mask, lm * np.array([s / w, s / h], np.float32)

    def __getitem__(self, index: int) -> dict:
        n = len(self.samples)
        for step in range(n):  # a sample that cannot be faked hands over to the next one
            i = (index + step) % n
            rng = self.rng(index, step)
            fake = rng.random() < self.fake_ratio
            try:
                if fake:
                    result, donor = self.make_fake(i, rng)
                    image, mask, kind = result.image, result.mask, result.kind
                else:
                    image = load_rgb(self.samples[i].path)
                    mask, kind, donor = np.zeros(image.shape[:2], np.float32), "real", -1
            except (SynthError, ImageLoadError) as exc:
                log.warning("synth: skipping %s (%s)", self.samples[i].path, exc)
                continue
            image = compress(image, rng, self.jpeg_quality, self.h264_ratio, self.h264_crf)
            image, mask, lm = self._resize(image, mask, self.points[i])
            return {
                "image": to_tensor(image),
                "label": torch.tensor(int(fake), dtype=torch.int64),
                "mask": torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None],
                "landmarks": torch.from_numpy(np.asarray(lm, np.float32)),
                "kind": kind,
                "index": i,
                "donor": donor,
            }
        raise RuntimeError("synth: no sample could be synthesised")


class SynthFaceItems(Dataset):
    """:class:`SynthDataset` items in :class:`~lorefd.data.dataset.FaceDataset`'s format.

    ``image`` (3, S, S) in [0, 1], ``label`` float, ``landmarks`` normalised to [0, 1],
    ``has_landmarks``, ``index``, ``mask`` (the blend mask, flipped with the image) and
    ``has_mask`` — so synthesised and manifest faces share one loader. With
    ``augment`` a horizontal flip (landmarks mirrored) is drawn from the item's own seed.
    """

    def __init__(self, synth: SynthDataset, augment: bool | str = False,
                 length: int | None = None, jitter: float = 0.0) -> None:
        if synth.image_size is None:
            raise ValueError("SynthFaceItems needs a SynthDataset with image_size set")
        self.synth = synth
        self.augment = augment
        self.perturb = augment == "robust"  # + a random degradation, reals and fakes alike
        self.jitter = float(jitter)  # data.jitter: a random similarity transform per item
        # Item j is made from real j % n with its own random draw (SynthDataset keys the rng by
        # j), so a length above n gives distinct fakes of each real within one epoch: drawing
        # the same index twice would show the network the very same fake again (memorisable).
        self.length = max(len(synth), int(length or 0))

    def __len__(self) -> int:
        return self.length

    @property
    def samples(self) -> list[Sample]:
        return self.synth.samples

    def set_epoch(self, epoch: int) -> None:
        self.synth.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        from lorefd.data.dataset import FLIP_68

        item = self.synth[index]
        image = item["image"]
        lm = item["landmarks"] / float(self.synth.image_size)
        rng = np.random.default_rng([self.synth.seed, self.synth.epoch, index, 99])
        mask = item["mask"]
        if self.augment and rng.random() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
            lm = lm[torch.from_numpy(FLIP_68)]
            lm[:, 0] = 1.0 - lm[:, 0]
        if self.jitter > 0:
            image, mask, lm = similarity_jitter(image, mask, lm, self.jitter, rng)
        if self.perturb:  # photometric / occlusion / compression only: the mask stays valid
            image = perturbed(image, np.random.default_rng([self.synth.seed, self.synth.epoch,
                                                            index, 98]))
        return {"image": image, "label": item["label"].float(), "landmarks": lm.float(),
                "has_landmarks": torch.tensor(True), "index": torch.tensor(item["index"]),
                "mask": mask, "has_mask": torch.tensor(True)}


def similarity_jitter(image: torch.Tensor, mask: torch.Tensor, landmarks: torch.Tensor,
                      amount: float, rng: np.random.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (C, S, S) image and its mask moved by one random similarity transform (scale
    ``1 +- amount``, shift ``+- amount`` of the side, rotation ``+- amount`` rad; borders
    reflected), with its landmarks (68, 2 in [0, 1]) moved alike: ``data.jitter``."""
    import torch.nn.functional as F

    scale = 1.0 + rng.uniform(-amount, amount)
    angle = rng.uniform(-amount, amount)
    shift = torch.tensor(rng.uniform(-amount, amount, 2) * 2.0, dtype=torch.float32)
    c, s = np.cos(angle) / scale, np.sin(angle) / scale
    a = torch.tensor([[c, -s], [s, c]], dtype=torch.float32)  # output -> input, [-1, 1] coords
    theta = torch.cat([a, shift[:, None]], 1)[None]
    both = torch.cat([image, mask.to(image.dtype)])[None]
    grid = F.affine_grid(theta, list(both.shape), align_corners=False)
    moved = F.grid_sample(both, grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)[0]
    pts = (landmarks.float() * 2.0 - 1.0 - shift) @ torch.linalg.inv(a).T
    n = image.shape[0]
    return moved[:n], moved[n:].to(mask.dtype), (pts + 1.0) / 2.0


def perturbed(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A (3, H, W) [0, 1] image with one random perturbation, or unchanged
    (``data.augment: robust``; :func:`lorefd.data.perturb.random_perturbation`)."""
    u8 = np.ascontiguousarray((image.numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8))
    out = random_perturbation(u8, rng)
    return image if out is u8 else to_tensor(out)
