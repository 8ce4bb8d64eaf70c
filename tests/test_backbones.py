"""Every named backbone builds, exposes its layers and trains a step in both detectors."""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny_mae, tiny_config

from lorefd.models.backbone import BACKBONES, create_backbone, layer_strides, resolve_layers
from lorefd.models.detectors import build_detector, detector_from_state, detector_meta
from lorefd.models.detectors.baseline import BaselineDetector


@pytest.fixture(scope="module")
def mae_ckpt(tmp_path_factory):
    return save_tiny_mae(tmp_path_factory.mktemp("mae") / "mae")


def _batch():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 64, 64)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    masks = torch.zeros(4, 1, 64, 64)
    masks[1, :, 16:48, 16:48] = 1.0
    masks[3, :, 20:40, 10:50] = 0.7
    return x, y, masks, torch.tensor([True, True, True, False])


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", ["baseline", "lre"])
def test_backbone_trains_a_step_in_both_detectors(backbone, name, mae_ckpt):
    cfg = tiny_config(f"detector.backbone={backbone}", f"detector.name={name}",
                      "detector.mask_weight=1.0", "detector.drop_rate=0.0", "detector.layers=[]")
    det = build_detector(cfg, mae_ckpt if name == "lre" else None)
    x, y, masks, has = _batch()
    det.train()
    out = det(x)
    assert out["logits"].shape == (4,)
    assert out["mask_logits"].shape[0] == 4 and out["mask_logits"].shape[1] == 1
    if name == "lre":  # one attention cell per 8-px MAE patch: the stride-8 stages
        assert det.layers and all(a.shape[-1] == 64 // 8 for a in out["attention"].values())
    before = {k: v.clone() for k, v in det.net.state_dict().items()}
    opt = torch.optim.Adam(det.trainable_parameters(), lr=1e-3)
    loss = det.loss(out, y, masks, has)
    assert torch.isfinite(loss)
    loss.backward()
    assert det.mask_head.weight.grad is not None and det.mask_head.weight.grad.abs().sum() > 0
    opt.step()
    after = det.net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    # weights + config + meta rebuild the same detector (what bundles do)
    det.eval()
    clone = detector_from_state(det.state_dict(), cfg, detector_meta(det))
    with torch.no_grad():
        assert torch.allclose(clone(x)["logits"], det(x)["logits"], atol=1e-5)


def test_mask_loss_only_counts_known_masks_and_is_off_by_default():
    x, y, masks, has = _batch()
    det = build_detector(tiny_config("detector.backbone=resnet18", "detector.name=baseline",
                                     "detector.mask_weight=1.0"))
    out = det(x)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], y)
    with_mask = det.loss(out, y, masks, has)
    assert with_mask > bce
    # an item without a known mask adds nothing, whatever its mask says
    masks2 = masks.clone()
    masks2[3] = 1.0
    assert torch.allclose(det.loss(out, y, masks2, has), with_mask)
    plain = build_detector(tiny_config("detector.backbone=resnet18", "detector.name=baseline"))
    assert plain.mask_head is None and "mask_logits" not in plain(x)


def test_boundary_target_is_face_xray_4m_1_minus_m():
    """``detector.mask_target: boundary`` trains the head on 4 M (1 - M): a hard mask (0 or 1
    everywhere) has no boundary, so the loss then equals the loss against an all-zero mask."""
    x, y, masks, has = _batch()
    det = build_detector(tiny_config("detector.backbone=resnet18", "detector.name=baseline",
                                     "detector.mask_weight=1.0", "detector.mask_target=boundary"))
    assert det.mask_target == "boundary"
    out = det(x)
    hard = (masks > 0.5).float()
    assert torch.allclose(det.loss(out, y, hard, has), det.loss(out, y, torch.zeros_like(hard), has))
    blend = build_detector(tiny_config("detector.backbone=resnet18", "detector.name=baseline",
                                       "detector.mask_weight=1.0"))
    assert blend.mask_target == "blend"
    assert not torch.allclose(blend.loss(out, y, hard, has), det.loss(out, y, hard, has))
    half = torch.full_like(masks, 0.5)  # M = 0.5 everywhere: the boundary is 1 everywhere
    assert torch.allclose(det.loss(out, y, half, has), blend.loss(out, y, torch.ones_like(half), has))


def test_layers_by_stride_and_by_name():
    net = create_backbone("resnet18")
    assert resolve_layers(net, ["stride16"]) == ["layer3"]
    assert resolve_layers(net, [], patch_size=8) == ["layer2"]
    assert resolve_layers(net, ["layer3", "layer1"]) == ["layer1", "layer3"]
    assert layer_strides(net, ["layer1", "layer3"]) == {"layer1": 4, "layer3": 16}
    with pytest.raises(ValueError, match="unknown resnet18 layer"):
        resolve_layers(net, ["block3"])
    with pytest.raises(ValueError, match="no resnet18 stage at stride64"):
        resolve_layers(net, ["stride64"])
    xc = create_backbone("legacy_xception")
    assert resolve_layers(xc, [], patch_size=16) == ["block3", "block7", "block11"]


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="detector.backbone"):
        build_detector(tiny_config("detector.backbone=not_a_model", "detector.name=baseline"))


def test_xception_is_the_older_name_of_the_baseline():
    det = build_detector(tiny_config("detector.name=xception"))
    assert isinstance(det, BaselineDetector) and det.backbone == "legacy_xception"


def test_local_weights_load_into_a_timm_backbone(tmp_path):
    from safetensors.torch import save_file

    src = create_backbone("resnet18")
    save_file({f"net.body.{k}": v.contiguous() for k, v in src.body.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    dst = create_backbone("resnet18", weights=tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(src.body.state_dict().values(),
                                                  dst.body.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="not resnet34 weights"):
        create_backbone("resnet34", weights=tmp_path / "w.safetensors")


def test_weights_from_a_bundle_and_a_clear_error_for_other_files(tmp_path):
    """`detector.weights` / `extractor_weights` may name a .lorefd bundle (its detection
    network is taken); a file that is none of the accepted kinds is a ValueError naming it."""
    from conftest import make_detector_checkpoint

    from lorefd.models.bundle import load_bundle
    from lorefd.models.export import export_bundle

    export_bundle(make_detector_checkpoint(tmp_path, name="baseline"), tmp_path / "m.lorefd")
    src = load_bundle(tmp_path / "m.lorefd").detector.net
    dst = create_backbone("legacy_xception", weights=tmp_path / "m.lorefd")  # tiny config
    assert all(torch.equal(a, b) for a, b in zip(src.body.state_dict().values(),
                                                  dst.body.state_dict().values(), strict=True))
    (tmp_path / "notes.pt").write_text("not weights")
    with pytest.raises(ValueError, match="notes.pt: not weights lorefd can read"):
        create_backbone("resnet18", weights=tmp_path / "notes.pt")
