"""`lorefd export` crops faces like the training data did: size and margin from the run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import make_detector_checkpoint

from lorefd.data.manifest import Sample, preprocess_record
from lorefd.models.bundle import load_bundle
from lorefd.models.export import export_bundle


@pytest.fixture(scope="module")
def trained_at_128(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose training crops were made by `lorefd preprocess --size 128 --margin 0.1`."""
    pre = {"size": 128, "margin": 0.1, "face_detector": "dlib", "source": "data/summary.json"}
    return make_detector_checkpoint(tmp_path_factory.mktemp("export_pre"), name="xception",
                                    sub="best", meta={"preprocess": pre})


def test_export_takes_size_and_margin_from_the_run(trained_at_128: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lorefd"):
        m = export_bundle(trained_at_128, tmp_path / "m.lorefd", verify=False)
    assert m["preprocess"]["size"] == 128 and m["preprocess"]["margin"] == 0.1
    assert not [r for r in caplog.records if "differs" in r.getMessage()]
    # the in-memory form `--model RUN` gives the same face pipeline
    assert load_bundle(trained_at_128.parent).preprocess["size"] == 128


def test_a_mismatch_given_by_hand_is_a_warning(trained_at_128: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lorefd"):
        m = export_bundle(trained_at_128, tmp_path / "m.lorefd", verify=False,
                          preprocess={"size": 224})
    assert m["preprocess"]["size"] == 224 and m["preprocess"]["margin"] == 0.1
    assert any("size=224 differs" in r.getMessage() for r in caplog.records)
    assert m["preprocess"]["crop"] == "template"  # recorded by none: the default


def test_export_crop_mode_given_for_a_run_that_recorded_none(trained_at_128: Path,
                                                             tmp_path: Path) -> None:
    from lorefd.cli import main

    assert main(["export", str(trained_at_128), "--out", str(tmp_path / "m.lorefd"),
                 "--crop", "box", "--no-onnx"]) == 0
    pre = load_bundle(tmp_path / "m.lorefd").preprocess
    assert (pre["crop"], pre["template"]) == ("box", "68-landmark box")


def test_bundle_carries_no_path_of_the_training_machine(tmp_path: Path) -> None:
    pre = {"size": 128, "margin": 0.1, "source": "/home/someone/runs/x/../faces/summary.json"}
    ckpt = make_detector_checkpoint(tmp_path, name="xception", sub="best",
                                    meta={"preprocess": pre})
    m = export_bundle(ckpt, tmp_path / "m.lorefd", verify=False)
    assert m["preprocess"]["recorded_from"] == "faces/summary.json"
    assert "/home/someone" not in json.dumps(m)  # nor in the checkpoint's meta or source
    inside = str(Path.cwd() / "runs" / "faces" / "summary.json")
    ckpt2 = make_detector_checkpoint(tmp_path, name="xception", sub="best2",
                                     meta={"preprocess": {**pre, "source": inside}})
    m2 = export_bundle(ckpt2, tmp_path / "m2.lorefd", verify=False)
    assert m2["preprocess"]["recorded_from"] == "runs/faces/summary.json"


def test_nothing_recorded_says_defaults_are_assumed(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    ckpt = make_detector_checkpoint(tmp_path, name="xception", sub="best")
    with caplog.at_level(logging.WARNING, logger="lorefd"):
        m = export_bundle(ckpt, tmp_path / "m.lorefd", verify=False)
    assert m["preprocess"]["size"] == 224
    assert any("recorded no size or margin" in r.getMessage() for r in caplog.records)


def test_preprocess_record_reads_the_summary_above_the_crops(tmp_path: Path) -> None:
    crops = tmp_path / "out" / "crops" / "vid1"
    crops.mkdir(parents=True)
    (tmp_path / "out" / "summary.json").write_text(json.dumps(
        {"options": {"size": 128, "margin": 0.1, "detector": "dlib", "frames": 8}}))
    rec = preprocess_record([Sample(path=str(crops / "000001.png"))])
    assert rec["size"] == 128 and rec["margin"] == 0.1 and rec["face_detector"] == "dlib"
    assert rec["source"].endswith("summary.json")


def test_preprocess_record_falls_back_to_the_crop_side(faces_manifest: Path) -> None:
    from lorefd.data.manifest import read_manifest

    rec = preprocess_record(read_manifest(faces_manifest)[:2])
    assert isinstance(rec["size"], int) and "margin" not in rec
