"""Eq. (2) on hand-made tensors, and the staged Xception that applies the maps."""

from __future__ import annotations

import pytest
import torch

from lorefd.models.attention import attention_maps, local_difference_attention
from lorefd.models.xception import STAGES, check_layers, create_xception


def test_identical_features_give_zero():
    f = torch.randn(2, 16, 5, 7)
    a = local_difference_attention(f, f.clone())
    assert a.shape == (2, 1, 5, 7)
    assert torch.allclose(a, torch.zeros_like(a), atol=1e-6)


def test_opposite_features_give_one():
    f = torch.randn(3, 8, 4, 4)
    assert torch.allclose(local_difference_attention(f, -f), torch.ones(3, 1, 4, 4), atol=1e-6)


def test_orthogonal_and_scaled_features():
    a = torch.zeros(1, 2, 1, 2)
    b = torch.zeros(1, 2, 1, 2)
    a[0, 0] = 1.0           # both locations point along channel 0
    b[0, 1, 0, 0] = 1.0     # location 0: orthogonal -> 0.5
    b[0, 0, 0, 1] = 5.0     # location 1: same direction, other norm -> 0
    m = local_difference_attention(a, b)
    assert m[0, 0, 0, 0].item() == pytest.approx(0.5)
    assert m[0, 0, 0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_matches_the_formula_per_location():
    fs, fr = torch.randn(2, 6, 3, 3), torch.randn(2, 6, 3, 3)
    m = local_difference_attention(fs, fr)
    for b in range(2):
        for y in range(3):
            for x in range(3):
                u, v = fs[b, :, y, x], fr[b, :, y, x]
                cos = (u @ v) / (u.norm() * v.norm())
                assert m[b, 0, y, x].item() == pytest.approx(1 - (1 + cos.item()) / 2, abs=1e-5)
    assert float(m.min()) >= 0 and float(m.max()) <= 1


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        local_difference_attention(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 2, 2))


def test_attention_maps_per_layer():
    fs = {"block3": torch.randn(2, 8, 4, 4), "block7": torch.randn(2, 8, 4, 4)}
    maps = attention_maps(fs, {k: v.clone() for k, v in fs.items()})
    assert set(maps) == {"block3", "block7"}
    assert all(v.shape == (2, 1, 4, 4) and float(v.abs().max()) < 1e-5 for v in maps.values())


def test_xception_layers_and_maps():
    torch.manual_seed(0)
    net = create_xception(num_classes=1, pretrained=False).eval()
    x = torch.rand(2, 3, 64, 64)
    _, feats = net.forward_features(x, return_layers=["block3", "block7", "block11"],
                                    stop_at="block11")
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "block3": (2, 728, 4, 4), "block7": (2, 728, 4, 4), "block11": (2, 728, 4, 4)}
    with torch.no_grad():
        plain = net(x)
        ones = net(x, maps={"block3": torch.ones(2, 1, 4, 4)})
        halved = net(x, maps={"block3": torch.full((2, 1, 4, 4), 0.5)})
        resized = net(x, maps={"block3": torch.full((2, 1, 8, 8), 0.5)})  # resized to 4x4
    assert torch.allclose(plain, ones)
    assert not torch.allclose(plain, halved)
    assert torch.allclose(halved, resized, atol=1e-6)
    with torch.no_grad():
        _, f = net.forward_features(x, maps={"block7": torch.zeros(2, 1, 4, 4)},
                                    return_layers=["block7"], stop_at="block7")
    assert float(f["block7"].abs().max()) == 0.0


def test_layer_names_checked():
    assert check_layers(["block11", "block3"]) == ["block3", "block11"]
    assert STAGES[0] == "stem" and STAGES[-1] == "exit"
    with pytest.raises(ValueError, match="unknown Xception layer"):
        check_layers(["block13"])


def test_default_layers_match_the_16px_patch_grid_at_224():
    """At the paper's 224 px, block3..block11 are 14x14: one cell per 16-px MAE patch."""
    net = create_xception(num_classes=0, pretrained=False).eval()
    with torch.no_grad():
        _, f = net.forward_features(torch.rand(1, 3, 224, 224), return_layers=["block3", "block4"],
                                    stop_at="block4")
    assert f["block3"].shape == (1, 728, 14, 14) and f["block4"].shape == (1, 728, 14, 14)
