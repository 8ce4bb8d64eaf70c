"""Key-region masking (Section III-B-1): P1..P4, rectangle, T, and the masking properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorefd.data.keyregion import (
    CORNER_GROUPS,
    KeyRegion,
    dataset_key_region,
    key_indicator,
    key_patch_set,
    key_rectangle,
    key_region_masking,
    normalise_landmarks,
    num_visible,
    sample_key_masks,
    select_corner_points,
)
from lorefd.data.manifest import read_manifest


@pytest.fixture(scope="module")
def bundled_landmarks(faces_manifest) -> np.ndarray:
    """Normalised landmarks ``(160, 68, 2)`` of the bundled 256 px faces."""
    samples = read_manifest(faces_manifest)
    return np.stack([normalise_landmarks(s.load_landmarks(), 256, 256) for s in samples])


def random_landmarks(rng: np.random.Generator, m: int) -> np.ndarray:
    """Face-like random landmarks: a jittered template, scaled and shifted per face."""
    base = rng.uniform(0.25, 0.75, size=(68, 2))
    scale = rng.uniform(0.6, 1.2, size=(m, 1, 1))
    shift = rng.uniform(-0.15, 0.15, size=(m, 1, 2))
    return np.clip((base - 0.5) * scale + 0.5 + shift + rng.normal(0, 0.02, (m, 68, 2)), 0, 1)


def test_corner_points_are_the_nearest_of_their_groups(bundled_landmarks):
    p = select_corner_points(bundled_landmarks)
    corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float)
    for k, (group, corner) in enumerate(zip(CORNER_GROUPS, corners, strict=True)):
        pts = bundled_landmarks[:, group].reshape(-1, 2)
        d = ((pts - corner) ** 2).sum(1)
        assert ((p[k] - corner) ** 2).sum() == pytest.approx(d.min())
        assert any(np.allclose(p[k], q) for q in pts)  # a real landmark, not a box corner


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margin", [0.0, 0.02, 0.1])
def test_rectangle_contains_corner_points_with_margin(seed, margin):
    lm = random_landmarks(np.random.default_rng(seed), 20)
    region = dataset_key_region(lm, margin)
    x0, y0, x1, y1 = region.rect
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    eps = 1e-12
    for x, y in region.corners:  # each P, expanded by the margin (within the image), is inside
        assert x0 <= max(0.0, x - margin) + eps and min(1.0, x + margin) - eps <= x1
        assert y0 <= max(0.0, y - margin) + eps and min(1.0, y + margin) - eps <= y1
    # the rectangle is the tightest such box: its edges touch the expanded corner points
    c = np.asarray(region.corners)
    assert x0 == pytest.approx(max(0.0, c[:, 0].min() - margin))
    assert y1 == pytest.approx(min(1.0, c[:, 1].max() + margin))


@pytest.mark.parametrize("image_size,patch_size", [(224, 16), (64, 8), (32, 8)])
def test_patch_set_is_exactly_the_patches_overlapping_the_rectangle(bundled_landmarks,
                                                                    image_size, patch_size):
    region = dataset_key_region(bundled_landmarks, 0.02)
    t = set(key_patch_set(region.rect, image_size, patch_size))
    g = image_size // patch_size
    x0, y0, x1, y1 = region.rect
    for i in range(g):
        for j in range(g):
            overlaps = (j + 1) / g > x0 and j / g < x1 and (i + 1) / g > y0 and i / g < y1
            assert ((i * g + j) in t) == overlaps
    # the bundled faces are aligned crops: T is a central block, neither empty nor everything
    assert 0 < len(t) < g * g


def test_key_region_json_round_trip(bundled_landmarks):
    region = dataset_key_region(bundled_landmarks, 0.03)
    again = KeyRegion.from_dict(region.to_dict())
    assert again == region
    assert again.patch_set(224, 16) == region.patch_set(224, 16)


@pytest.mark.parametrize("seed", range(3))
def test_per_sample_keys_equal_the_dataset_construction_on_each_face(seed, bundled_landmarks):
    rng = np.random.default_rng(seed)
    lm = np.concatenate([random_landmarks(rng, 6), bundled_landmarks[rng.choice(160, 6)]])
    keys = sample_key_masks(torch.as_tensor(lm, dtype=torch.float32), 64, 8, 0.02)
    assert keys.shape == (12, 64) and keys.dtype == torch.bool
    for i in range(len(lm)):
        expect = key_indicator(dataset_key_region(lm[i].astype(np.float32), 0.02).patch_set(64, 8), 64)
        assert torch.equal(keys[i], expect), i
    # faces differ, so per-sample sets differ from one another and from the dataset set
    assert len({tuple(k.tolist()) for k in keys}) > 1


@pytest.mark.parametrize("n", [16, 64, 196])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.75, 0.9])
def test_visible_count_is_constant_and_most_of_t_is_masked(n, ratio):
    gen = torch.Generator().manual_seed(n)
    b = 32
    # per-sample T of every size, 0..n
    sizes = torch.linspace(0, n, b).round().long()
    key = torch.arange(n)[None] < sizes[:, None]
    key = key[:, torch.randperm(n, generator=gen)]
    ids_keep, mask, ids_restore = key_region_masking(key, ratio, gen)
    v = num_visible(n, ratio)
    assert v == max(1, round(n * (1 - ratio)))
    assert ids_keep.shape == (b, v)
    assert torch.equal(mask.sum(1), torch.full((b,), float(n - v)))
    # visible patches are exactly ids_keep, and ids_restore inverts the shuffle
    vis = torch.zeros(b, n)
    vis.scatter_(1, ids_keep, 1.0)
    assert torch.equal(vis, 1 - mask)
    masked_t = (mask.bool() & key).sum(1)
    masked_out = (mask.bool() & ~key).sum(1)
    assert torch.equal(masked_t, torch.minimum(sizes, torch.tensor(n - v)))
    assert torch.equal(masked_out, (n - v - sizes).clamp_min(0))
    assert torch.equal(torch.gather(torch.argsort(ids_restore, 1), 1, ids_restore),
                       torch.arange(n).expand(b, -1))


def test_masking_is_random_outside_t_and_seeded():
    n, b = 64, 256
    key = key_indicator(list(range(20)), n).expand(b, -1)
    _, m1, _ = key_region_masking(key, 0.5, torch.Generator().manual_seed(1))
    _, m2, _ = key_region_masking(key, 0.5, torch.Generator().manual_seed(1))
    _, m3, _ = key_region_masking(key, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    # 12 of the 44 outside patches are masked per sample; each about 12/44 of the time
    share = m1[:, 20:].mean(0)
    assert share.min() > 0.1 and share.max() < 0.5


def test_random_fraction_masks_plain_random_samples():
    n, b = 64, 400
    key = key_indicator(list(range(16)), n).expand(b, -1)
    gen = torch.Generator().manual_seed(0)
    _, mask, _ = key_region_masking(key, 0.75, gen, random_fraction=0.0)
    assert bool(mask[:, :16].all())  # all of T fits in 48 masked patches
    _, mask, _ = key_region_masking(key, 0.75, gen, random_fraction=1.0)
    share_t = mask[:, :16].mean().item()
    assert 0.65 < share_t < 0.85  # like any patch: ~0.75, not 1.0
    assert torch.equal(mask.sum(1), torch.full((b,), 48.0))
    _, mask, _ = key_region_masking(key, 0.75, gen, random_fraction=0.5)
    full = mask[:, :16].all(1).float().mean().item()
    assert 0.4 < full < 0.65  # about half the samples keep the key-region priority


def test_dataset_key_must_be_batched():
    with pytest.raises(ValueError):
        key_region_masking(torch.zeros(16, dtype=torch.bool), 0.75)


def test_bad_landmark_shapes_raise():
    with pytest.raises(ValueError):
        select_corner_points(np.zeros((3, 5, 2)))
    with pytest.raises(ValueError):
        key_patch_set((0, 0, 1, 1), 100, 16)
    assert key_rectangle(np.array([[0.01, 0.01], [0.99, 0.01], [0.01, 0.99], [0.99, 0.99]]),
                         0.1) == (0.0, 0.0, 1.0, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_masking_runs_on_gpu():
    key = key_indicator(list(range(90)), 196, device="cuda").expand(64, -1)
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids_keep, mask, _ = key_region_masking(key, 0.75, gen)
    assert ids_keep.is_cuda and mask.is_cuda
    assert bool((mask.sum(1) == 147).all()) and bool(mask[:, :90].bool().all())
    lm = torch.rand(8, 68, 2, device="cuda")
    assert sample_key_masks(lm, 224, 16, 0.02).is_cuda
