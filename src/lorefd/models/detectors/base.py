"""The detector interface, and building / saving / loading detectors by registry name.

A detector is an ``nn.Module`` taking ``[0, 1]`` images ``(B, 3, S, S)``:

* ``forward(images) -> {"logits": (B,), ...}``
* ``loss(out, labels)``: binary cross-entropy on the logits (Eq. 3)
* ``infer(images)``: ``forward`` with the test-time flip (``detector.tta``) outside training
* ``predict_proba(images) -> (B,)``: probability of *fake*
* ``explain(images) -> {"prob", "recon", "diff", "attention": {layer: (B, 1, h, w)}}``
  (a detector implements ``explain_once``: one pass, ``logits`` instead of ``prob``)
* ``trainable_parameters()``; frozen parts listed by ``frozen_modules()`` stay in eval mode
* ``image_size``; a builder ``(cfg, mae, pretrained, weights) -> Detector`` registered with
  ``@register_detector("name")``

A new detector is one new file in this package: subclass :class:`Detector`, implement
``forward`` (and ``explain_once`` if it can), and register a builder. See ``baseline.py``.

Checkpoints (kind ``"detector"``) hold the weights of every sub-network (frozen MAE and
feature extractor included) and, in ``meta["mae"]``, the MAE's own config, so
:func:`lorefd.models.bundle.load_bundle` needs nothing but the checkpoint folder.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from lorefd.checkpoint import (
    CheckpointError,
    save_checkpoint,
)
from lorefd.config import Config, ConfigError, config_from_dict
from lorefd.models.mae import build_mae, load_mae
from lorefd.models.registry import BLEND_MASK, create_detector, is_detector, list_detectors

log = logging.getLogger("lorefd")
KIND = "detector"


class Detector(nn.Module):
    """Base class of all stage-2 detectors (see the module docstring)."""

    name: str = ""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.mask_weight, self.mask_layer, self.mask_head = 0.0, None, None
        self.tta = "none"  # detector.tta: "flip" = the face and its mirror image averaged
        self.mask_target = "blend"  # detector.mask_target: what the mask head predicts

    # ---- to implement --------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def explain_once(self, images: torch.Tensor) -> dict[str, Any]:
        """What the detector can show of one pass; the default: logits only."""
        return {"logits": self(images)["logits"], "recon": None, "diff": None, "attention": {}}

    # ---- inference (the test-time flip lives here, for every detector and both runtimes) --
    def infer(self, images: torch.Tensor) -> dict[str, Any]:
        """``forward``; outside training with ``tta == "flip"`` the mean of the outputs of the
        faces and of their mirror images (maps flipped back first)."""
        out = self(images)
        if self.training or self.tta != "flip":
            return out
        return merge_flipped(out, self(images.flip(-1)))

    @torch.no_grad()
    def explain(self, images: torch.Tensor) -> dict[str, Any]:
        """:meth:`explain_once`, merged with its mirror-image pass as :meth:`infer` does;
        ``prob`` is the sigmoid of the (mean) logits, as in :meth:`predict_proba`."""
        ex = self.explain_once(images)
        if self.tta == "flip":
            mirrored = self.explain_once(images.flip(-1))
            ex = {**ex, "logits": merge_flipped(ex["logits"], mirrored["logits"]),
                  "attention": merge_flipped(ex["attention"], mirrored["attention"])}
        return {"prob": torch.sigmoid(ex.pop("logits").float()), **ex}

    def frozen_modules(self) -> list[nn.Module]:
        return []

    def extra_meta(self) -> dict[str, Any]:
        return {}

    # ---- the dense blend-mask head (beyond the paper; off unless detector.mask_weight > 0) --
    def init_mask_head(self, net: nn.Module, layer: str, weight: float) -> None:
        """A 1x1 convolution on ``net``'s ``layer`` predicting the synthesis blend mask.

        The forged region as a dense target beside the image label, as in Face X-ray
        (Li et al., CVPR 2020): it tells a network trained from scratch *where* to look.
        """
        from lorefd.models.backbone import resolve_layers

        self.mask_weight = float(weight)
        self.mask_layer: str | None = None
        self.mask_head: nn.Module | None = None
        if self.mask_weight > 0:
            (self.mask_layer,) = resolve_layers(net, [layer])[-1:]
            with torch.no_grad():
                was = net.training
                _, f = net.eval().forward_features(torch.zeros(1, 3, 64, 64),
                                                   return_layers=[self.mask_layer],
                                                   stop_at=self.mask_layer)
                net.train(was)
            self.mask_head = nn.Conv2d(f[self.mask_layer].shape[1], 1, kernel_size=1)

    def classify(self, net: nn.Module, images: torch.Tensor,
                 maps: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``net``'s logits (and the blend-mask logits when the head is on)."""
        wanted = [self.mask_layer] if self.mask_head is not None else []
        x, feats = net.forward_features(images, maps, return_layers=wanted)
        out = {"logits": net.forward_head(x).squeeze(1)}
        if self.mask_head is not None:
            out["mask_logits"] = self.mask_head(feats[self.mask_layer])
        return out

    def forgery_map(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The predicted blend mask ``{"blend mask": (B, 1, h, w)}`` in [0, 1], if any."""
        if "mask_logits" not in out:
            return {}
        return {BLEND_MASK: torch.sigmoid(out["mask_logits"].float())}

    # ---- shared --------------------------------------------------------------------------
    def loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor,
             masks: torch.Tensor | None = None, has_mask: torch.Tensor | None = None
             ) -> torch.Tensor:
        """Eq. (3): binary cross-entropy, label 1 = fake (computed on logits, float32).

        With the mask head on and ``masks`` (B, 1, S, S) given, plus ``mask_weight`` times the
        per-pixel BCE between the predicted and the (area-averaged) blend mask M, or Face X-ray's
        blending boundary 4 M (1 - M) (``mask_target``), over the items whose mask is known
        (``has_mask``; manifest fakes have none).
        """
        loss = F.binary_cross_entropy_with_logits(out["logits"].float(), labels.float())
        if getattr(self, "mask_head", None) is None or masks is None or "mask_logits" not in out:
            return loss
        pred = out["mask_logits"].float()
        full = masks.float()
        if self.mask_target == "boundary":
            full = 4.0 * full * (1.0 - full)
        target = F.adaptive_avg_pool2d(full, pred.shape[-2:])
        per_item = F.binary_cross_entropy_with_logits(pred, target, reduction="none").mean((1, 2, 3))
        w = torch.ones_like(per_item) if has_mask is None else has_mask.float()
        return loss + self.mask_weight * (per_item * w).sum() / w.sum().clamp(min=1.0)

    def get_losses(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """The training loss of one batch (DeepfakeBench's shape): the detector takes from
        the batch what its :meth:`loss` needs (labels; the blend masks and whether each is
        known, for the mask head), on the device of its outputs."""
        dev = out["logits"].device
        labels = batch["label"].to(dev, non_blocking=True)
        masks = batch["mask"].to(dev, non_blocking=True) if "mask" in batch else None
        has_mask = batch["has_mask"].to(dev) if "has_mask" in batch else None
        return self.loss(out, labels, masks, has_mask)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.infer(images)["logits"].float())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> Detector:
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()  # frozen networks keep their BatchNorm statistics
        return self

    def meta(self) -> dict[str, Any]:
        return {"kind": KIND, "detector": self.name, "image_size": self.image_size,
                "tta": self.tta, **self.extra_meta()}


def merge_flipped(out: Any, mirrored: Any) -> Any:
    """The mean of a pass on the faces and one on their mirror images, key by key: a tensor
    with spatial axes (ndim >= 3: maps, reconstructions) is flipped back first, a per-face
    tensor (logits) is not; anything else is the first pass's."""
    if isinstance(out, dict):
        return {k: merge_flipped(v, mirrored[k]) for k, v in out.items()}
    if isinstance(out, torch.Tensor):
        return (out + (mirrored.flip(-1) if out.ndim >= 3 else mirrored)) / 2
    return out


def build_detector(cfg: Config, mae_ckpt: str | Path | None = None, name: str | None = None,
                   pretrained: bool | None = None) -> Detector:
    """A registered detector from the config; the MAE (if given) is loaded frozen."""
    # The detectors are registered: importing this module ran lorefd/models/detectors/__init__
    # first, which imports every detector file (no import of it here: that would be a cycle).
    name = name or cfg.detector.name
    if not is_detector(name):
        raise ConfigError(f"unknown detector {name!r}; available: "
                          f"{', '.join(list_detectors())}")
    mae = None if mae_ckpt is None else load_mae(mae_ckpt, image_size=cfg.data.image_size)
    info = None if mae is None else mae.checkpoint_info
    det = create_detector(name, cfg=cfg, mae=mae,
                          pretrained=cfg.detector.pretrained if pretrained is None else pretrained,
                          weights=cfg.detector.weights)
    det.tta = cfg.detector.tta
    det.mask_target = cfg.detector.mask_target
    if info is not None and getattr(det, "mae", None) is not None:
        det.mae_info = info
    return det


def save_detector(path: str | Path, detector: Detector, cfg: Config,
                  meta: dict[str, Any] | None = None, state: dict[str, Any] | None = None) -> Path:
    """A self-contained detector checkpoint folder (atomic)."""
    return save_checkpoint(path, detector, cfg, {**detector_meta(detector), **(meta or {})}, state)


def detector_meta(detector: Detector) -> dict[str, Any]:
    meta = detector.meta()
    info = getattr(detector, "mae_info", None)
    if info is not None:
        meta["mae"] = info
    return meta


def detector_from_state(weights: dict[str, torch.Tensor], cfg: Config, meta: dict[str, Any],
                        device: torch.device | str = "cpu") -> Detector:
    """Rebuild a detector from what a checkpoint holds (weights, config, meta), in eval mode.

    For bundles that store the three elsewhere than in a checkpoint folder.
    """
    # The detectors are registered: importing this module ran lorefd/models/detectors/__init__
    # first, which imports every detector file (no import of it here: that would be a cycle).
    if meta.get("kind") != KIND or "detector" not in meta:
        raise CheckpointError(f"not a detector checkpoint (kind {meta.get('kind')!r})")
    mae = None
    if "mae" in meta:
        mcfg = config_from_dict(meta["mae"]["config"])
        mae = build_mae(mcfg.data.image_size, mcfg.mae, mcfg.mask)
    # every weight comes from the state dict: no initialisation files are read
    bare = dataclasses.replace(cfg, detector=dataclasses.replace(
        cfg.detector, weights=None, extractor_weights=None))
    det = create_detector(meta["detector"], cfg=bare, mae=mae, pretrained=False, weights=None)
    det.load_state_dict(weights)
    det.tta = cfg.detector.tta
    if mae is not None:
        det.mae_info = meta["mae"]
    det.config, det.checkpoint_meta = cfg, meta
    return det.to(device).eval()


__all__ = ["BLEND_MASK", "KIND", "Detector", "build_detector", "detector_from_state",
           "detector_meta", "merge_flipped", "save_detector"]
