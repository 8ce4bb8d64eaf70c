"""Stage-2 backbones: any timm CNN whose middle layers can be read and modulated (Section III-C).

The paper's detector is Xception (:mod:`lorefd.models.xception`, ``legacy_xception``, run
stage by stage). :class:`TimmNet` gives every other timm CNN the same interface through
forward hooks on named modules, so the frozen feature extractor and the detection network of
the method, and the plain baseline, can be any of them:

* ``forward_features(images, maps, return_layers, stop_at) -> (last, {layer: features})``
* ``forward_head(x) -> logits``; ``normalize(images)`` (the model's own mean / std);
* ``layer_strides(layers) -> {layer: stride}`` (measured with a probe forward).

Layers are module names of the timm model (``layer3`` for ResNets, ``blocks.4`` for
EfficientNet / MobileNetV3) or ``strideN``: every feature stage of that stride in timm's
``feature_info`` (``stride16`` -> ``layer3`` for ResNet-18). :func:`resolve_layers` turns
``detector.layers`` into names; empty means "the stages whose grid matches the MAE patch grid"
(stride = patch size), as ``block3 / block7 / block11`` do for Xception at 224 px, 16-px patches.

Named backbones (tested over :data:`BACKBONES`): ``legacy_xception`` (the paper's),
``resnet18``, ``resnet34``, ``efficientnet_b0``, ``mobilenetv3_large_100``, and those with ImageNet
weights in installed packages (:mod:`lorefd.models.pretrained`): ``tf_efficientnet_lite0|1|2``,
``mobilenetv2_100``. Other timm CNNs with ``feature_info`` work the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import timm
import torch
import torch.nn as nn

from lorefd.config import ConfigError
from lorefd.models.pretrained import IMAGENET, load_imagenet, normalization
from lorefd.models.xception import (
    DEFAULT_LAYERS,
    XceptionNet,
    check_layers,
    create_xception,
    load_body_weights,
    match_size,
)
from lorefd.models.xception import STAGES as XCEPTION_STAGES

log = logging.getLogger("lorefd")

BACKBONES = ["legacy_xception", "resnet18", "resnet34", "efficientnet_b0",
             "mobilenetv3_large_100", *IMAGENET]
_WARNED: set[str] = set()


class _Stop(Exception):
    """Raised by the hook of ``stop_at`` to end a forward early (feature extractor)."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out


class TimmNet(nn.Module):
    """A timm CNN with its middle layers exposed and modulated through forward hooks."""

    def __init__(self, name: str, num_classes: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        try:
            self.body = timm.create_model(name, pretrained=False, num_classes=num_classes,
                                          drop_rate=drop_rate)
        except RuntimeError as exc:  # timm: "Unknown model"
            raise ConfigError(f"detector.backbone: {exc}") from None
        info = getattr(self.body, "feature_info", None)
        if not info:
            raise ConfigError(f"detector.backbone={name!r}: timm gives no feature_info for it; "
                              f"choose a CNN such as {', '.join(BACKBONES)}")
        self.backbone = name
        self.num_classes = num_classes
        self.feature_stages = {str(i["module"]): int(i["reduction"]) for i in info}
        self.modules_by_name = dict(self.body.named_modules())
        cfg = self.body.pretrained_cfg
        mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
        # the packaged ImageNet weights' own normalisation, pretrained or not (a bundle rebuilt
        # without the weight packages normalises as it was trained)
        mean, std = normalization(name) or (mean, std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def stages(self) -> list[str]:
        return list(self.feature_stages)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def check_layers(self, layers: Iterable[str]) -> list[str]:
        layers = list(dict.fromkeys(layers))
        unknown = [n for n in layers if n not in self.modules_by_name or not n]
        if unknown:
            raise ConfigError(f"unknown {self.backbone} layer(s) {unknown}; e.g. "
                              f"{', '.join(self.stages)} or strideN")
        order = list(self.modules_by_name)
        return sorted(layers, key=order.index)

    def forward_features(self, images: torch.Tensor, maps: dict[str, torch.Tensor] | None = None,
                         return_layers: Iterable[str] = (), stop_at: str | None = None
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """As :meth:`XceptionNet.forward_features`: ``maps`` multiply the outputs of their
        layers, ``return_layers`` are collected (after any map), ``stop_at`` ends the pass."""
        maps = maps or {}
        wanted = set(return_layers)
        feats: dict[str, torch.Tensor] = {}

        def hook(name: str):
            def fn(_module: nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor:
                if name in maps:
                    out = out * match_size(maps[name], out).to(out.dtype)
                if name in wanted:
                    feats[name] = out
                if name == stop_at and not torch.compiler.is_exporting():
                    raise _Stop(out)  # (an export traces the whole pass: no exceptions)
                return out
            return fn

        names = set(maps) | wanted | ({stop_at} if stop_at else set())
        handles = [self.modules_by_name[n].register_forward_hook(hook(n)) for n in names]
        try:
            x = self.body.forward_features(self.normalize(images))
        except _Stop as stop:
            x = stop.out
        finally:
            for h in handles:
                h.remove()
        return x, feats

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_head(x)

    def forward(self, images: torch.Tensor, maps: dict[str, torch.Tensor] | None = None
                ) -> torch.Tensor:
        x, _ = self.forward_features(images, maps)
        return self.forward_head(x)


Backbone = XceptionNet | TimmNet


@torch.no_grad()
def layer_strides(net: Backbone, layers: Iterable[str], probe: int = 64) -> dict[str, int]:
    """Stride of each named layer's output, measured on a ``probe`` px input (eval mode)."""
    layers = list(layers)
    if not layers:
        return {}
    was = net.training
    net.eval()
    x = torch.zeros(1, 3, probe, probe, device=net.mean.device)
    order = XCEPTION_STAGES if isinstance(net, XceptionNet) else list(net.modules_by_name)
    last = max(layers, key=order.index)
    _, feats = net.forward_features(x, return_layers=layers, stop_at=last)
    net.train(was)
    return {n: round(probe / feats[n].shape[-1]) for n in layers}


def stage_strides(net: Backbone) -> dict[str, int]:
    """The feature stages of a backbone and their strides (Xception: its staged layers)."""
    if isinstance(net, XceptionNet):
        return layer_strides(net, XCEPTION_STAGES, probe=224)
    return dict(net.feature_stages)


def resolve_layers(net: Backbone, layers: Iterable[str], patch_size: int | None = None
                   ) -> list[str]:
    """``detector.layers`` as module names, in network order.

    ``strideN`` entries expand to the feature stages of stride N; an empty list means the
    stages whose stride equals the MAE ``patch_size`` (one attention cell per patch).
    """
    layers = list(layers)
    if not layers and isinstance(net, XceptionNet) and patch_size == 16:
        return list(DEFAULT_LAYERS)  # the paper's three depths of the stride-16 middle flow
    if not layers:
        if patch_size is None:
            raise ConfigError("detector.layers is empty and no MAE patch size to match")
        layers = [f"stride{patch_size}"]
    names: list[str] = []
    strides = None
    for entry in layers:
        if entry.startswith("stride") and entry[6:].isdigit():
            strides = strides or stage_strides(net)
            hits = [n for n, s in strides.items() if s == int(entry[6:])]
            if not hits:
                raise ConfigError(f"detector.layers: no {backbone_name(net)} stage at {entry} "
                                  f"(stages: {strides})")
            names += hits
        else:
            names.append(entry)
    if isinstance(net, XceptionNet):
        return check_layers(names)
    return net.check_layers(names)


def backbone_name(net: Backbone) -> str:
    return "legacy_xception" if isinstance(net, XceptionNet) else net.backbone


def create_backbone(name: str, num_classes: int = 1, drop_rate: float = 0.0,
                    pretrained: bool = False, weights: str | Path | None = None) -> Backbone:
    """A backbone by timm name: local ``weights`` if given, else ImageNet if ``pretrained``.

    ``legacy_xception`` is the paper's staged :class:`XceptionNet`; any other name a
    :class:`TimmNet`. ImageNet weights come from an installed package for the backbones of
    :data:`lorefd.models.pretrained.IMAGENET` (missing or damaged: an error naming the ``pip
    install``, never a random start); other names try timm's hub, and without it say so once
    and start from random initialisation.
    """
    if name == "legacy_xception":
        return create_xception(num_classes, drop_rate, pretrained, weights)
    net = TimmNet(name, num_classes, drop_rate)
    if weights:
        load_body_weights(net.body, weights, name,
                          str(net.body.pretrained_cfg.get("classifier", "fc")))
    elif pretrained and name in IMAGENET:
        n = load_imagenet(net.body, name, str(net.body.pretrained_cfg.get("classifier", "fc")))
        log.debug("%s: %d ImageNet tensors loaded", name, n)
    elif pretrained:
        try:
            ref = timm.create_model(name, pretrained=True, num_classes=0)
            net.body.load_state_dict(ref.state_dict(), strict=False)
        except Exception as exc:  # offline: hub / URL / SSL errors of many types
            if name not in _WARNED:
                _WARNED.add(name)
                log.warning("ImageNet weights for %s unavailable (%s); using random "
                            "initialisation (set detector.weights to a local file)", name,
                            type(exc).__name__)
    return net


__all__ = ["BACKBONES", "Backbone", "TimmNet", "backbone_name", "create_backbone",
           "layer_strides", "resolve_layers", "stage_strides"]
