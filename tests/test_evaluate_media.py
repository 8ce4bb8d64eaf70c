"""`lorefd evaluate` on raw videos: crops made with the model's own parameters and cached, one
set per child folder, videos without a face listed and never scored; stored crops made with
another margin are refused, by robustness too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from media import make_image, make_video, stills

from lorefd.cli import main
from lorefd.data.preprocess.adapters import find_datasets, guess_layout
from lorefd.models.bundle import shipped_bundle

pytestmark = pytest.mark.skipif(shipped_bundle() is None, reason="no shipped model")


def _labelled_set(root: Path, seed: int) -> Path:
    for i, name in enumerate(["real/a.mp4", "real/b.mp4", "fake/Swap/c.mp4"]):
        make_video(root / name, faces=stills(1, seed + i), seconds=0.5, fps=8)
    make_video(root / "fake/Swap/noface.mp4", faces=[], seconds=0.5, fps=8)
    return root


def test_layouts_of_roots_and_of_folders_of_sets(tmp_path: Path) -> None:
    (tmp_path / "ff" / "original_sequences" / "youtube").mkdir(parents=True)
    (tmp_path / "dfd" / "manipulated_sequences" / "DeepFakeDetection").mkdir(parents=True)
    (tmp_path / "cdf" / "Celeb-synthesis").mkdir(parents=True)
    (tmp_path / "mine" / "test" / "fake").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    assert [guess_layout(tmp_path / n) for n in ("ff", "dfd", "cdf", "mine", "empty")] == [
        "ffpp", "dfd", "celebdf", "folder", None]
    assert [(n, k) for n, k, _ in find_datasets(tmp_path)] == [
        ("cdf", "celebdf"), ("dfd", "dfd"), ("ff", "ffpp"), ("mine", "folder")]
    assert [k for _, k, _ in find_datasets(tmp_path / "mine")] == ["folder"]
    assert find_datasets(tmp_path / "empty") == []


def test_evaluate_raw_videos_with_the_models_crops_cached(tmp_path: Path) -> None:
    from lorefd.models.bundle import read_bundle_header, shipped_bundle

    root = tmp_path / "dev"
    _labelled_set(root / "one", 0)
    _labelled_set(root / "two", 3)
    cache, out = tmp_path / "cache", tmp_path / "eval"
    argv = ["evaluate", "--data", str(root), "--out", str(out), "--cache", str(cache),
            "--frames", "3"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary) == ["one", "two"]
    m = json.loads((out / "one" / "metrics.json").read_text())
    assert m["overall"]["video"]["n"] == 3  # the video without a face is not scored ...
    assert [(Path(u["path"]).name, u["status"], u["label"]) for u in m["unscored"]] == [
        ("noface.mp4", "no_face", 1)]  # ... but listed, as a fake
    pre = m["crops"]["options"]
    shipped = read_bundle_header(shipped_bundle())["preprocess"]  # the model's own crops
    assert (pre["size"], pre["margin"], pre["detector"], pre["frames"]) == (
        shipped["size"], shipped["margin"], "dlib", 3)
    assert Path(m["crops"]["cache"]).parent.parent == cache
    assert (out / "two" / "predictions.csv").is_file()
    assert main(argv + ["--out", str(tmp_path / "again")]) == 0  # second run: from the cache
    done = json.loads((Path(m["crops"]["cache"]) / "summary.json").read_text())
    assert (done["resumed"], done["processed"]) == (4, 0)
    assert (json.loads((tmp_path / "again" / "one" / "metrics.json").read_text())["overall"]
            == m["overall"])


def test_crops_made_at_another_margin_are_refused(tmp_path: Path) -> None:
    for i, name in enumerate(["real/a.png", "real/b.png", "fake/c.png", "fake/d.png"]):
        make_image(tmp_path / "photos" / name, stills(1, i)[0])
    crops = tmp_path / "crops"
    assert main(["preprocess", "folder", str(tmp_path / "photos"), "--out", str(crops),
                 "--size", "128", "--margin", "0.25", "--no-progress"]) == 0
    argv = ["evaluate", "--data", str(crops), "--out", str(tmp_path / "e")]
    assert main(argv) == 2  # margin 0.25, the model's is 0.1: no silent score
    assert not (tmp_path / "e" / "metrics.json").exists()
    rob = ["robustness", "--model", str(shipped_bundle()), "--data", str(crops), "--out", str(tmp_path / "r"), "--types", "jpeg",
           "--levels", "1"]
    assert main(rob) == 2 and not (tmp_path / "r" / "robustness.json").exists()  # same rule
    assert main(argv + ["--allow-mismatch"]) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert any("margin 0.25" in t for t in m["crop_mismatch"])
    # the same photos as raw input (--faces crop): cropped at the model's margin, accepted
    assert main(["evaluate", "--data", str(tmp_path / "photos"), "--faces", "crop",
                 "--out", str(tmp_path / "raw"), "--cache", str(tmp_path / "c")]) == 0
    m = json.loads((tmp_path / "raw" / "metrics.json").read_text())
    assert m["crops"]["options"]["margin"] == 0.1 and m["overall"]["frame"]["n"] == 4
