"""The stage-1 key-region MAE (Section III-B-2, Eq. 1)."""

from __future__ import annotations

import pytest
import torch

from lorefd.checkpoint import save_checkpoint
from lorefd.config import MAEConfig, MaskConfig, load_config
from lorefd.data.keyregion import key_indicator, key_region_masking
from lorefd.models.mae import build_mae, load_mae

SMALL = MAEConfig(encoder_dim=32, encoder_depth=2, encoder_heads=2, decoder_dim=32,
                  decoder_depth=1, decoder_heads=2)
MASK = MaskConfig(patch_size=8, mask_ratio=0.75)


def small_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_mae(32, SMALL, MASK)
    model.set_key_patches([5, 6, 9, 10])
    return model


def test_patchify_round_trip():
    model = small_model()
    x = torch.rand(2, 3, 32, 32)
    p = model.patchify(x)
    assert p.shape == (2, 16, 8 * 8 * 3)
    assert torch.equal(model.unpatchify(p), x)
    # patch 5 is row 1, column 1
    assert torch.equal(p[0, 5].reshape(8, 8, 3).permute(2, 0, 1), x[0, :, 8:16, 8:16])


def test_loss_counts_masked_patches_only():
    model = small_model()
    imgs = torch.rand(3, 3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    loss, pred, mask = model(imgs, generator=gen)
    target = model.patchify(model.normalize(imgs))
    manual = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    # changing the prediction of visible patches leaves Eq. (1) unchanged ...
    noisy = pred.detach().clone()
    noisy[mask == 0] += 10.0
    assert model.forward_loss(imgs, noisy, mask).item() == pytest.approx(
        model.forward_loss(imgs, pred.detach(), mask).item(), rel=1e-6)
    # ... and a perfect prediction of the masked patches gives zero loss despite the noise
    noisy[mask == 1] = target[mask == 1]
    assert model.forward_loss(imgs, noisy, mask).item() == pytest.approx(0.0, abs=1e-10)
    assert loss.item() > 0.1


def test_encoder_sees_visible_patches_only():
    model = small_model().eval()
    imgs = torch.rand(2, 3, 32, 32)
    ids_keep, mask, ids_restore = model.key_region_masking(2, generator=torch.Generator().manual_seed(3))
    changed = imgs.clone()
    pix = model.mask_to_pixels(mask).bool().expand(-1, 3, -1, -1)
    changed[pix] = torch.rand(int(pix.sum()))
    a = model.forward_encoder(imgs, ids_keep)
    b = model.forward_encoder(changed, ids_keep)
    assert a.shape == (2, 1 + 4, 32)  # cls + round(16 * 0.25) visible tokens
    assert torch.allclose(a, b)
    # the key patches (T) are all masked at this ratio
    assert bool(mask[:, model.key_patches].bool().all())


def test_precomputed_masking_matches_generator():
    model = small_model()
    imgs = torch.rand(2, 3, 32, 32)
    l1, p1, m1 = model(imgs, generator=torch.Generator().manual_seed(7))
    masking = key_region_masking(model.key_patches.expand(2, -1), 0.75,
                                 torch.Generator().manual_seed(7))
    l2, p2, m2 = model(imgs, masking=masking)
    assert torch.equal(m1, m2) and torch.allclose(p1, p2) and l1.item() == l2.item()


def test_reconstruct_pastes_visible_patches():
    model = small_model().eval()
    imgs = torch.rand(2, 3, 32, 32)
    out = model.reconstruct(imgs, generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == imgs.shape and out["pred"].shape == imgs.shape
    assert out["pred"].min() >= 0 and out["pred"].max() <= 1
    vis = ~model.mask_to_pixels(out["mask"]).bool().expand(-1, 3, -1, -1)
    assert torch.equal(out["image"][vis], imgs[vis])
    assert torch.equal(out["image"][~vis], out["pred"][~vis])
    # per-sample keys override the stored T
    key = key_indicator([0, 1, 2, 3], 16).expand(2, -1)
    out = model.reconstruct(imgs, key=key, generator=torch.Generator().manual_seed(0))
    assert bool(out["mask"][:, :4].bool().all())


def test_overfitting_a_fixed_batch_lowers_the_loss():
    model = small_model()
    imgs = torch.rand(4, 3, 32, 32) * 0.3 + torch.linspace(0, 0.6, 32)[None, None, None]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    masking = model.key_region_masking(4, generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(40):
        loss, _, _ = model(imgs, masking=masking)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_checkpoint_round_trip_keeps_t(tmp_path):
    cfg = load_config("tiny", ["data.image_size=32", "mae.encoder_dim=32", "mae.encoder_depth=2",
                               "mae.encoder_heads=2", "mae.decoder_dim=32", "mae.decoder_depth=1",
                               "mae.decoder_heads=2"])
    model = build_mae(32, cfg.mae, cfg.mask)
    model.set_key_patches([1, 2, 3])
    save_checkpoint(tmp_path / "mae", model, cfg, {"kind": "mae", "key_patches": [1, 2, 3]})
    loaded = load_mae(str(tmp_path / "mae"))
    assert loaded.key_patches.nonzero().flatten().tolist() == [1, 2, 3]
    assert not any(p.requires_grad for p in loaded.parameters())
    imgs = torch.rand(1, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    a = model.eval().reconstruct(imgs, generator=g)["image"]
    b = loaded.reconstruct(imgs, generator=torch.Generator().manual_seed(0))["image"]
    assert torch.allclose(a, b)
