"""`lorefd recipe` end to end at toy size: every stage, the exported bundle, and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from media import stills

from lorefd.apps.common import bundled_ids, split_by_identity
from lorefd.apps.recipe import STAGES, run_recipe
from lorefd.models.bundle import load_bundle

TOY = ["data.image_size=64", "data.num_workers=0", "mae.encoder_depth=1", "mae.decoder_depth=1",
       "pretrain.max_steps=3", "pretrain.batch_size=8", "pretrain.log_every=1",
       "train.epochs=1", "train.iters_per_epoch=2", "train.batch_size=4", "train.log_every=1",
       "train.warmup_steps=1"]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    (root / "real").mkdir()
    for p in stills(24):
        shutil.copy(p, root / "real" / p.name)
    return root


def test_recipe_runs_every_stage_and_resumes(faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    s = run_recipe(faces, out, "cpu", TOY, val_fraction=0.25, test_fraction=0.25,
                   reserve_bundled=False, device="cpu")
    assert set(s["seconds"]) >= {"faces", "stage1", "baseline", "lre", "robust", "export"}
    ids = s["identities"]
    assert ids["train"] > 0 and ids["val"] > 0 and ids["test"] > 0
    assert sum(ids.values()) == 24
    # identity-disjoint splits, fixed fakes for val and test
    splits = {n: {r.split(",")[4] for r in (out / "splits" / f"{n}_reals.csv").read_text()
                  .splitlines()[1:]} for n in ("train", "val", "test")}
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["val"])
    for name in ("baseline", "lre", "robust"):
        auc = s["metrics"][name]["test"]["overall"]["frame"]["auc"]
        assert 0.0 <= auc <= 1.0
    bundle = load_bundle(out / "model.lorefd")
    assert bundle.manifest["weights_dtype"] == "float16"
    # the shipped model is the robust stage: the better detector continued from its final weights
    assert s["shipped"] == "robust"
    meta = bundle.manifest["checkpoint_meta"]
    robust = json.loads((out / "robust" / "last" / "config.json").read_text())
    assert meta["init"] == str(out / bundle.detector.name / "last")
    assert robust["config"]["data"]["augment"] == "robust"
    assert json.loads((out / "robust" / "summary.json").read_text())["steps"] == 9 * 2
    assert bundle.preprocess["size"] == 64 and bundle.preprocess["margin"] == 0.1
    # a re-run resumes: finished stages are skipped, the same model comes out
    before = (out / "model.lorefd").read_bytes()
    s2 = run_recipe(faces, out, "cpu", TOY, stages=["stage1", "baseline", "lre", "robust"],
                    reserve_bundled=False, device="cpu")
    assert json.loads((out / "baseline" / "summary.json").read_text())["steps"] == 2
    assert s2["seconds"]["baseline"] == pytest.approx(s["seconds"]["baseline"])
    assert (out / "model.lorefd").read_bytes() == before


def test_bundled_faces_are_always_test(faces: Path) -> None:
    from lorefd.data.manifest import Sample

    rows = [Sample(path=str(p), label=0, video_id=f"real/{p.stem}") for p in stills(40)]
    parts = split_by_identity(rows, val=0.4, test=0.0, reserved=bundled_ids())
    assert len(parts["test"]) == 40 and not parts["train"]
    assert {Path(r.path).stem for r in parts["test"]} <= bundled_ids()


def test_unknown_stage_is_an_error(tmp_path: Path, faces: Path) -> None:
    with pytest.raises(ValueError, match="unknown recipe stage"):
        run_recipe(faces, tmp_path / "x", stages=["nope"])
    assert STAGES[0] == "faces" and STAGES[-1] == "export"


def test_packed_gpu_data_trains(faces: Path, tmp_path: Path) -> None:
    """scripts/pack_gpu_data.py: the carried folder holds every train real and validation
    row (labels, kinds, landmarks kept) as JPEG, and trains as it is."""
    import subprocess
    import sys

    from lorefd.config import load_config
    from lorefd.data.manifest import read_manifest
    from lorefd.engines.train import train

    out = tmp_path / "run"
    run_recipe(faces, out, "cpu", TOY, stages=["faces", "split", "heldout"], val_fraction=0.25,
               test_fraction=0.25, reserve_bundled=False)
    packed = tmp_path / "gpu_data"
    script = Path(__file__).resolve().parents[1] / "scripts" / "pack_gpu_data.py"
    subprocess.run([sys.executable, str(script), str(out), str(packed), "--quality", "80"],
                   check=True, capture_output=True)
    for name, source in (("train", out / "splits" / "train_reals.csv"),
                         ("val", out / "val" / "manifest.csv")):
        rows, orig = read_manifest(packed / f"{name}.csv"), read_manifest(source)
        assert [(r.label, r.method) for r in rows] == [(r.label, r.method) for r in orig]
        assert all(Path(r.path).suffix == ".jpg" and Path(r.path).parent == packed / name
                   for r in rows)
        assert all(r.load_landmarks().shape == (68, 2) for r in rows)
    assert "../" not in (packed / "train.csv").read_text()  # carried alone, paths stay inside
    summary = train(load_config("cpu", TOY), read_manifest(packed / "train.csv"),
                    read_manifest(packed / "val.csv"), None, tmp_path / "det", device="cpu")
    assert summary["steps"] == 2


def test_recipe_crops_in_the_mode_and_margin_asked(faces: Path, tmp_path: Path) -> None:
    from lorefd.cli import main
    from lorefd.data.manifest import preprocess_record, read_manifest

    out = tmp_path / "box"
    assert main(["recipe", str(faces), "--out", str(out), "--stages", "faces", "--crop", "box",
                 "--margin", "0.25"]) == 0
    rec = preprocess_record(read_manifest(out / "faces" / "manifest.csv"))
    assert (rec["crop"], rec["margin"], rec["size"]) == ("box", 0.25, 224)  # configs/cpu.yaml
    assert json.loads((out / "recipe.json").read_text())["crops"] == {
        "size": 224, "margin": 0.25, "crop": "box"}


def test_split_clips_keeps_a_person_on_one_side() -> None:
    from lorefd.apps.common import clip_person, split_clips
    from lorefd.data.manifest import Sample

    assert clip_person("real/MEAD__M003_level_1_happy_024") == clip_person(
        "real/MEAD__M003_level_1_disgusted_015")
    assert clip_person("real/SadTalker__examples_ref_video_WDA_AlexandriaOcasioCortez_000") == \
        clip_person("real/V-Express__test_samples_short_case_AOC_gt")
    ids = [f"real/MEAD__M{i:03d}_level_1_{e}" for i in range(20) for e in ("happy", "sad")]
    ids += [f"real/clip{i}" for i in range(20)]
    frames = [Sample(path=f"{v}/{k}.png", label=0, video_id=v) for v in ids for k in range(4)]
    train, held = split_clips(frames, held=0.3)
    people = {clip_person(s.video_id) for s in train}
    assert held and train and not people & {clip_person(s.video_id) for s in held}
    assert len(train) == 2 * len({s.video_id for s in train})  # every second frame


def test_recipe_with_videos_trains_on_frames_and_sets_the_rule_threshold(
        faces: Path, tmp_path: Path) -> None:
    import numpy as np
    from media import make_video

    from lorefd.apps.recipe import FP_RULE
    from lorefd.data.manifest import read_manifest
    from lorefd.evaluation.evaluate import score_samples
    from lorefd.models.bundle import read_bundle_header

    clips = tmp_path / "clips" / "real"
    clips.mkdir(parents=True)
    for i in range(8):
        make_video(clips / f"person{i}.mp4", stills(1, start=30 + i), seconds=1.0, seed=i)
    out = tmp_path / "run"
    s = run_recipe(faces, out, "cpu", TOY, stages=["faces", "split", "heldout", "videos",
                                                   "baseline", "export"],
                   val_fraction=0.25, test_fraction=0.25, reserve_bundled=False, device="cpu",
                   videos=tmp_path / "clips")
    v = s["videos"]
    assert v["train_clips"] + v["heldout_clips"] == 8 and v["heldout_clips"] >= 1
    assert v["train_frames"] > 0
    counts = json.loads((out / "baseline" / "summary.json").read_text())
    meta = json.loads((out / "baseline" / "last" / "config.json").read_text())["meta"]
    assert meta["train_counts"]["real"] == s["identities"]["train"] + v["train_frames"]
    held = read_manifest(out / "video_heldout.csv")
    header = read_bundle_header(out / "model.lorefd")
    thr = header["threshold"]
    assert thr["value"] == pytest.approx(s["threshold"]["threshold"])
    assert "at most 10% of the frames of" in thr["source"] and header.get("onnx")
    p, _ = score_samples(load_bundle(out / "model.lorefd").detector, held)
    assert np.mean(p >= thr["value"]) <= FP_RULE + 1.0 / len(p)
    assert counts["steps"] == 2
