"""Shared helpers of the stage-2 tests: a tiny config, a tiny saved MAE, a mini FF++ manifest."""

from __future__ import annotations

from pathlib import Path

import torch

from lorefd.checkpoint import save_checkpoint
from lorefd.config import Config, load_config
from lorefd.models.mae import build_mae

TINY = ["mae.encoder_dim=32", "mae.encoder_depth=1", "mae.encoder_heads=2",
        "mae.decoder_dim=32", "mae.decoder_depth=1", "mae.decoder_heads=2",
        "train.epochs=1", "train.iters_per_epoch=2", "train.batch_size=4", "train.log_every=1",
        "data.augment=false"]
KEY = [i * 8 + j for i in range(2, 7) for j in range(2, 6)]  # a central block of the 8x8 grid


def tiny_config(*overrides: str) -> Config:
    return load_config("tiny", TINY + list(overrides))


def save_tiny_mae(path: Path, image_size: int = 64, seed: int = 0) -> Path:
    cfg = tiny_config(f"data.image_size={image_size}")
    torch.manual_seed(seed)
    mae = build_mae(image_size, cfg.mae, cfg.mask)
    mae.set_key_patches([k for k in KEY if k < mae.num_patches])
    save_checkpoint(path, mae, cfg, {"kind": "mae"})
    return path
