"""Baseline: plain Xception classifier, the same harness with the attention off (Table V)."""

from __future__ import annotations

from typing import Any

import torch

from lorefd.config import Config
from lorefd.models.detectors.base import Detector
from lorefd.models.registry import register_detector
from lorefd.models.xception import create_xception


class XceptionDetector(Detector):
    """``legacy_xception`` on the face crop; no reconstruction, no attention."""

    name = "xception"

    def __init__(self, image_size: int, pretrained: bool = True, weights: str | None = None,
                 drop_rate: float = 0.5) -> None:
        super().__init__(image_size)
        self.net = create_xception(1, drop_rate, pretrained, weights)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.net(images).squeeze(1)}

    def explain(self, images: torch.Tensor) -> dict[str, Any]:
        return {"prob": self.predict_proba(images), "recon": None, "diff": None, "attention": {}}


@register_detector("xception")
def build_xception(cfg: Config, mae: Any = None, pretrained: bool = True,
                   weights: str | None = None) -> XceptionDetector:
    """The MAE, if given, is ignored: the baseline does not reconstruct."""
    return XceptionDetector(cfg.data.image_size, pretrained, weights, cfg.detector.drop_rate)
