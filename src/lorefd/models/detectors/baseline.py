"""Baseline: the plain CNN classifier, the same harness with the attention off (Table V).

The paper's baseline is Xception (``detector.backbone: legacy_xception``); any backbone of
:mod:`lorefd.models.backbone` can be named. Registered as ``baseline``; ``xception``, its
older name, is a deprecation (bundles exported under it still load, with a warning).
"""

from __future__ import annotations

from typing import Any

import torch

from lorefd.config import Config
from lorefd.models.backbone import create_backbone
from lorefd.models.detectors.base import Detector
from lorefd.models.registry import register_detector, register_detector_deprecations


class BaselineDetector(Detector):
    """The backbone on the face crop; no reconstruction, no attention."""

    name = "baseline"

    def __init__(self, image_size: int, backbone: str = "legacy_xception", pretrained: bool = True,
                 weights: str | None = None, drop_rate: float = 0.5, mask_weight: float = 0.0,
                 mask_layer: str = "stride16") -> None:
        super().__init__(image_size)
        self.backbone = backbone
        self.net = create_backbone(backbone, 1, drop_rate, pretrained, weights)
        self.init_mask_head(self.net, mask_layer, mask_weight)

    def extra_meta(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "mask_layer": self.mask_layer}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classify(self.net, images)

    @torch.no_grad()
    def explain_once(self, images: torch.Tensor) -> dict[str, Any]:
        out = self(images)
        return {"logits": out["logits"], "recon": None, "diff": None,
                "attention": self.forgery_map(out)}


def _build(cfg: Config, pretrained: bool, weights: str | None) -> BaselineDetector:
    d = cfg.detector
    return BaselineDetector(cfg.data.image_size, d.backbone, pretrained, weights, d.drop_rate,
                            d.mask_weight, d.mask_layer)


@register_detector("baseline")
def build_baseline(cfg: Config, mae: Any = None, pretrained: bool = True,
                   weights: str | None = None) -> BaselineDetector:
    """The MAE, if given, is ignored: the baseline does not reconstruct."""
    return _build(cfg, pretrained, weights)


register_detector_deprecations({"xception": "baseline"})
