"""The detector interface: registry, frozen parts, deterministic evaluation, checkpoints."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from conftest import save_tiny_mae, tiny_config

import lorefd.models.xception as xmod
from lorefd.checkpoint import CheckpointError
from lorefd.models.bundle import load_bundle
from lorefd.models.detectors import build_detector, save_detector
from lorefd.models.registry import create_detector, list_detectors


@pytest.fixture(scope="module")
def mae_ckpt(tmp_path_factory):
    return save_tiny_mae(tmp_path_factory.mktemp("mae") / "mae")


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_registry_has_both_detectors():
    assert {"lre", "baseline"} <= set(list_detectors())


def test_deprecated_name_builds_the_current_detector_with_a_warning(caplog):
    import lorefd.models.detectors  # noqa: F401  (registration)

    assert "xception" not in list_detectors()  # hidden from listings
    with caplog.at_level("WARNING", logger="lorefd"):
        det = create_detector("xception", cfg=tiny_config("detector.name=baseline"),
                              pretrained=False)
    assert det.name == "baseline"
    assert "deprecated" in caplog.text and "'baseline'" in caplog.text
    with pytest.raises(KeyError, match="unknown detector"):
        create_detector("nope", cfg=tiny_config())
    with pytest.raises(KeyError, match="unknown detector"):
        create_detector("nope")


def test_frozen_modules_get_no_gradient_and_never_change(mae_ckpt):
    torch.manual_seed(0)
    det = build_detector(tiny_config(), mae_ckpt)
    mae0, ext0, net0 = _params(det.mae), _params(det.extractor), _params(det.net)
    opt = torch.optim.Adam(det.trainable_parameters(), lr=1e-3)
    x, y = torch.rand(4, 3, 64, 64), torch.tensor([0.0, 1.0, 0.0, 1.0])
    det.train()
    assert not det.mae.training and not det.extractor.training and det.net.training
    for _ in range(2):
        loss = det.loss(det(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for frozen, before in ((det.mae, mae0), (det.extractor, ext0)):
        assert all(not p.requires_grad and p.grad is None for p in frozen.parameters())
        after = frozen.state_dict()  # BatchNorm running statistics included
        assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in det.net.parameters())
    assert {id(p) for p in det.trainable_parameters()} == {id(p) for p in det.net.parameters()}
    changed = [k for k, v in det.net.state_dict().items() if not torch.equal(v, net0[k])]
    assert changed


def test_evaluation_is_deterministic_and_batch_independent(mae_ckpt):
    torch.manual_seed(0)
    det = build_detector(tiny_config(), mae_ckpt).eval()
    x = torch.rand(3, 3, 64, 64)
    a = det.attention(x)
    b = det.attention(x[1:2])
    assert all(torch.allclose(a[k][1:2], b[k], atol=1e-5) for k in a)
    assert torch.allclose(det.predict_proba(x), det.predict_proba(x))
    # training masks are random: two draws differ
    det.train()
    r1, r2 = det.reconstruct(x), det.reconstruct(x)
    assert not torch.equal(r1, r2)


def test_eval_masks_average_the_maps(mae_ckpt):
    torch.manual_seed(0)
    det = build_detector(tiny_config("detector.eval_masks=2"), mae_ckpt).eval()
    x = torch.rand(2, 3, 64, 64)
    avg = det.attention(x)
    r0, r1 = det.reconstruct(x, 0), det.reconstruct(x, 1)
    assert not torch.equal(r0, r1)
    _, f = det.extractor.forward_features(torch.cat([x, r0, r1]), return_layers=det.layers)
    from lorefd.models.attention import local_difference_attention
    for k in det.layers:
        m0 = local_difference_attention(f[k][:2], f[k][2:4])
        m1 = local_difference_attention(f[k][:2], f[k][4:])
        assert torch.allclose(avg[k], (m0 + m1) / 2, atol=1e-5)


def test_reconstruction_keeps_visible_patches(mae_ckpt):
    det = build_detector(tiny_config(), mae_ckpt).eval()
    x = torch.rand(2, 3, 64, 64)
    _, mask, _ = det.eval_mask(0, x.device)
    pix = det.mae.mask_to_pixels(mask)[0, 0].bool()
    r = det.reconstruct(x, 0)
    assert torch.equal(r[:, :, ~pix], x[:, :, ~pix])
    assert mask.sum() == round(mask.numel() * 0.75)


def test_checkpoint_is_self_contained(mae_ckpt, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    own_mae = save_tiny_mae(tmp_path / "mae_copy")
    det = build_detector(cfg, own_mae).eval()
    x = torch.rand(2, 3, 64, 64)
    p = det.predict_proba(x)
    save_detector(tmp_path / "det", det, cfg)
    shutil.rmtree(own_mae)  # the detector must not need the MAE folder any more
    back = load_bundle(tmp_path / "det").detector
    assert back.name == "lre" and back.image_size == 64 and back.layers == det.layers
    assert torch.allclose(back.predict_proba(x), p, atol=1e-6)
    assert back.checkpoint_meta["mae"]["path"].endswith("mae_copy")


def test_wrong_checkpoints_are_named(mae_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="'mae' checkpoint, expected a detector"):
        load_bundle(mae_ckpt)
    big = save_tiny_mae(tmp_path / "mae128", image_size=128)
    with pytest.raises(CheckpointError, match="128 px"):
        build_detector(tiny_config(), big)
    det = build_detector(tiny_config(), None, name="baseline")
    save_detector(tmp_path / "xc", det, tiny_config())
    with pytest.raises(CheckpointError, match="expected a stage-1 'mae'"):
        build_detector(tiny_config(), tmp_path / "xc")
    with pytest.raises(ValueError, match="needs a stage-1 MAE"):
        build_detector(tiny_config(), None, name="lre")


def test_baseline_has_no_attention(tmp_path):
    det = build_detector(tiny_config(), None, name="baseline").eval()
    x = torch.rand(2, 3, 64, 64)
    out = det(x)
    assert out["logits"].shape == (2,) and "attention" not in out
    ex = det.explain(x)
    assert ex["attention"] == {} and ex["recon"] is None and ex["prob"].shape == (2,)
    save_detector(tmp_path / "xc", det, tiny_config())
    assert torch.allclose(load_bundle(tmp_path / "xc").detector.predict_proba(x), det.predict_proba(x))


def test_pretrained_offline_says_so_once_and_continues(monkeypatch, caplog):
    real = xmod.timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("no network")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(xmod.timm, "create_model", offline)
    monkeypatch.setattr(xmod, "_WARNED", set())
    logger = logging.getLogger("lorefd")
    logger.addHandler(caplog.handler)
    try:
        xmod.create_xception(pretrained=True)
        xmod.create_xception(pretrained=True)
    finally:
        logger.removeHandler(caplog.handler)
    warnings = list({id(r): r for r in caplog.records if "ImageNet weights" in r.getMessage()}.values())
    assert len(warnings) == 1 and "no network" in warnings[0].getMessage()


def test_local_weights_from_a_trained_baseline(tmp_path):
    torch.manual_seed(1)
    det = build_detector(tiny_config(), None, name="baseline")
    save_detector(tmp_path / "xc", det, tiny_config())
    net = xmod.create_xception(1, weights=tmp_path / "xc")
    assert torch.equal(net.body.conv1.weight, det.net.body.conv1.weight)
    with pytest.raises(FileNotFoundError):
        xmod.create_xception(1, weights=tmp_path / "missing.pth")


def _registered() -> list[str]:
    import lorefd.models.detectors  # noqa: F401  (registration)

    return list_detectors()


@pytest.mark.parametrize("name", _registered())
def test_every_registered_detector_keeps_the_interface(name, mae_ckpt, tmp_path):
    """Each name of the registry builds,
    trains a step, scores in [0, 1], explains, and round-trips through a checkpoint."""
    cfg = tiny_config(f"detector.name={name}")
    torch.manual_seed(0)
    det = build_detector(cfg, mae_ckpt)
    assert det.name in (name, "baseline") and det.meta()["detector"] == det.name
    x, y = torch.rand(2, 3, 64, 64), torch.tensor([0.0, 1.0])
    det.train()
    loss = det.loss(det(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None for p in det.trainable_parameters())
    det.eval()
    prob = det.predict_proba(x)
    assert prob.shape == (2,) and ((prob >= 0) & (prob <= 1)).all()
    ex = det.explain(x)
    assert torch.allclose(ex["prob"], prob, atol=1e-6) and isinstance(ex["attention"], dict)
    save_detector(tmp_path / name, det, cfg)
    assert torch.allclose(load_bundle(tmp_path / name).detector.predict_proba(x), prob, atol=1e-6)


def test_one_mae_resolver_for_every_command(tmp_path, caplog):
    """``--mae RUN``: the final ``mae/``, else the resume point ``checkpoints/last`` (with a
    warning) -- the same for training, protocols, ``reconstruct`` and ``masks``."""
    import lorefd.evaluation.figures as figures
    from lorefd.models.mae import resolve_mae_checkpoint

    assert not hasattr(figures, "resolve_mae_dir")  # no second resolver
    run = tmp_path / "run"
    last = save_tiny_mae(run / "checkpoints" / "last")
    with caplog.at_level(logging.WARNING, logger="lorefd"):
        assert resolve_mae_checkpoint(run, 64) == last
    assert "checkpoints/last" in caplog.text
    final = save_tiny_mae(run / "mae")
    assert resolve_mae_checkpoint(run, 64) == final and resolve_mae_checkpoint(last) == last
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json, best/ or last/ .*mae/ or checkpoints"):
        resolve_mae_checkpoint(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="not found"):
        resolve_mae_checkpoint(tmp_path / "missing")
