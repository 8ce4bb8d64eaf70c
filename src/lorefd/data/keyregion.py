"""Key-region masking (Section III-B-1, Fig. 2).

1. :func:`select_corner_points` picks P1..P4 from the 68-point landmarks of every face in the
   dataset: the image-left eyebrow, image-right eyebrow, image-left jaw and image-right jaw points
   nearest the image's four corners.
2. :func:`key_rectangle` expands the box through P1..P4 outward by a margin.
3. :func:`key_patch_set` maps the rectangle to T, the indices of the patches it covers.
4. :func:`key_region_masking` masks a ratio ``p`` of the patches of each sample so that as much
   of T as the ratio allows is masked, the rest at random outside T.

Coordinates here are normalised to ``[0, 1]`` (x right, y down) so one region serves every
image size; patch indices are row-major over the ``image_size / patch_size`` grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from lorefd.config import ConfigError
from lorefd.data.landmarks import JAW, LEFT_EYEBROW, RIGHT_EYEBROW

# The image-left half of the jaw line (points 0-8) and the image-right half (8-16).
IMAGE_LEFT_JAW = JAW[:9]
IMAGE_RIGHT_JAW = JAW[8:]
# Landmark groups searched for P1..P4, in the order of the corners they are nearest to.
CORNER_GROUPS = (RIGHT_EYEBROW, LEFT_EYEBROW, IMAGE_LEFT_JAW, IMAGE_RIGHT_JAW)


@dataclass
class KeyRegion:
    """The key rectangle (normalised ``x0, y0, x1, y1``) and its corner points P1..P4."""

    rect: tuple[float, float, float, float]
    corners: tuple[tuple[float, float], ...]  # P1 (top-left) .. P4 (bottom-right), normalised
    margin: float

    def patch_set(self, image_size: int, patch_size: int) -> list[int]:
        return key_patch_set(self.rect, image_size, patch_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> KeyRegion:
        return cls(rect=tuple(d["rect"]), corners=tuple(tuple(c) for c in d["corners"]),
                   margin=float(d["margin"]))


def normalise_landmarks(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """Pixel landmarks ``(..., 68, 2)`` of a ``width x height`` crop to ``[0, 1]``."""
    return np.asarray(points, dtype=np.float64) / np.array([width, height], dtype=np.float64)


def select_corner_points(landmarks: np.ndarray) -> np.ndarray:
    """P1..P4 ``(4, 2)`` from normalised landmarks ``(M, 68, 2)`` of M faces.

    P1: image-left eyebrow point nearest the top-left corner; P2: image-right eyebrow point
    nearest the top-right corner; P3: image-left jaw point nearest the bottom-left corner;
    P4: image-right jaw point nearest the bottom-right corner.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (68, 2) or len(lm) == 0:
        raise ValueError(f"expected landmarks of shape (M, 68, 2), got {lm.shape}")
    groups = CORNER_GROUPS
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = []
    for idx, corner in zip(groups, corners, strict=True):
        pts = lm[:, idx].reshape(-1, 2)
        out.append(pts[np.argmin(((pts - corner) ** 2).sum(1))])
    return np.stack(out)


def key_rectangle(corners: np.ndarray, margin: float) -> tuple[float, float, float, float]:
    """The rectangle through P1..P4 expanded outward by ``margin``, clipped to the image."""
    c = np.asarray(corners, dtype=np.float64)
    x0, y0 = c[:, 0].min() - margin, c[:, 1].min() - margin
    x1, y1 = c[:, 0].max() + margin, c[:, 1].max() + margin
    return (float(max(0.0, x0)), float(max(0.0, y0)), float(min(1.0, x1)), float(min(1.0, y1)))


def key_patch_set(rect: tuple[float, float, float, float], image_size: int,
                  patch_size: int) -> list[int]:
    """T: row-major indices of the patches that overlap the rectangle (any overlap)."""
    if image_size % patch_size:
        raise ConfigError(f"image size {image_size} is not a multiple of patch size {patch_size}")
    g = image_size // patch_size
    x0, y0, x1, y1 = (v * g for v in rect)
    cols = [j for j in range(g) if j + 1 > x0 and j < x1]
    rows = [i for i in range(g) if i + 1 > y0 and i < y1]
    return [i * g + j for i in rows for j in cols]


def dataset_key_region(landmarks: np.ndarray, margin: float) -> KeyRegion:
    """The paper's dataset-level region from normalised landmarks ``(M, 68, 2)``."""
    corners = select_corner_points(landmarks)
    return KeyRegion(rect=key_rectangle(corners, margin),
                     corners=tuple(tuple(float(v) for v in p) for p in corners), margin=margin)


def sample_key_masks(landmarks: torch.Tensor, image_size: int, patch_size: int,
                     margin: float) -> torch.Tensor:
    """Per-sample option: a boolean ``(B, N)`` key-patch mask from each face's own landmarks.

    ``landmarks`` is ``(B, 68, 2)`` normalised; vectorised over the batch. Each face gets the
    same construction as :func:`dataset_key_region` applied to that face alone (P1..P4 nearest
    the image corners, rectangle expanded by ``margin``, any-overlap patches).
    """
    g = image_size // patch_size
    lm = landmarks.to(torch.float64)
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=lm.dtype,
                           device=lm.device)
    pts = []
    for idx, corner in zip(CORNER_GROUPS, corners, strict=True):
        group = lm[:, idx]  # (B, k, 2)
        nearest = ((group - corner) ** 2).sum(-1).argmin(1)  # (B,)
        pts.append(group[torch.arange(len(lm), device=lm.device), nearest])
    p = torch.stack(pts, 1)  # (B, 4, 2): P1..P4 per face
    x0 = (p[..., 0].min(1).values - margin).clamp(0, 1) * g
    y0 = (p[..., 1].min(1).values - margin).clamp(0, 1) * g
    x1 = (p[..., 0].max(1).values + margin).clamp(0, 1) * g
    y1 = (p[..., 1].max(1).values + margin).clamp(0, 1) * g
    idx = torch.arange(g, device=lm.device, dtype=lm.dtype)
    col = (idx[None] + 1 > x0[:, None]) & (idx[None] < x1[:, None])  # (B, g)
    row = (idx[None] + 1 > y0[:, None]) & (idx[None] < y1[:, None])
    return (row[:, :, None] & col[:, None, :]).reshape(len(lm), g * g)


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Visible patches per sample: exactly ``round(N * (1 - p))``, at least one."""
    return max(1, int(round(num_patches * (1.0 - mask_ratio))))


def key_region_masking(key: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None,
                       random_fraction: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample masks that cover as much of T as the ratio allows (Section III-B-1).

    Args:
        key: boolean ``(B, N)`` (per-sample T) or ``(N,)`` (dataset T) key-patch indicator.
        mask_ratio: p, the share of patches masked.
        generator: seeds the random choice (deterministic masks at evaluation).
        random_fraction: share of samples masked purely at random instead (an option).

    Returns:
        ``ids_keep (B, V)`` visible patch indices, ``mask (B, N)`` with 1 = masked, and
        ``ids_restore (B, N)`` to unshuffle decoder tokens (as in MAE).

    Patches get noise in ``[0, 1)``; key patches get ``+1`` so they sort last and are masked
    first. Every sample keeps exactly :func:`num_visible` patches.
    """
    if key.dim() == 1:
        raise ValueError("pass a (B, N) key indicator; expand a dataset T with key.expand(B, -1)")
    b, n = key.shape
    device = key.device
    noise = torch.rand(b, n, device=device, generator=generator)
    priority = key.to(noise.dtype)
    if random_fraction > 0:
        plain = torch.rand(b, 1, device=device, generator=generator) < random_fraction
        priority = priority.masked_fill(plain, 0.0)
    ids_shuffle = torch.argsort(noise + priority, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    keep = num_visible(n, mask_ratio)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(b, n, device=device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_keep, mask, ids_restore


def key_indicator(patch_set: list[int], num_patches: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean ``(N,)`` indicator of a patch set T."""
    ind = torch.zeros(num_patches, dtype=torch.bool, device=device)
    if patch_set:
        ind[torch.as_tensor(patch_set, device=device)] = True
    return ind
