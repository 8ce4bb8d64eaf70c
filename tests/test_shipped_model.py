"""The model shipped in the package: present, intact, trained (not random), used by default.

The bundled faces never entered the shipped model's training or model selection
(``lorefd recipe`` sends them to its test split), so scoring them here is a held-out check.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import make_video, stills
from sklearn.metrics import roc_auc_score

from lorefd.cli import main
from lorefd.data.images import load_rgb
from lorefd.data.manifest import read_manifest
from lorefd.data.synth.augment import jpeg as jpeg_roundtrip
from lorefd.data.synth.fakeset import write_fake_set
from lorefd.engines.detect import detect_paths
from lorefd.models.bundle import load_bundle, shipped_bundle

ASSETS = Path(__file__).resolve().parents[1] / "src" / "lorefd" / "assets"
N = 40  # reals, and one synthesised fake of each


@pytest.fixture(scope="module")
def shipped() -> Path:
    path = shipped_bundle()
    assert path is not None, "no model shipped in src/lorefd/assets/model/"
    return path


@pytest.fixture(scope="module")
def held_out_files(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """N bundled reals and one fake of each (kinds in turn), JPEG q90 alike."""
    work = tmp_path_factory.mktemp("shipped")
    samples = sorted(read_manifest(ASSETS / "faces" / "manifest.csv"), key=lambda s: s.path)
    samples = samples[::len(samples) // N][:N]
    write_fake_set(samples, work / "synth", per_image=1, seed=7, jpeg=90)
    fakes = [Path(s.path) for s in read_manifest(work / "synth" / "manifest.csv")]
    reals = []
    for s in samples:
        dest = work / "reals" / f"{Path(s.path).stem}.png"
        dest.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(dest), cv2.cvtColor(jpeg_roundtrip(load_rgb(s.path), 90),
                                            cv2.COLOR_RGB2BGR))
        reals.append(dest)
    return reals, fakes


def test_shipped_bundle_is_small_intact_and_documented(shipped: Path) -> None:
    assert shipped.stat().st_size <= 40 * 2**20
    bundle = load_bundle(shipped)  # checksums verified
    assert bundle.manifest["weights_dtype"] == "float16"
    card = (shipped.parent / "MODEL.md").read_text()
    assert "CC BY-NC-SA 4.0" in card and "non-commercial" in card


def test_shipped_bundle_runs_its_onnx_graph_by_default(shipped: Path) -> None:
    from lorefd.models.graph import OnnxDetector, graph_info, load_runtime_model

    bundle = load_runtime_model(None)
    assert isinstance(bundle.detector, OnnxDetector) and bundle.path == shipped
    assert graph_info(bundle.manifest)["max_abs_diff"]["prob"] <= 1e-4


def test_shipped_model_ranks_held_out_fakes_above_reals(shipped: Path, held_out_files) -> None:
    reals, fakes = held_out_files
    report = detect_paths([*reals, *fakes], shipped)
    scores = {Path(r["path"]).name: r.get("p_fake") for r in report["results"]}
    p_real = np.array([scores[p.name] for p in reals], dtype=float)
    p_fake = np.array([scores[p.name] for p in fakes], dtype=float)
    assert np.isfinite(p_real).all() and np.isfinite(p_fake).all()
    auc = roc_auc_score([0] * len(p_real) + [1] * len(p_fake), [*p_real, *p_fake])
    # a random or untrained network scores these at chance (AUC ~ 0.5)
    assert p_fake.mean() > p_real.mean() and auc >= 0.75, (auc, p_real, p_fake)


def test_detect_needs_no_model_argument(tmp_path: Path) -> None:
    image = stills(1, 3)[0]
    video = make_video(tmp_path / "clip.mp4", stills(1, 5), seconds=1.0)
    out = tmp_path / "report.json"
    assert main(["detect", str(image), str(video), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"]["path"] == str(shipped_bundle())
    statuses = {Path(r["path"]).name: r["status"] for r in report["results"]}
    assert statuses == {image.name: "ok", video.name: "ok"}
    assert all(0.0 <= r["p_fake"] <= 1.0 for r in report["results"])


def test_two_lines_from_python() -> None:
    import lorefd

    report = lorefd.detect([stills(1, 3)[0]])
    assert report["results"][0]["status"] == "ok"
    assert report["results"][0]["verdict"] in ("real", "fake")


def test_damaged_shipped_bundle_names_the_file(shipped: Path, tmp_path: Path) -> None:
    from lorefd.models.bundle import BundleError

    copy = tmp_path / "default.lorefd"
    data = bytearray(shipped.read_bytes())
    data[-1000] ^= 0x40  # one flipped bit in the weights
    copy.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="default.lorefd"):
        load_bundle(copy)
    assert main(["detect", str(stills(1)[0]), "--model", str(copy)]) == 2


def test_training_can_start_from_the_shipped_model(shipped: Path) -> None:
    """train.init=shipped: the recipe's config builds the same network and takes every weight."""
    import torch

    from lorefd.config import load_config
    from lorefd.engines.train import init_from
    from lorefd.models.detectors import build_detector

    det = build_detector(load_config("cpu"))
    init_from(det, "shipped")
    ref = load_bundle(shipped).detector.state_dict()
    own = det.state_dict()
    assert set(own) == set(ref)
    assert all(torch.equal(own[k], ref[k].to(own[k].dtype)) for k in ref)


def test_explain_aligns_a_photo_like_detect_does(tmp_path) -> None:
    """A photo that is not an aligned crop is aligned with the model's crop parameters first,
    so explain and detect give the same score (explain used to score the whole photo)."""
    import lorefd
    from lorefd.evaluation.explain import explain_figure

    face = sorted((Path(lorefd.__file__).parent / "assets" / "faces" / "real").glob("*.jpg"))[1]
    res = explain_figure(shipped_bundle(), [face], tmp_path / "e.png")
    p_detect = lorefd.detect(face, runtime="torch")["results"][0]["p_fake"]
    assert res["prob"][0] == pytest.approx(p_detect, abs=1e-3)
