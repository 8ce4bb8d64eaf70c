"""The test-time flip (``detector.tta: flip``): the mean of a face and its mirror image, the
same in training validation, evaluate, PyTorch detect and the ONNX graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_detector_checkpoint

from lorefd.cli import main
from lorefd.models.bundle import load_bundle
from lorefd.models.detectors.base import merge_flipped
from lorefd.models.export import export_bundle
from lorefd.models.graph import load_runtime_model, reference_crops


def test_merge_flipped_flips_maps_back_and_not_logits() -> None:
    logits, mirrored_logits = torch.tensor([1.0, -3.0]), torch.tensor([3.0, 1.0])
    maps = torch.arange(8.0).reshape(1, 1, 2, 4)
    out = merge_flipped({"logits": logits, "attention": {"a": maps}, "other": 7},
                        {"logits": mirrored_logits, "attention": {"a": maps.flip(-1)},
                         "other": 9})
    assert out["logits"].tolist() == [2.0, -1.0]
    assert torch.equal(out["attention"]["a"], maps)  # the mirror's map, flipped back
    assert out["other"] == 7


@pytest.mark.parametrize("name", ["baseline", "lre"])
def test_flip_scores_a_face_and_its_mirror_alike(name: str, tmp_path: Path) -> None:
    det = load_bundle(make_detector_checkpoint(tmp_path, name=name)).detector
    x = torch.from_numpy(reference_crops(det.image_size, {"size": 64, "margin": 0.1}, 4))
    plain, plain_mirror = det.predict_proba(x), det.predict_proba(x.flip(-1))
    assert (plain - plain_mirror).abs().max() > 1e-3  # the network itself is not symmetric
    det.tta = "flip"
    p, p_mirror = det.predict_proba(x), det.predict_proba(x.flip(-1))
    torch.testing.assert_close(p, p_mirror, atol=1e-5, rtol=0)
    logit = lambda q: torch.log(q / (1 - q))  # noqa: E731
    torch.testing.assert_close(logit(p), (logit(plain) + logit(plain_mirror)) / 2,
                               atol=1e-4, rtol=0)
    ex, ex_mirror = det.explain(x), det.explain(x.flip(-1))
    torch.testing.assert_close(ex["prob"], p, atol=1e-6, rtol=0)
    if name == "lre":  # one pass of faces and mirrors: the reconstruction is the faces' own
        torch.testing.assert_close(ex["recon"], det.explain_once(x)["recon"], atol=1e-5, rtol=0)
    assert ex["attention"] or name == "baseline"  # (tiny baseline: no mask head) a map of
    # the mirror image is the mirrored map
    torch.testing.assert_close(ex_mirror["attention"],
                               {k: v.flip(-1) for k, v in ex["attention"].items()},
                               atol=1e-5, rtol=0)
    det.train()  # training: one pass, no flip (dropout drawn alike under one seed)
    torch.manual_seed(0)
    one = det(x)["logits"]
    torch.manual_seed(0)
    assert torch.equal(det.infer(x)["logits"], one)


def test_export_sets_flip_for_both_runtimes(tmp_path: Path) -> None:
    ckpt = make_detector_checkpoint(tmp_path, name="baseline")
    plain = tmp_path / "plain.lorefd"
    export_bundle(ckpt, plain)
    assert main(["export", str(plain), "--out", str(tmp_path / "flip.lorefd"), "--tta", "flip",
                 "--threshold", "0.4"]) == 0
    torch_b = load_bundle(tmp_path / "flip.lorefd")
    assert torch_b.detector.tta == "flip" and torch_b.threshold == pytest.approx(0.4)
    assert torch_b.manifest["config"]["detector"]["tta"] == "flip"
    assert load_bundle(plain).detector.tta == "none"
    onnx_b = load_runtime_model(str(tmp_path / "flip.lorefd"), "cpu", "onnx", 1)
    x = reference_crops(64, torch_b.preprocess, 4)
    p_onnx, p_onnx_mirror = onnx_b.detector.run(x)[0], onnx_b.detector.run(x[..., ::-1].copy())[0]
    p_torch = torch_b.detector.predict_proba(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4)
    np.testing.assert_allclose(p_onnx, p_onnx_mirror, atol=1e-4)
    # from a run folder too, and a bundle's face pipeline cannot be changed
    assert export_bundle(ckpt, tmp_path / "run_flip.lorefd", tta="flip")["config"][
        "detector"]["tta"] == "flip"
    assert main(["export", str(plain), "--out", str(tmp_path / "x.lorefd"), "--size", "80"]) == 2
