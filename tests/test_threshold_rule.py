"""A threshold chosen by a stated rule: recorded by `lorefd export --threshold-rule`, named by
`lorefd detect`'s summary line and `lorefd serve`'s model (not when a threshold overrides it)."""

from __future__ import annotations

from conftest import ASSETS, make_detector_checkpoint

from lorefd.cli import main
from lorefd.models.bundle import read_bundle_header

RULE = "at most 10 % of held-out real video frames called fake"


def test_export_records_the_rule_and_detect_names_it(tmp_path, capsys) -> None:
    ckpt = make_detector_checkpoint(tmp_path, "baseline")
    bundle = tmp_path / "m.lorefd"
    assert main(["export", str(ckpt), "--out", str(bundle), "--no-onnx", "--threshold", "0.41",
                 "--threshold-rule", RULE]) == 0
    thr = read_bundle_header(bundle)["threshold"]
    assert thr == {"value": 0.41, "source": f"given at export: {RULE}"}
    capsys.readouterr()
    face = str(ASSETS / "faces" / "real" / "00161.jpg")
    assert main(["detect", face, "--model", str(bundle)]) == 0
    assert f"threshold 0.410 ({RULE})" in capsys.readouterr().out
    assert main(["detect", face, "--model", str(bundle), "--threshold", "0.6"]) == 0
    out = capsys.readouterr().out
    assert "threshold 0.600;" in out and RULE not in out
    # a bundle exported without a rule says nothing more than its threshold
    plain = tmp_path / "plain.lorefd"
    assert main(["export", str(ckpt), "--out", str(plain), "--no-onnx", "--threshold",
                 "0.41"]) == 0
    capsys.readouterr()
    assert main(["detect", face, "--model", str(plain)]) == 0
    assert "threshold 0.410;" in capsys.readouterr().out


def test_serve_names_the_rule_unless_overridden(tmp_path) -> None:
    from lorefd.apps.serve import ServeOptions, Service

    ckpt = make_detector_checkpoint(tmp_path, "baseline")
    bundle = tmp_path / "m.lorefd"
    assert main(["export", str(ckpt), "--out", str(bundle), "--no-onnx", "--threshold", "0.41",
                 "--threshold-rule", RULE]) == 0
    for threshold, rule in ((None, RULE), (0.6, None)):
        (tmp_path / f"serve{threshold}").mkdir()
        svc = Service.load(bundle, ServeOptions(workers=1, queue=1, threshold=threshold,
                                                workdir=str(tmp_path / f"serve{threshold}")))
        try:
            m = svc.model_json()
            assert m["threshold_rule"] == rule and m["threshold"] == (threshold or 0.41)
        finally:
            svc.close()
