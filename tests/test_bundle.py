"""`lorefd export` and the .lorefd bundle: round trip, run folders, threshold, bad bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import KEY, make_detector_checkpoint, tiny_config
from safetensors import safe_open
from safetensors.torch import save_file

from lorefd.checkpoint import CheckpointError
from lorefd.cli import main
from lorefd.models.bundle import BUNDLE_VERSION, BundleError, load_bundle, read_bundle_header
from lorefd.models.detectors import build_detector, save_detector
from lorefd.models.export import export_bundle


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_detector_checkpoint(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def bundle(ckpt: Path) -> Path:
    out = ckpt.parent / "model.lorefd"
    export_bundle(ckpt, out, verify=False)
    return out


def _rewrite(src: Path, dst: Path, **changes: str) -> None:
    """Copy a bundle with some metadata fields replaced (tensors unchanged)."""
    with safe_open(str(src), "pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open API
    meta.update(changes)
    save_file(tensors, str(dst), metadata=meta)


def test_bundle_gives_the_checkpoint_detector(ckpt: Path, bundle: Path) -> None:
    ref = load_bundle(ckpt).detector
    b = load_bundle(bundle)
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    p_ref, p_bundle = ref.predict_proba(images), b.detector.predict_proba(images)
    assert float(p_ref.std()) > 0.01  # scores differ per image, so equality means something
    assert torch.equal(p_ref, p_bundle)
    ex = b.detector.explain(images)
    assert set(ex["attention"]) == {"block3", "block7", "block11"}
    sd_ref, sd_b = ref.state_dict(), b.detector.state_dict()
    assert sd_ref.keys() == sd_b.keys()
    assert any(k.startswith("mae.") for k in sd_b) and any(k.startswith("extractor.") for k in sd_b)
    assert any(k.startswith("net.") for k in sd_b)


def test_manifest_contents(ckpt: Path, bundle: Path) -> None:
    m = read_bundle_header(bundle)
    assert m["format"] == "lorefd-bundle" and m["bundle_version"] == BUNDLE_VERSION
    assert m["detector"] == "lre" and m["image_size"] == 64
    assert m["key_patches"] == KEY
    assert m["checkpoint_meta"]["mae"]["config"]["data"]["image_size"] == 64
    assert m["config"]["detector"]["layers"] == ["block3", "block7", "block11"]
    assert m["preprocess"]["size"] == 224 and m["preprocess"]["margin"] == 0.25
    assert m["preprocess"]["face_detector"] == "dlib" and m["preprocess"]["frames"] == 32
    assert m["threshold"]["value"] == 0.5 and "no validation threshold" in m["threshold"]["source"]
    assert m["source"]["checkpoint"] == "/".join(ckpt.resolve().parts[-2:])  # portable
    assert len(m["payload_sha256"]) == 64


def test_export_from_run_prefers_best_and_reads_validation_threshold(ckpt: Path,
                                                                    tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(ckpt, run / "last")
    shutil.copytree(ckpt.parent / "mae", run / "mae")
    out = tmp_path / "a.lorefd"
    assert export_bundle(run, out, verify=False)["source"]["checkpoint"].endswith("last")
    shutil.copytree(ckpt, run / "best")
    from lorefd.checkpoint import load_checkpoint, save_checkpoint

    weights, cfg, meta = load_checkpoint(run / "best")
    meta["val"] = {"val_auc": 0.9, "val_threshold": 0.7}  # as a run may record it
    save_checkpoint(run / "best", weights, cfg, meta)
    m = export_bundle(run, out, verify=False)
    assert m["source"]["checkpoint"].endswith("best")
    assert m["threshold"] == {"value": 0.7, "source": "validation (best: meta.val.val_threshold)"}
    assert export_bundle(run, out, threshold=0.3, verify=False)["threshold"]["value"] == 0.3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        export_bundle(run, out, threshold=1.5)
    with pytest.raises(CheckpointError, match="neither a training run"):
        export_bundle(tmp_path, out)
    with pytest.raises(CheckpointError, match="'mae' checkpoint"):
        export_bundle(run / "mae", out)


def test_corrupted_weights_are_detected(bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "flipped.lorefd"
    data = bytearray(bundle.read_bytes())
    data[-1000] ^= 0x01  # one bit in the tensor payload
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupted bundle: checksum mismatch"):
        load_bundle(bad)
    cut = tmp_path / "truncated.lorefd"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    with pytest.raises(BundleError, match="corrupted bundle"):
        load_bundle(cut)


def test_other_version_and_edited_manifest_are_refused(bundle: Path, tmp_path: Path) -> None:
    newer = tmp_path / "v2.lorefd"
    _rewrite(bundle, newer, bundle_version=str(BUNDLE_VERSION + 1))
    with pytest.raises(BundleError, match=f"bundle version {BUNDLE_VERSION + 1} is newer than "
                                          "this lorefd supports"):
        load_bundle(newer)
    with safe_open(str(bundle), "pt") as fh:
        manifest = json.loads(fh.metadata()["manifest"])
    manifest["threshold"]["value"] = 0.01
    edited = tmp_path / "edited.lorefd"
    _rewrite(bundle, edited, manifest=json.dumps(manifest, sort_keys=True))
    with pytest.raises(BundleError, match="manifest checksum mismatch"):
        load_bundle(edited)


def test_not_a_bundle(ckpt: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.lorefd"
    text.write_text("hello, this is not a model\n")
    with pytest.raises(BundleError, match="not a lorefd bundle"):
        read_bundle_header(text)
    plain = tmp_path / "plain.safetensors"
    shutil.copy(ckpt / "model.safetensors", plain)
    with pytest.raises(BundleError, match="not a lorefd bundle"):
        read_bundle_header(plain)
    with pytest.raises(BundleError, match="export it first"):
        read_bundle_header(ckpt)
    with pytest.raises(BundleError, match="not found"):
        read_bundle_header(tmp_path / "missing.lorefd")


def test_cli_export_and_bad_bundle_exit_codes(ckpt: Path, bundle: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # --no-onnx: the ONNX graph export (most of this test's time, three times) is tested by
    # test_graph.py::test_cli_export_adds_the_graph_or_not; here the threshold, --half, errors
    out = tmp_path / "cli.lorefd"
    assert main(["export", str(ckpt), "--out", str(out), "--threshold", "0.6", "--no-onnx"]) == 0
    assert "threshold 0.600 (given at export)" in capsys.readouterr().out
    assert read_bundle_header(out)["threshold"]["value"] == 0.6
    # --half: float16 weights, half the size; weights beyond float16's range are refused
    # up front (this checkpoint's head was scaled to logits of +-2: its weights overflow)
    half = tmp_path / "half.lorefd"
    assert main(["export", str(ckpt), "--out", str(half), "--half", "--no-onnx"]) == 2
    assert "exceed its range (e.g. net.body.fc.weight)" in capsys.readouterr().err
    assert not half.exists()
    cfg = tiny_config("detector.name=baseline")
    plain = save_detector(tmp_path / "plain", build_detector(cfg), cfg, {"epoch": 0, "step": 1})
    full = tmp_path / "full.lorefd"
    assert main(["export", str(plain), "--out", str(full), "--no-onnx"]) == 0
    assert main(["export", str(plain), "--out", str(half), "--half", "--no-onnx"]) == 0
    assert read_bundle_header(half)["weights_dtype"] == "float16"
    assert half.stat().st_size < 0.6 * full.stat().st_size
    capsys.readouterr()
    assert main(["export", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    newer = tmp_path / "v9.lorefd"
    _rewrite(bundle, newer, bundle_version="9")
    img = tmp_path / "x.png"
    img.write_bytes(b"")
    assert main(["detect", str(img), "--model", str(newer)]) == 2
    assert "bundle version 9 is newer" in capsys.readouterr().err


def _edit_header(src: Path, dst: Path, old: bytes, new: bytes) -> None:
    """Copy a bundle with one edit inside its safetensors header (same length)."""
    data = bytearray(src.read_bytes())
    n = int.from_bytes(data[:8], "little")
    at = data.index(old, 8, 8 + n)
    data[at:at + len(old)] = new
    dst.write_bytes(bytes(data))


def test_an_edited_dtype_or_offset_in_the_header_is_refused(bundle: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    dtype = tmp_path / "dtype.lorefd"
    _edit_header(bundle, dtype, b'"dtype":"F32"', b'"dtype":"I32"')  # same bytes, read as ints
    with pytest.raises(BundleError, match="tensor table checksum mismatch"):
        load_bundle(dtype)
    offset = tmp_path / "offset.lorefd"
    data = bundle.read_bytes()
    n = int.from_bytes(data[:8], "little")
    at = data.index(b'"data_offsets":[', 8, 8 + n) + len(b'"data_offsets":[')
    digit = data[at:at + 1]
    _edit_header(bundle, offset, data[at - 16:at + 1],
                 data[at - 16:at] + (b"1" if digit != b"1" else b"2"))
    with pytest.raises(BundleError, match="tensor table checksum mismatch"):
        load_bundle(offset)
    for bad in (dtype, offset):  # the command line: one line, exit 2, the file named
        assert main(["detect", str(tmp_path / "none.png"), "--model", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(bad) in err[0] and "Traceback" not in err[0]


def test_a_version_1_bundle_is_refused_with_how_to_reseal_it(bundle: Path, tmp_path: Path) -> None:
    old = tmp_path / "v1.lorefd"
    _rewrite(bundle, old, bundle_version="1")
    with pytest.raises(BundleError, match=r"re-seal it: lorefd export .*v1\.lorefd --out"):
        load_bundle(old)
    assert load_bundle(old, old=True).detector is not None  # re-sealing reads it


def test_a_tensor_of_the_wrong_kind_is_refused(ckpt: Path, tmp_path: Path) -> None:
    from lorefd.models.bundle import write_bundle

    good = read_bundle_header(ckpt.parent / "model.lorefd")
    with safe_open(str(ckpt.parent / "model.lorefd"), "pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open API
    name = next(k for k, v in tensors.items() if v.is_floating_point() and k.startswith("net."))
    tensors[name] = tensors[name].to(torch.int16)  # sealed as such: only the kind check sees it
    bad = tmp_path / "kind.lorefd"
    write_bundle(bad, tensors, {k: v for k, v in good.items() if k not in ("payload_sha256",
                                                                           "tensors_sha256")})
    with pytest.raises(BundleError, match=f"tensor {name} is torch.int16"):
        load_bundle(bad)


def test_initial_weights_from_a_bundle_read_its_tensors_only(tmp_path: Path, monkeypatch) -> None:
    """Initial weights from a ``.lorefd`` (``detector.weights``): the file's checked tensors,
    the float16 ones as float32, into the network -- no detector built to get them."""
    import copy

    from lorefd.models import xception
    from lorefd.models.detectors import base

    ckpt = make_detector_checkpoint(tmp_path, "baseline")
    path = tmp_path / "m.lorefd"
    export_bundle(ckpt, path, half=True, verify=False)
    det = load_bundle(path).detector
    want = {k.removeprefix("net.body."): v for k, v in det.state_dict().items()
            if k.startswith("net.body.")}
    body = copy.deepcopy(det.net.body)
    with torch.no_grad():
        for p in body.parameters():
            p.zero_()

    def no_detector(*args, **kwargs):
        raise AssertionError("a detector was built to read initial weights")

    monkeypatch.setattr(base, "detector_from_state", no_detector)
    monkeypatch.setattr(base, "build_detector", no_detector)
    xception.load_body_weights(body, path, "Xception")
    got = body.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert any(v.abs().sum() > 0 for v in got.values())  # the zeros were replaced
    with open(path, "r+b") as fh:  # a damaged payload is refused, not read
        fh.seek(-8, 2)
        fh.write(b"\xff" * 8)
    with pytest.raises(BundleError, match="checksum"):
        xception.load_body_weights(copy.deepcopy(body), path, "Xception")
