"""Xception (timm ``legacy_xception``) run stage by stage (Section III-C).

Both stage-2 networks use this wrapper: the frozen *feature extractor*, which returns named
middle-layer features of an image and of its reconstruction, and the *detection network*,
which multiplies its own features at the same layers by the local difference attention maps
(Eq. 2) before classifying.

Layer names are the timm children: ``stem`` (conv1/conv2), ``block1`` .. ``block12`` and
``exit`` (conv3/conv4). Spatial sizes at 224 px: stem 109, block1 55, block2 28, block3 .. block11
14 (stride 16, 728 channels), block12 7.

Default layers ``block3, block7, block11`` (:data:`DEFAULT_LAYERS`): the paper takes "a series of
feature maps from the middle layers" (Section III-C, Fig. 3) without naming them. We take the
end of the entry flow (block3) and the middle and end of the middle flow (block7, block11):

* they are the middle of the network: past the low-level stem, before the 7x7 exit flow;
* at stride 16 their 14x14 grid coincides one-to-one with the 14x14 grid of 16-px MAE patches,
  so a masked-and-reconstructed patch maps onto exactly one attention cell;
* they span three depths (texture-like entry features to semantic middle-flow features),
  which is what "multiple feature-level attention maps" needs, at one resolution.

Images enter as ``[0, 1]``; the Inception-style normalisation of ``legacy_xception``
(mean = std = 0.5) happens inside :meth:`XceptionNet.normalize`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from lorefd.config import ConfigError
from lorefd.models.pretrained import WeightsError

log = logging.getLogger("lorefd")

STAGES = ["stem"] + [f"block{i}" for i in range(1, 13)] + ["exit"]
DEFAULT_LAYERS = ["block3", "block7", "block11"]
_WARNED: set[str] = set()


def _warn_once(key: str, msg: str, *args: object) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(msg, *args)


def check_layers(layers: Iterable[str]) -> list[str]:
    """Validate layer names against :data:`STAGES`; returned in network order."""
    layers = list(layers)
    unknown = [name for name in layers if name not in STAGES]
    if unknown:
        raise ConfigError(f"unknown Xception layer(s) {unknown}; choose from "
                          f"{', '.join(STAGES)}")
    return sorted(set(layers), key=STAGES.index)


class XceptionNet(nn.Module):
    """``legacy_xception`` with a staged forward that exposes and modulates middle layers."""

    def __init__(self, num_classes: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.body = timm.create_model("legacy_xception", pretrained=False, num_classes=num_classes,
                                      drop_rate=drop_rate)
        self.num_classes = num_classes
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5), persistent=False)
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.5), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def stage(self, name: str, x: torch.Tensor) -> torch.Tensor:
        b = self.body
        if name == "stem":
            x = b.act1(b.bn1(b.conv1(x)))
            return b.act2(b.bn2(b.conv2(x)))
        if name == "exit":
            x = b.act3(b.bn3(b.conv3(x)))
            return b.act4(b.bn4(b.conv4(x)))
        return getattr(b, name)(x)

    def forward_features(self, images: torch.Tensor, maps: dict[str, torch.Tensor] | None = None,
                         return_layers: Iterable[str] = (), stop_at: str | None = None
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the stages in order.

        ``maps``: per-layer multiplicative maps ``(B, 1|C, h, w)`` applied to the output of that
        layer (resized bilinearly when the size differs). ``return_layers``: outputs collected
        (after any map). ``stop_at``: last stage to run (the feature extractor stops at its
        deepest layer). Returns ``(last output, {layer: features})``.
        """
        maps = maps or {}
        wanted = set(return_layers)
        feats: dict[str, torch.Tensor] = {}
        x = self.normalize(images)
        for name in STAGES:
            x = self.stage(name, x)
            if name in maps:
                x = x * match_size(maps[name], x).to(x.dtype)
            if name in wanted:
                feats[name] = x
            if name == stop_at:
                break
        return x, feats

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global pool, dropout (``drop_rate``, training mode only), classifier.

        Done here rather than by timm's ``forward_head``, which in some timm versions
        computes the dropout and discards it (``detector.drop_rate`` had no effect).
        """
        b = self.body
        x = b.global_pool(x)
        if b.drop_rate:
            x = F.dropout(x, b.drop_rate, training=self.training)
        return b.fc(x)

    def forward(self, images: torch.Tensor, maps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        x, _ = self.forward_features(images, maps)
        return self.forward_head(x)


def match_size(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Resize a map ``(B, c, h, w)`` to the spatial size of ``x`` (bilinear)."""
    if m.shape[-2:] == x.shape[-2:]:
        return m
    return F.interpolate(m.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a lorefd checkpoint folder, a ``.lorefd`` bundle (checksums
    verified), ``.safetensors`` or a torch file."""
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix == ".lorefd":  # the file's tensors, checksums verified; no detector built
        from lorefd.models.bundle_file import read_bundle_weights

        sd = {k: v.float() if v.is_floating_point() else v
              for k, v in read_bundle_weights(path).items()}
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors of every kind: say what was expected
            raise WeightsError(f"{path}: not weights lorefd can read (a checkpoint folder, a "
                               ".lorefd bundle, .safetensors or a torch state dict): "
                               f"{type(exc).__name__}") from None
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
    # a lorefd detector checkpoint: take its detection network
    if any(k.startswith("net.body.") for k in sd):
        sd = {k[len("net.body."):]: v for k, v in sd.items() if k.startswith("net.body.")}
    elif any(k.startswith("body.") for k in sd):
        sd = {k[len("body."):]: v for k, v in sd.items() if k.startswith("body.")}
    return sd


def load_body_weights(body: nn.Module, path: str | Path, what: str, head: str = "fc") -> None:
    """Load local weights into a timm ``body`` (a timm state dict or a lorefd checkpoint); the
    classifier ``head`` is kept only if its shapes match, every other tensor must be there."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} weights not found: {path}")
    sd = _read_state_dict(path)
    own = body.state_dict()
    sd = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in sd and not k.startswith(f"{head}.")]
    if missing:
        raise WeightsError(f"{path}: not {what} weights ({len(missing)} missing, e.g. "
                           f"{missing[:3]})")
    body.load_state_dict(sd, strict=False)


def load_xception_weights(net: XceptionNet, path: str | Path) -> None:
    """Load local Xception weights (timm/Cadene layout or a lorefd checkpoint); fc kept if shapes match."""
    load_body_weights(net.body, path, "Xception")


def create_xception(num_classes: int = 1, drop_rate: float = 0.0, pretrained: bool = False,
                    weights: str | Path | None = None) -> XceptionNet:
    """An :class:`XceptionNet`: local ``weights`` if given, else ImageNet from timm if reachable.

    When neither is available, says so once and continues from random initialisation.
    """
    net = XceptionNet(num_classes, drop_rate)
    if weights:
        load_xception_weights(net, weights)
        return net
    if pretrained:
        try:
            ref = timm.create_model("legacy_xception", pretrained=True, num_classes=num_classes)
            sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
            net.body.load_state_dict(sd, strict=False)
        except Exception as exc:  # offline: hub / URL / SSL errors of many types
            _warn_once("pretrained", "ImageNet weights for legacy_xception unavailable (%s: %s); "
                       "using random initialisation (set detector.weights to a local file)",
                       type(exc).__name__, str(exc).splitlines()[0][:120] if str(exc) else "")
    return net


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the module never changes during training."""
    module.eval()
    module.requires_grad_(False)
    return module


__all__ = ["DEFAULT_LAYERS", "STAGES", "XceptionNet", "check_layers", "create_xception", "freeze",
           "load_body_weights", "load_xception_weights", "match_size"]
