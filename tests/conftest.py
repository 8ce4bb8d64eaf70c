"""Shared test setup: CPU threads, the bundled faces, the tiny models, a mini FF++.

One place for what many test files need (import the helpers with ``from conftest import ...``
or use the fixtures):

* :func:`tiny_config` / ``TINY``: the ``tiny`` config at its smallest (1-block 32-d MAE, two
  steps, no augmentation); :func:`save_tiny_mae` a random stage-1 checkpoint with a key region;
* :func:`make_detector_checkpoint`: a tiny saved detector (random, with a scaled head so
  scores differ from face to face), for export / detect / serve / evaluate tests;
* :func:`make_mini_ffpp`: an FF++-shaped manifest from the bundled faces (stand-in fakes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from lorefd.apps.protocols import METHODS, SHORT
from lorefd.checkpoint import save_checkpoint
from lorefd.config import Config, load_config
from lorefd.data.manifest import FAKE, REAL, Sample, read_manifest, write_manifest

# One thread per xdist worker (two workers on two cores); two when run alone, unless
# OMP_NUM_THREADS says otherwise (tests beside a training: OMP_NUM_THREADS=1).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER")
                      else int(os.environ.get("OMP_NUM_THREADS") or 2))

ASSETS = Path(__file__).resolve().parents[1] / "src" / "lorefd" / "assets"

# ------------------------------------------------------------------------------ tiny models
TINY = ["mae.encoder_dim=32", "mae.encoder_depth=1", "mae.encoder_heads=2",
        "mae.decoder_dim=32", "mae.decoder_depth=1", "mae.decoder_heads=2",
        "train.epochs=1", "train.iters_per_epoch=2", "train.batch_size=4", "train.log_every=1",
        "data.augment=false"]
KEY = [i * 8 + j for i in range(2, 7) for j in range(2, 6)]  # a central block of the 8x8 grid


def tiny_config(*overrides: str) -> Config:
    """The ``tiny`` config with ``TINY`` and ``overrides`` applied."""
    return load_config("tiny", TINY + list(overrides))


def save_tiny_mae(path: Path, image_size: int = 64, seed: int = 0) -> Path:
    """A random tiny stage-1 MAE checkpoint at ``path`` with the key region ``KEY``."""
    from lorefd.models.mae import build_mae

    cfg = tiny_config(f"data.image_size={image_size}")
    torch.manual_seed(seed)
    mae = build_mae(image_size, cfg.mae, cfg.mask)
    keys = [k for k in KEY if k < mae.num_patches]
    mae.set_key_patches(keys)
    save_checkpoint(path, mae, cfg, {"kind": "mae", "step": 0, "key_region": {"patches": keys}})
    return path


def make_detector_checkpoint(folder: Path, name: str = "lre", seed: int = 0,
                             meta: dict[str, Any] | None = None, sub: str = "det") -> Path:
    """A tiny detector checkpoint at ``folder/sub`` (its MAE at ``folder/mae``); the classifier
    weights are drawn large so scores differ from face to face (a random head gives ~0.5)."""
    from lorefd.models.detectors import build_detector, save_detector

    cfg = tiny_config(f"detector.name={name}")
    mae = None
    if name == "lre":
        mae = folder / "mae"
        if not (mae / "config.json").is_file():
            save_tiny_mae(mae)
    torch.manual_seed(seed)
    det = build_detector(cfg, mae)
    det.eval()
    with torch.no_grad():  # random init gives features ~1e-5: scale the head to logits ~ +-2
        fc = det.net.body.fc
        fc.weight.normal_(0.0, 1.0)
        fc.bias.zero_()
        calib = torch.rand(8, 3, det.image_size, det.image_size,
                           generator=torch.Generator().manual_seed(seed))
        logits = det(calib)["logits"]
        fc.weight.mul_(2.0 / logits.std().clamp_min(1e-12))
        fc.bias.fill_(-float(det(calib)["logits"].mean()))
    return save_detector(folder / sub, det, cfg, {"epoch": 0, "step": 10, **(meta or {})})


# ------------------------------------------------------------------------------ mini FF++
def _region(pts: np.ndarray, idx: slice, pad: int, size: int) -> tuple[int, int, int, int]:
    p = pts[idx]
    x0, y0 = (p.min(0) - pad).clip(0, size - 1).astype(int)
    x1, y1 = (p.max(0) + pad).clip(1, size).astype(int)
    return x0, y0, max(x1, x0 + 2), max(y1, y0 + 2)


def fake_face(rgb: np.ndarray, pts: np.ndarray, method: str, rng: np.random.Generator) -> np.ndarray:
    """A visibly altered local region standing in for a manipulation."""
    out = rgb.copy()
    size = rgb.shape[0]
    pad = max(2, size // 32)
    if method == "Deepfakes":  # blurred inner face (eyes to mouth)
        x0, y0, x1, y1 = _region(pts, slice(17, 68), pad, size)
        out[y0:y1, x0:x1] = cv2.GaussianBlur(out[y0:y1, x0:x1], (0, 0), size / 40)
    elif method == "Face2Face":  # mouth shifted down
        x0, y0, x1, y1 = _region(pts, slice(48, 68), pad, size)
        dy = max(2, (y1 - y0) // 3)
        n = min(size, y1 + dy) - (y0 + dy)
        if n > 0:
            out[y0 + dy:y0 + dy + n, x0:x1] = rgb[y0:y0 + n, x0:x1]
    elif method == "FaceSwap":  # colour-shifted eye band
        x0, y0, x1, y1 = _region(pts, slice(17, 48), pad, size)
        patch = out[y0:y1, x0:x1].astype(np.int16) + np.array([40, -25, -25], dtype=np.int16)
        out[y0:y1, x0:x1] = patch.clip(0, 255).astype(np.uint8)
    elif method == "NeuralTextures":  # noisy mouth texture
        x0, y0, x1, y1 = _region(pts, slice(48, 68), pad, size)
        noise = rng.normal(0, 40, out[y0:y1, x0:x1].shape)
        out[y0:y1, x0:x1] = (out[y0:y1, x0:x1] + noise).clip(0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown method {method}")
    return out


def make_mini_ffpp(out_dir: str | Path, n_faces: int = 40, size: int = 64,
                   compressions: tuple[str, ...] = ("c23",), seed: int = 0,
                   split_fractions: tuple[float, float] = (0.5, 0.25)) -> Path:
    """A small FF++-shaped manifest from the bundled real faces.

    Each face gives one real and one fake per method (FF++'s 1 real : 4 fake), saved as
    JPEG (quality 95 for ``c23``, 60 for ``c40``) at ``size`` px with scaled landmarks; faces
    are split train/val/test by ``split_fractions``. Returns the manifest path.
    """
    faces = read_manifest(ASSETS / "faces" / "manifest.csv")[:n_faces]
    if len(faces) < 4:
        raise ValueError("make_mini_ffpp needs at least 4 faces")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    n_train = max(1, int(len(faces) * split_fractions[0]))
    n_val = max(1, int(len(faces) * split_fractions[1]))
    quality = {"c23": 95, "c40": 60}
    samples: list[Sample] = []
    for i, face in enumerate(faces):
        split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
        rgb = cv2.cvtColor(cv2.imread(face.path), cv2.COLOR_BGR2RGB)
        pts = face.load_landmarks() * (size / rgb.shape[0])
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        vid = Path(face.path).stem
        lm_path = out / "landmarks" / f"{vid}.npy"
        lm_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(lm_path, pts.astype(np.float32))
        variants = [("", REAL, rgb)] + [(m, FAKE, fake_face(rgb, pts, m, rng)) for m in METHODS]
        for c in compressions:
            for method, label, img in variants:
                folder = "original" if label == REAL else method
                path = out / c / folder / f"{vid}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality.get(c, 90)])
                samples.append(Sample(
                    path=str(path), label=label, dataset="FF++", split=split,
                    video_id=vid if label == REAL else f"{vid}_{SHORT[method]}", frame_index=0,
                    method=method, compression=c, landmarks=str(lm_path)))
    manifest = out / "manifest.csv"
    write_manifest(manifest, samples)
    return manifest


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def faces_manifest() -> Path:
    """The bundled 160 real FFHQ faces with landmarks (no ../shared needed)."""
    return ASSETS / "faces" / "manifest.csv"


@pytest.fixture(scope="session")
def tiny_mae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny stage-1 MAE checkpoint (64 px), shared by the session."""
    return save_tiny_mae(tmp_path_factory.mktemp("tiny_mae") / "mae")


@pytest.fixture(scope="session")
def mini_ffpp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-face mini FF++ manifest, shared by the session."""
    return make_mini_ffpp(tmp_path_factory.mktemp("mini_ffpp") / "ffpp", n_faces=12)


@pytest.fixture(autouse=True)
def _keep_log_handlers():
    """`lorefd.cli.main()` attaches a log handler; drop it after each test."""
    import logging

    logger = logging.getLogger("lorefd")
    before = list(logger.handlers)
    yield
    logger.handlers[:] = before
