"""Tiny detectors (64 px, random weights) saved as checkpoints, for the export / detect tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lorefd.checkpoint import save_checkpoint
from lorefd.config import load_config
from lorefd.models.detectors import build_detector, save_detector
from lorefd.models.mae import build_mae

# A centre block of the 8x8 patch grid as the key region T (as stage 1 would store it).
KEY_PATCHES = [18, 19, 20, 21, 26, 27, 28, 29, 34, 35, 36, 37, 42, 43, 44, 45]


def make_mae_checkpoint(folder: Path) -> Path:
    """A tiny stage-1 MAE checkpoint (2 encoder blocks) with T set."""
    cfg = load_config("tiny", ["mae.encoder_depth=2", "mae.decoder_depth=1"])
    torch.manual_seed(0)
    mae = build_mae(cfg.data.image_size, cfg.mae, cfg.mask)
    mae.set_key_patches(KEY_PATCHES)
    return save_checkpoint(folder / "mae", mae, cfg, {"kind": "mae", "step": 0,
                                                      "key_region": {"patches": KEY_PATCHES}})


def make_detector_checkpoint(folder: Path, name: str = "lre", seed: int = 0,
                             meta: dict[str, Any] | None = None, sub: str = "det") -> Path:
    """A tiny detector checkpoint at ``folder/sub``; the classifier weights are drawn large so
    scores differ from face to face (a random head gives ~0.5 for everything)."""
    cfg = load_config("tiny", ["mae.encoder_depth=2", "mae.decoder_depth=1",
                               f"detector.name={name}"])
    mae = None
    if name == "lre":
        mae = folder / "mae"
        if not (mae / "config.json").is_file():
            make_mae_checkpoint(folder)
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
