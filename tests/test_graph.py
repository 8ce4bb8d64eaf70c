"""The ONNX graph inside a bundle: export checked against PyTorch, shared weights, the
runtime choice, fallback and refusal (models/graph.py)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_detector_checkpoint

from lorefd.models import graph as graph_mod
from lorefd.models.bundle import load_bundle, read_bundle_header, write_bundle
from lorefd.models.export import export_bundle
from lorefd.models.graph import (
    GRAPH_KEY,
    GraphError,
    OnnxDetector,
    add_graph,
    load_onnx_bundle,
    load_runtime_model,
    reference_crops,
)


@pytest.fixture(scope="module", params=["baseline", "lre"])
def graph_bundle(request, tmp_path_factory) -> Path:
    """A tiny bundle of each detector kind, with its graph (the baseline's weights in float16;
    the tiny lre's scaled head exceeds float16's range)."""
    root = tmp_path_factory.mktemp(f"graph_{request.param}")
    ckpt = make_detector_checkpoint(root, request.param)
    out = root / "model.lorefd"
    export_bundle(ckpt, out, half=request.param == "baseline", verify=False)
    add_graph(out)
    return out


def test_onnx_scores_equal_torch(graph_bundle: Path) -> None:
    torch_bundle = load_bundle(graph_bundle)
    onnx_bundle = load_onnx_bundle(graph_bundle)
    assert isinstance(onnx_bundle.detector, OnnxDetector)
    crops = reference_crops(torch_bundle.detector.image_size, torch_bundle.preprocess, 6)
    crops[3] = crops[3][:, ::-1].copy()  # not only the faces the export checked
    with torch.no_grad():
        ex = torch_bundle.detector.explain(torch.from_numpy(crops))
    prob, maps = onnx_bundle.detector.run(crops)
    assert np.abs(prob - ex["prob"].numpy()).max() <= 1e-4
    assert prob.std() > 1e-3  # scores differ from face to face: the comparison means something
    assert set(maps) == set(ex["attention"])
    for k, v in ex["attention"].items():
        assert np.abs(maps[k] - v.numpy()).max() <= 1e-4
    if torch_bundle.detector.name == "lre":
        assert maps  # the attention maps the heatmap needs


def test_graph_shares_the_weights(graph_bundle: Path) -> None:
    info = read_bundle_header(graph_bundle)["onnx"]
    from safetensors.numpy import load_file

    tensors = load_file(str(graph_bundle))
    weights = sum(v.nbytes for k, v in tensors.items() if k != GRAPH_KEY)
    assert tensors[GRAPH_KEY].nbytes < 0.05 * weights  # no second copy of the weights
    assert len(info["shared"]) > 10 and info["max_abs_diff"]["prob"] <= 1e-4


def test_graph_convolutions_read_constants(graph_bundle: Path) -> None:
    """Every convolution's weight and bias are initializers (no Cast/Expand left to compute
    at run time), so ONNX Runtime can fuse Conv + BatchNorm into its fast kernels."""
    import onnx

    from lorefd.models.graph import read_graph

    graph, _ = read_graph(graph_bundle, read_bundle_header(graph_bundle))
    model = onnx.load_from_string(graph)
    constants = {i.name for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs
    for node in convs:
        assert all(i in constants for i in node.input[1:] if i), (node.name, list(node.input))


def test_export_refuses_a_differing_graph(graph_bundle: Path, tmp_path, monkeypatch) -> None:
    """The tolerance guard of add_graph: a graph that differs from PyTorch is not written.

    The export itself is tested by the fixture; here the graph the fixture exported is handed
    back by export_graph (no second torch.onnx.export, which took most of this test's time),
    then run and compared with PyTorch as in any export."""
    from lorefd.models.graph import read_graph

    graph, _ = read_graph(graph_bundle, read_bundle_header(graph_bundle))
    info = read_bundle_header(graph_bundle)["onnx"]
    calls = []

    def stored_graph(detector, weights):
        calls.append(detector.name)
        return graph, info["outputs"], info["shared"]

    monkeypatch.setattr(graph_mod, "export_graph", stored_graph)
    monkeypatch.setattr(graph_mod, "PROB_TOL", -1.0)  # every graph differs by >= 0
    out = tmp_path / "new.lorefd"
    with pytest.raises(GraphError, match="differs from PyTorch"):
        add_graph(graph_bundle, out)
    assert not out.exists() and len(calls) == 1
    monkeypatch.setattr(graph_mod, "PROB_TOL", 1e-4)  # the same graph within tolerance: written
    assert add_graph(graph_bundle, out)["onnx"]["max_abs_diff"]["prob"] <= 1e-4
    assert out.exists()


def _rewrite(src: Path, dst: Path, **onnx: object) -> Path:
    """``src`` written again with entries of its manifest's ``onnx`` changed."""
    from safetensors.torch import load_file

    manifest = read_bundle_header(src)
    manifest["onnx"].update(onnx)
    write_bundle(dst, load_file(str(src)), manifest)
    return dst


@pytest.mark.parametrize("change", [{"sha256": "0" * 64}, {"graph_version": 99}])
def test_bad_graph_falls_back_or_is_refused(graph_bundle, tmp_path, caplog, change) -> None:
    bad = _rewrite(graph_bundle, tmp_path / "bad.lorefd", **change)
    with pytest.raises(GraphError, match="checksum|version"):
        load_runtime_model(bad, runtime="onnx")
    with caplog.at_level(logging.WARNING, logger="lorefd"):
        bundle = load_runtime_model(bad)
    assert not isinstance(bundle.detector, OnnxDetector)
    assert sum("running it with PyTorch" in r.getMessage() for r in caplog.records) == 1


def test_no_graph_runs_torch_and_onnx_is_refused(graph_bundle, tmp_path) -> None:
    from safetensors.torch import load_file

    manifest = read_bundle_header(graph_bundle)
    del manifest["onnx"]
    plain = tmp_path / "plain.lorefd"
    write_bundle(plain, {k: v for k, v in load_file(str(graph_bundle)).items()
                         if k != GRAPH_KEY}, manifest)
    assert not isinstance(load_runtime_model(plain).detector, OnnxDetector)
    assert isinstance(load_runtime_model(graph_bundle).detector, OnnxDetector)
    with pytest.raises(GraphError, match="no ONNX graph"):
        load_runtime_model(plain, runtime="onnx")


def test_onnx_path_imports_no_torch(graph_bundle: Path) -> None:
    code = ("import sys, json; from lorefd.models.graph import load_onnx_bundle, "
            "reference_crops; b = load_onnx_bundle(sys.argv[1]); "
            "p = b.detector.predict_proba(reference_crops(b.detector.image_size, "
            "b.preprocess, 2)); "
            "print(json.dumps([len(p), sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('torch', 'timm', 'torchvision'))]))")
    out = subprocess.run([sys.executable, "-c", code, str(graph_bundle)], capture_output=True,
                         text=True, check=True)
    n, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert n == 2 and heavy == []


def test_bundle_names_match_their_owners() -> None:
    """bundle.py repeats three names so that it imports no torch; they must not drift."""
    from lorefd import checkpoint
    from lorefd.models import bundle
    from lorefd.models.detectors import base

    assert (bundle.CONFIG, bundle.WEIGHTS) == (checkpoint.CONFIG, checkpoint.WEIGHTS)
    assert bundle.DETECTOR_KIND == base.KIND


DETECT_NO_TORCH = """
import json, sys
from lorefd.engines.detect import DetectOptions, detect_paths
report = detect_paths(sys.argv[2:], sys.argv[1],
                      DetectOptions(runtime="onnx", heatmap_dir=sys.argv[1] + ".heat", frames=4))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision"))
print(json.dumps({"scores": [r["p_fake"] for r in report["results"]],
                  "status": [r["status"] for r in report["results"]],
                  "runtime": report["model"].get("runtime"), "heavy": heavy}))
"""


def test_detect_both_runtimes_agree_and_onnx_loads_no_torch(graph_bundle, tmp_path) -> None:
    """detect on an image and a video: ONNX Runtime in a fresh process (no torch imported),
    PyTorch here; the same faces, the same scores within 1e-4, heatmaps from both."""
    from media import make_video, stills

    from lorefd.engines.detect import DetectOptions, detect_paths

    image = stills(1)[0]
    video = make_video(tmp_path / "clip.mp4", seconds=0.5)
    out = subprocess.run([sys.executable, "-c", DETECT_NO_TORCH, str(graph_bundle), str(image),
                          str(video)], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [] and got["status"] == ["ok", "ok"] and got["runtime"] == "onnx"
    ref = detect_paths([image, video], graph_bundle,
                       DetectOptions(runtime="torch", frames=4, heatmap_dir=tmp_path / "heat"))
    assert [r["status"] for r in ref["results"]] == ["ok", "ok"]
    assert ref["model"]["runtime"] == "torch"
    for a, b in zip(got["scores"], [r["p_fake"] for r in ref["results"]], strict=True):
        assert abs(a - b) <= 1e-4


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_serve_runs_the_asked_runtime(graph_bundle: Path, runtime: str) -> None:
    from fastapi.testclient import TestClient
    from media import stills

    from lorefd.apps.serve import ServeOptions, Service, create_app

    service = Service.load(graph_bundle, ServeOptions(runtime=runtime))
    try:
        client = TestClient(create_app(service))
        image = stills(1)[0]
        r = client.post("/v1/detect", files={"files": (image.name, image.read_bytes(),
                                                        "image/jpeg")})
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["model"]["runtime"] == runtime
        assert report["results"][0]["status"] == "ok"
    finally:
        service.close()


def test_cli_export_adds_the_graph_or_not(graph_bundle: Path, tmp_path: Path, capsys) -> None:
    from lorefd.cli import main

    if "baseline" not in graph_bundle.parent.name:
        pytest.skip("one detector kind is enough for the command line")
    ckpt = graph_bundle.parent / "det"
    plain = tmp_path / "plain.lorefd"
    assert main(["export", str(ckpt), "--out", str(plain), "--no-onnx"]) == 0
    assert "onnx" not in read_bundle_header(plain)
    assert main(["export", str(plain), "--out", str(plain), "--no-onnx"]) == 2
    again = tmp_path / "again.lorefd"
    assert main(["export", str(plain), "--out", str(again)]) == 0
    assert "with its ONNX graph" in capsys.readouterr().out
    assert read_bundle_header(again)["onnx"]["max_abs_diff"]["prob"] <= 1e-4


def test_the_method_with_a_timm_backbone_exports(tmp_path: Path) -> None:
    """LRE on a timm CNN (hooks; its frozen extractor stops early with an exception outside an
    export) gets a graph that agrees with PyTorch, as with the paper's Xception."""
    from conftest import save_tiny_mae, tiny_config

    from lorefd.models.detectors import build_detector, save_detector

    save_tiny_mae(tmp_path / "mae")
    cfg = tiny_config("detector.name=lre", "detector.backbone=resnet18",
                      "detector.layers=[stride8]", "detector.pretrained=false")
    det = build_detector(cfg, tmp_path / "mae").eval()
    save_detector(tmp_path / "det", det, cfg, {"epoch": 0, "step": 1})
    export_bundle(tmp_path / "det", tmp_path / "m.lorefd", verify=False)
    info = add_graph(tmp_path / "m.lorefd")["onnx"]
    assert info["max_abs_diff"]["prob"] <= 1e-4 and info["outputs"]
