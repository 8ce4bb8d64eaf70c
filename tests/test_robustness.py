"""`lorefd robustness`: the sweep on a tiny manifest with two models, resume, bad input;
`data.augment: robust` keeps labels and shapes."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lorefd.cli import main
from lorefd.config import ConfigError, load_config
from lorefd.data import perturb as P
from lorefd.data.dataset import FaceDataset
from lorefd.data.images import load_rgb
from lorefd.data.manifest import Sample, read_manifest, write_manifest
from lorefd.data.perturbed import PerturbedCrops, Setting
from lorefd.data.synth import synthesize
from lorefd.evaluation.robustness import robustness, sweep_settings
from lorefd.models import registry
from lorefd.models.detectors import Detector, save_detector
from lorefd.models.export import export_bundle

CROP = 72  # stored crop side: the models (64 px) see it resized after the perturbation
TINY = "robustness-test-cnn"


class TinyCNN(Detector):
    """A registered detector small enough for 2 x 41 settings in seconds on a busy CPU (the
    Xception baseline takes ~1 s per batch there); checkpoints and bundles load it like any."""

    name = TINY

    def __init__(self, image_size: int) -> None:
        super().__init__(image_size)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(),
                                 nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.net(images).squeeze(1)}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("robust")


@pytest.fixture(scope="module")
def manifest(work: Path, faces_manifest: Path) -> Path:
    """Two real and two self-blended fake 2-frame videos, and a real one-frame video."""
    faces = read_manifest(faces_manifest)[20:29]
    videos = [("r1", 0, 2), ("r2", 0, 2), ("f1", 1, 2), ("f2", 1, 2), ("r3", 0, 1)]
    samples, k = [], 0
    for vid, label, n in videos:
        for t in range(n):
            img = load_rgb(faces[k].path)
            if label:
                img = synthesize("sbi", img, faces[k].load_landmarks(),
                                 np.random.default_rng(k)).image
            img = cv2.resize(img, (CROP, CROP), interpolation=cv2.INTER_AREA)
            path = work / "crops" / vid / f"{t}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
            samples.append(Sample(path=str(path), label=label, split="test", video_id=vid,
                                  frame_index=t, method="sbi" if label else ""))
            k += 1
    write_manifest(work / "manifest.csv", samples)
    return work / "manifest.csv"


def train_tiny(manifest: Path, out: Path, seed: int) -> Path:
    """A TinyCNN trained 15 steps on the manifest's crops, saved as a detector checkpoint."""
    cfg = load_config("tiny", [f"detector.name={TINY}"])
    ds = FaceDataset(read_manifest(manifest), cfg.data.image_size)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    y = torch.stack([ds[i]["label"] for i in range(len(ds))])
    torch.manual_seed(seed)
    det = TinyCNN(cfg.data.image_size)
    opt = torch.optim.Adam(det.parameters(), lr=3e-3)
    for _ in range(15):
        loss = det.loss(det(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_detector(out, det.eval(), cfg, {"epoch": 0, "step": 15})


@pytest.fixture(scope="module")
def models(work: Path, manifest: Path) -> Iterator[dict[str, Path]]:
    """Two tiny trained detectors: a checkpoint folder and a bundle (TinyCNN registered for
    this module only, so no other test sees it in the registry)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry._DETECTORS, TINY,
                   lambda cfg, mae=None, pretrained=True, weights=None: TinyCNN(cfg.data.image_size))
        ckpt = train_tiny(manifest, work / "run0" / "best", seed=0)
        export_bundle(train_tiny(manifest, work / "run1" / "best", seed=1), work / "t1.lorefd",
                      verify=False)
        yield {"ckpt": ckpt, "run": work / "run0", "bundle": work / "t1.lorefd"}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_command_two_models_writes_41_rows_each(manifest: Path, models: dict[str, Path],
                                                work: Path, capsys: pytest.CaptureFixture
                                                ) -> None:
    out = work / "rob"
    args = ["robustness", "--model", str(models["run"]), "--model", f"b={models['bundle']}",
            "--data", str(manifest), "--filter", "split=test", "--out", str(out),
            "--batch-size", "16"]
    assert main(args) == 0
    assert "DF mean over 35" in capsys.readouterr().out
    for f in ("robustness.json", "robustness.csv", "robustness.md", "robustness.png"):
        assert (out / f).stat().st_size > 0, f
    assert Image.open(out / "robustness.png").size[0] > 400  # two panels
    res = json.loads((out / "robustness.json").read_text())
    assert res["complete"] and "aligned face crop" in res["applied_to"]
    assert [m["name"] for m in res["models"]] == ["run0", "b"]
    assert [m["kind"] for m in res["models"]] == ["checkpoint", "bundle"]
    rows = read_csv(out / "robustness.csv")
    assert len(rows) == 82
    for m in res["models"]:
        keys = [(r["type"], r["level"]) for r in m["rows"]]
        assert len(keys) == 41 and len(set(keys)) == 41 and keys[0] == ("clean", 0)
        assert sum(r["type"] in P.DEEPERFORENSICS for r in m["rows"]) == 35
        assert sum(r["type"] == "jpeg" for r in m["rows"]) == 5
        for r in m["rows"]:
            assert r["param"] == (None if r["type"] == "clean" else P.parameter(r["type"], r["level"]))
            if r["type"] == "h264":  # the one-frame video cannot be compressed as a video
                assert (r["n"], r["skipped"], r["n_videos"]) == (8, 1, 4)
                assert r["skip_reasons"] == {"one-frame video: no video to compress": 1}
            else:
                assert (r["n"], r["skipped"], r["n_videos"]) == (9, 0, 5)
            assert 0.0 <= r["frame_auc"] <= 1.0 and 0.0 <= r["video_acc"] <= 1.0
        s = m["summary"]
        assert s["deeperforensics"]["frame_auc_n"] == 35 and s["jpeg"]["frame_auc_n"] == 5
        df = [r["frame_auc"] for r in m["rows"] if r["type"] in P.DEEPERFORENSICS]
        assert s["deeperforensics"]["frame_auc"] == pytest.approx(np.mean(df))
        clean = m["rows"][0]["frame_auc"]
        assert s["deeperforensics"]["frame_auc_drop"] == pytest.approx(clean - np.mean(df))
    # the two models are scored separately (different weights, different scores)
    a, b = ([r["frame_auc"] for r in m["rows"]] for m in res["models"])
    assert a != b
    md = (out / "robustness.md").read_text()
    assert "## run0" in md and "## b" in md and "(35/35)" in md and "one-frame video" in md

    # resume: rows already written are taken as they are (a marked value survives) ...
    res["models"][0]["rows"][7]["frame_auc"] = 0.123
    res["complete"] = False
    (out / "robustness.json").write_text(json.dumps(res))
    assert main(args) == 0
    again = json.loads((out / "robustness.json").read_text())
    assert again["complete"] and again["models"][0]["rows"][7]["frame_auc"] == 0.123
    assert again["models"][1]["rows"] == res["models"][1]["rows"]
    # ... unless the data, seed or model changed: then recomputed
    assert main([*args, "--seed", "1", "--types", "block", "--levels", "5"]) == 0
    seeded = json.loads((out / "robustness.json").read_text())
    assert [len(m["rows"]) for m in seeded["models"]] == [2, 2]
    assert seeded["models"][0]["rows"][0]["frame_auc"] == pytest.approx(clean_of(res, 0))


def clean_of(res: dict, i: int) -> float:
    return res["models"][i]["rows"][0]["frame_auc"]


def test_interrupted_sweep_resumes(manifest: Path, models: dict[str, Path], work: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import lorefd.evaluation.robustness as R

    samples = read_manifest(manifest)
    out = work / "interrupted"
    kw = {"types": ["blur", "jpeg"], "levels": [1, 5], "figure": False}
    full = robustness({"m": models["ckpt"]}, samples, work / "straight", **kw)
    calls, real_row = [], R.setting_row

    def dies_on_third(*args, **kwargs):
        calls.append(args[0].key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_row(*args, **kwargs)

    monkeypatch.setattr(R, "setting_row", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        robustness({"m": models["ckpt"]}, samples, out, **kw)
    part = json.loads((out / "robustness.json").read_text())
    assert not part["complete"] and [r["key"] for r in part["models"][0]["rows"]] == calls[:2]
    assert "Incomplete" in (out / "robustness.md").read_text()
    monkeypatch.setattr(R, "setting_row", real_row)
    calls.clear()
    monkeypatch.setattr(R, "setting_row", lambda *a, **k: calls.append(a[0].key) or real_row(*a, **k))
    done = robustness({"m": models["ckpt"]}, samples, out, **kw)
    assert calls == ["blur/5", "jpeg/1", "jpeg/5"]  # only the settings not yet written
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in done["models"][0]["rows"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"}
                     for r in full["models"][0]["rows"]]  # same numbers: deterministic


def test_model_that_fails_to_load_is_named(manifest: Path, models: dict[str, Path], work: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    bad = work / "broken.lorefd"
    bad.write_bytes(b"not a bundle at all")
    code = main(["robustness", "--model", str(models["ckpt"]), "--model", str(bad),
                 "--data", str(manifest), "--out", str(work / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "broken" in err and "cannot load model" in err
    assert not (work / "bad" / "robustness.json").exists()
    assert main(["robustness", "--model", str(work / "nowhere"), "--data", str(manifest),
                 "--out", str(work / "bad")]) == 2
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["robustness", "--model", "m", "--data", str(manifest), "--out", "x",
              "--types", "fog"])
    assert exc.value.code == 2


def test_video_compression_encodes_each_video_together(manifest: Path) -> None:
    samples = read_manifest(manifest)
    ds = PerturbedCrops(samples, Setting("h264", 5), 64)
    r1 = [i for i, s in enumerate(samples) if s.video_id == "r1"]
    expected = P.h264([load_rgb(samples[i].path) for i in r1], 40)
    for i, e in zip(r1, expected, strict=True):
        assert np.array_equal(ds.perturbed(i), e)
    single = next(i for i, s in enumerate(samples) if s.video_id == "r3")
    item = ds[single]
    assert not item["ok"] and "one-frame" in item["reason"]
    assert sweep_settings(["jpeg"], [2])[1].param == 75


def test_robust_augmentation_keeps_labels_and_shapes(faces_manifest: Path) -> None:
    from lorefd.data.synth.dataset import SynthDataset, SynthFaceItems

    assert load_config("tiny", ["data.augment=robust"]).data.augment == "robust"
    with pytest.raises(ConfigError, match="data.augment"):
        load_config("tiny", ["data.augment=strong"])
    samples = read_manifest(faces_manifest)[:12]
    samples[1].label = samples[3].label = 1  # reals and fakes alike
    plain = FaceDataset(samples, 64, augment=False)
    robust = FaceDataset(samples, 64, augment="robust")
    stage1 = FaceDataset(samples, 64, augment=False, perturb=True)
    assert robust.perturb and stage1.perturb and not plain.perturb
    changed = 0
    for i in range(len(samples)):
        a, b, c = plain[i], robust[i], stage1[i]
        for x in (b, c):
            assert x["image"].shape == a["image"].shape == (3, 64, 64)
            assert x["label"] == a["label"] and x["image"].dtype == torch.float32
            assert float(x["image"].min()) >= 0.0 and float(x["image"].max()) <= 1.0
        assert torch.equal(c["landmarks"], a["landmarks"])  # stage 1: no flip, no jitter
        changed += not torch.equal(c["image"], a["image"])
    assert 0 < changed < len(samples)  # about half get a perturbation

    def synth(augment: bool | str) -> SynthFaceItems:
        return SynthFaceItems(SynthDataset(samples, kinds=["sbi"], seed=0, fake_ratio=0.5,
                                           image_size=64), augment=augment, length=12)

    flip, both = synth(True), synth("robust")
    changed = 0
    for i in range(12):
        a, b = flip[i], both[i]
        assert b["image"].shape == a["image"].shape == (3, 64, 64) and b["label"] == a["label"]
        assert torch.equal(b["landmarks"], a["landmarks"])
        if "mask" in a:
            assert torch.equal(b["mask"], a["mask"])  # no pixel moves against the blend mask
        changed += not torch.equal(b["image"], a["image"])
    assert 0 < changed < 12
