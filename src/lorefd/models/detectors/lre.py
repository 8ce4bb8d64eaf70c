"""The paper's detector: reconstruction-guided Xception (Section III-C, Fig. 1, Eqs. 2-3).

1. :meth:`LREDetector.reconstruct`: the frozen stage-1 MAE masks the key region and
   reconstructs the face (random masks in training; seeded, deterministic masks at evaluation).
2. :meth:`LREDetector.attention`: a frozen Xception extracts middle-layer features of the input
   and of its reconstruction; Eq. (2) turns each pair into a local difference attention map.
3. :meth:`LREDetector.forward`: the detection Xception multiplies its own features at those
   layers by the maps and classifies; trained with BCE (Eq. 3).

Masking uses the dataset-level key-patch set T stored in the MAE checkpoint (the paper's
construction, Section III-B-1), also when stage 1 was trained with per-sample regions.

Evaluation masks: with ``detector.eval_masks = K`` (default 1) the attention maps of K masks
drawn from generators seeded ``(mask_seed, k)`` are averaged. The same K masks are used for every
image, so an image's score does not depend on the batch it is in, the device, or run order.
"""

from __future__ import annotations

from typing import Any

import torch

from lorefd.config import Config, ConfigError
from lorefd.errors import CheckpointError, OptionError
from lorefd.models.attention import attention_maps
from lorefd.models.backbone import create_backbone, resolve_layers
from lorefd.models.detectors.base import Detector
from lorefd.models.mae import KeyRegionMAE
from lorefd.models.registry import register_detector
from lorefd.models.xception import freeze


class LREDetector(Detector):
    """Local reconstruction errors guide an Xception detector (the paper's method)."""

    name = "lre"

    def __init__(self, mae: KeyRegionMAE, image_size: int, layers: list[str],
                 pretrained: bool = True, weights: str | None = None, drop_rate: float = 0.5,
                 eval_masks: int = 1, mask_seed: int = 0,
                 extractor_weights: str | None = None, backbone: str = "legacy_xception",
                 mask_weight: float = 0.0, mask_layer: str = "stride16") -> None:
        super().__init__(image_size)
        if mae.image_size != image_size:
            raise CheckpointError(f"MAE image size {mae.image_size} != detector image size "
                                  f"{image_size}")
        if eval_masks < 1:
            raise ConfigError(f"detector.eval_masks must be >= 1, got {eval_masks}")
        self.eval_masks = eval_masks
        self.mask_seed = mask_seed
        self.mae = freeze(mae)
        self._mask_cache: dict[tuple[int, int, str], tuple[torch.Tensor, ...]] = {}
        # Frozen feature extractor (pretrained when available) and the detection network,
        # same architecture so the maps match its layers (Section III-C).
        # ``extractor_weights`` (e.g. a trained baseline, offline) overrides ``weights`` for it.
        self.backbone = backbone
        self.extractor = freeze(create_backbone(backbone, 0, 0.0, pretrained,
                                                extractor_weights or weights))
        self.net = create_backbone(backbone, 1, drop_rate, pretrained, weights)
        # [] / strideN: the stages whose grid matches the MAE patch grid (models/backbone.py)
        self.layers = resolve_layers(self.net, layers, mae.patch_size)
        self.init_mask_head(self.net, mask_layer, mask_weight)

    def load_state_dict(self, *args: Any, **kwargs: Any):
        self._mask_cache.clear()  # T may change with the weights
        return super().load_state_dict(*args, **kwargs)

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.mae, self.extractor]

    def extra_meta(self) -> dict[str, Any]:
        return {"layers": self.layers, "eval_masks": self.eval_masks, "mask_seed": self.mask_seed,
                "backbone": self.backbone, "mask_layer": self.mask_layer}

    # ---- step 1: masked reconstruction ---------------------------------------------------
    def eval_mask(self, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The k-th deterministic mask ``(ids_keep, mask, ids_restore)``, each ``(1, ...)``."""
        cache_key = (int(self.mask_seed), k, str(device))
        if cache_key not in self._mask_cache:  # drawn on the CPU: the same on every device
            g = torch.Generator().manual_seed(int(self.mask_seed) * 1_000_003 + k)
            key = self.mae.key_patches.detach().cpu()[None]
            masks = self.mae.key_region_masking(1, key, g)
            self._mask_cache[cache_key] = tuple(t.to(device) for t in masks)
        return self._mask_cache[cache_key]

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Key-region masked reconstruction with the input's visible patches pasted back.

        ``k=None``: a fresh random mask per image (training); ``k``: deterministic mask k.
        """
        mae = self.mae
        b = images.shape[0]
        if k is None:
            ids_keep, mask, ids_restore = mae.key_region_masking(b)
        else:
            ids_keep, mask, ids_restore = (t.expand(b, -1) for t in self.eval_mask(k, images.device))
        pred = mae.forward_decoder(mae.forward_encoder(images, ids_keep), ids_restore)
        pix = mae.mask_to_pixels(mask).to(images.dtype)
        return images * (1 - pix) + mae.pred_to_image(pred).to(images.dtype) * pix

    # ---- step 2: attention maps (Eq. 2) --------------------------------------------------
    @torch.no_grad()
    def attention(self, images: torch.Tensor, return_recon: bool = False):
        """``{layer: (B, 1, h, w)}``, averaged over ``eval_masks`` masks outside training."""
        ks: list[int | None] = [None] if self.training else list(range(self.eval_masks))
        recons = [self.reconstruct(images, k) for k in ks]
        # one extractor pass over input and all reconstructions
        batch = torch.cat([images, *recons], dim=0)
        _, feats = self.extractor.forward_features(batch, return_layers=self.layers,
                                                   stop_at=self.layers[-1])
        b = images.shape[0]
        maps: dict[str, torch.Tensor] = {}
        for name, f in feats.items():
            f_in = f[:b]
            acc = None
            for i in range(len(ks)):
                a = attention_maps({name: f_in}, {name: f[b * (i + 1):b * (i + 2)]})[name]
                acc = a if acc is None else acc + a
            maps[name] = acc / len(ks)
        return (maps, recons[0]) if return_recon else maps

    # ---- step 3: guided classification (Eq. 3 in Detector.loss) --------------------------
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.attention(images)
        return {**self.classify(self.net, images, maps), "attention": maps}

    @torch.no_grad()
    def explain_once(self, images: torch.Tensor) -> dict[str, Any]:
        maps, recon = self.attention(images, return_recon=True)
        out = self.classify(self.net, images, maps)
        return {"logits": out["logits"], "recon": recon,
                "diff": (images - recon).abs(), "attention": {**maps, **self.forgery_map(out)}}


@register_detector("lre")
def build_lre(cfg: Config, mae: KeyRegionMAE | None = None, pretrained: bool = True,
              weights: str | None = None) -> LREDetector:
    if mae is None:
        raise OptionError("the lre detector needs a stage-1 MAE checkpoint (--mae CKPT; "
                          "train one with `lorefd pretrain`)")
    d = cfg.detector
    return LREDetector(mae, cfg.data.image_size, d.layers, pretrained, weights, d.drop_rate,
                       d.eval_masks, d.mask_seed, extractor_weights=d.extractor_weights,
                       backbone=d.backbone, mask_weight=d.mask_weight, mask_layer=d.mask_layer)
