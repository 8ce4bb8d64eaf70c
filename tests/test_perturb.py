"""The DeeperForensics-1.0 perturbations (+ JPEG): each parameter's effect, determinism."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from media import stills

from lorefd.data import perturb as P
from lorefd.data.images import load_rgb
from lorefd.errors import OptionError


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A bundled 256 px face downscaled to 128 px."""
    return cv2.resize(load_rgb(stills(1)[0]), (128, 128), interpolation=cv2.INTER_AREA)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


def test_parameters_are_the_deeperforensics_ones() -> None:
    assert P.DEEPERFORENSICS == {
        "saturation": (0.4, 0.3, 0.2, 0.1, 0.0), "contrast": (0.85, 0.725, 0.6, 0.475, 0.35),
        "block": (16, 32, 48, 64, 80), "noise": (0.001, 0.002, 0.005, 0.01, 0.05),
        "blur": (7, 9, 13, 17, 21), "pixelate": (2, 3, 4, 5, 6), "h264": (30, 32, 35, 38, 40)}
    assert P.JPEG_QUALITY == (90, 75, 60, 45, 30)
    assert P.parameter("blur", 3) == 13 and P.parameter("jpeg", 5) == 30
    with pytest.raises(OptionError, match="level"):
        P.parameter("blur", 6)
    with pytest.raises(OptionError, match="unknown"):
        P.parameter("fog", 1)
    from lorefd.cli.robustness import TYPE_NAMES  # the CLI's list (kept import-light)

    assert TYPE_NAMES == P.TYPES


def test_saturation_scales_chroma(face: np.ndarray) -> None:
    grey = P.saturation(face, 0.0)
    assert np.abs(grey.astype(int) - grey[..., :1]).max() <= 1  # R = G = B
    assert mae(P.saturation(face, 1.0), face) <= 0.5
    chroma = [np.abs(P.saturation(face, s).astype(int) - P.saturation(face, 0.0)).mean()
              for s in P.DEEPERFORENSICS["saturation"]]
    assert all(a > b for a, b in zip(chroma, chroma[1:], strict=False)) and chroma[-1] == 0
    y = face.astype(np.float32) @ np.array([0.299, 0.587, 0.114])
    y0 = grey.astype(np.float32) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(y - y0).max() <= 1.0  # luma kept


def test_contrast_scales_values(face: np.ndarray) -> None:
    assert np.array_equal(P.contrast(face, 1.0), face)
    for f in P.DEEPERFORENSICS["contrast"]:
        out = P.contrast(face, f)
        assert abs(out.mean() - f * face.mean()) < 1.0  # truncation loses < 1 level


def test_block_occlusion_count_and_scale() -> None:
    img = np.zeros((128, 128, 3), np.uint8)  # no pixel is grey before
    grey = [int((P.block_occlusion(img, n, np.random.default_rng(0)) == 128).all(2).sum())
            for n in (1, 16, 80)]
    assert grey[0] == P.BLOCK * P.BLOCK and grey[0] < grey[1] < grey[2] <= 80 * 64
    big = np.zeros((512, 512, 3), np.uint8)  # min side // 256 = 2: twice the blocks
    one = int((P.block_occlusion(big, 1, np.random.default_rng(3)) == 128).all(2).sum())
    assert 64 < one <= 128
    with pytest.raises(P.PerturbationError):
        P.block_occlusion(np.zeros((8, 8, 3), np.uint8), 1, np.random.default_rng(0))


def test_noise_variance() -> None:
    img = np.full((128, 128, 3), 128, np.uint8)  # mid grey: no clipping
    for var in (0.001, 0.01):
        out = P.gaussian_noise(img, var, np.random.default_rng(0))
        ycc = cv2.cvtColor(out.astype(np.float32) / 255, cv2.COLOR_RGB2YCrCb)
        ref = cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_RGB2YCrCb)
        got = float((ycc - ref)[..., 0].var())  # Y; rounding to uint8 adds ~1/12/255^2
        assert 0.8 * var < got < 1.25 * var, (var, got)


def test_blur_kernel_size() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 255  # a vertical edge
    widths = []
    for k in P.DEEPERFORENSICS["blur"]:
        row = P.gaussian_blur(img, k)[32, :, 0]
        width = int(((row > 0) & (row < 255)).sum())
        assert width <= k  # the window is k wide: nothing changes farther away
        widths.append(width)
    assert widths == sorted(widths) and widths[0] < widths[-1]
    with pytest.raises(OptionError, match="odd"):
        P.gaussian_blur(img, 8)


def test_pixelate_factor(face: np.ndarray) -> None:
    detail = [float(np.abs(cv2.Laplacian(P.pixelate(face, f), cv2.CV_32F)).mean())
              for f in (1, *P.DEEPERFORENSICS["pixelate"])]
    assert all(a > b for a, b in zip(detail, detail[1:], strict=False))
    assert P.pixelate(face, 6).shape == face.shape
    with pytest.raises(P.PerturbationError):
        P.pixelate(face, 200)


def test_jpeg_quality(face: np.ndarray) -> None:
    errors = [mae(P.jpeg(face, q), face) for q in P.JPEG_QUALITY]
    assert all(0 < a < b for a, b in zip(errors, errors[1:], strict=False))


def test_h264_crf_changes_the_bytes(face: np.ndarray) -> None:
    frames = [np.roll(face, 3 * t, axis=1)[:63, :65] for t in range(4)]  # odd sides too
    sizes = [len(P.encode_h264(frames, c)) for c in P.DEEPERFORENSICS["h264"]]
    assert all(a > b for a, b in zip(sizes, sizes[1:], strict=False))
    assert P.encode_h264(frames, 30) == P.encode_h264(frames, 30)  # deterministic
    lo, hi = P.h264(frames, 30), P.h264(frames, 40)
    assert len(lo) == 4 and all(f.shape == (63, 65, 3) and f.dtype == np.uint8 for f in lo)
    assert np.mean([mae(a, b) for a, b in zip(lo, frames, strict=True)]) < \
        np.mean([mae(a, b) for a, b in zip(hi, frames, strict=True)])
    with pytest.raises(P.PerturbationError, match="different sizes"):
        P.h264([face, face[:64]], 30)


@pytest.mark.parametrize("kind", P.TYPES)
def test_deterministic_for_a_seed(face: np.ndarray, kind: str) -> None:
    a = P.apply(kind, face, P.parameter(kind, 3), np.random.default_rng(5))
    b = P.apply(kind, face, P.parameter(kind, 3), np.random.default_rng(5))
    assert a.shape == face.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, face)
    c = P.apply(kind, face, P.parameter(kind, 3), np.random.default_rng(6))
    assert np.array_equal(a, c) == (kind not in ("block", "noise"))  # only these draw


def test_random_perturbation_draws_every_kind(face: np.ndarray) -> None:
    drawn = [P.draw_perturbation(np.random.default_rng(i)) for i in range(200)]
    kinds = {d[0] for d in drawn if d is not None}
    assert kinds == set(P.TYPES)
    assert 60 < sum(d is None for d in drawn) < 140  # p = 0.5
    assert P.random_perturbation(face, np.random.default_rng(0), p=0.0) is face
    out = P.random_perturbation(face, np.random.default_rng(1), p=1.0)
    assert out.shape == face.shape and out.dtype == np.uint8 and not np.array_equal(out, face)
