"""`lorefd detect`: images, faceless images, videos, mixed folders, heatmaps, the JSON report."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from conftest import make_detector_checkpoint
from media import make_image, make_video, render_frames, stills

from lorefd.cli import main
from lorefd.data.images import load_rgb, resize_square, to_tensor
from lorefd.data.preprocess.adapters import MediaItem
from lorefd.data.preprocess.runner import PreprocessOptions, process_item
from lorefd.engines.detect import STATUSES, DetectOptions, detect_paths
from lorefd.models.bundle import load_bundle
from lorefd.models.export import export_bundle


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("detect")


@pytest.fixture(scope="module")
def bundle(work: Path) -> Path:
    out = work / "model.lorefd"
    export_bundle(make_detector_checkpoint(work), out, verify=False)
    return out


@pytest.fixture(scope="module")
def face_image(work: Path) -> Path:
    return make_image(work / "inputs" / "face.png", face=stills(1, 1)[0], size=(320, 288))


@pytest.fixture(scope="module")
def no_face_image(work: Path) -> Path:
    """A flat horizontal gradient: nothing face-like."""
    path = work / "inputs" / "gradient.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, 240, dtype=np.uint8)
    cv2.imwrite(str(path), np.repeat(np.tile(ramp, (180, 1))[..., None], 3, axis=2))
    return path


@pytest.fixture(scope="module")
def video(work: Path) -> Path:
    return make_video(work / "inputs" / "clip.mp4", faces=stills(1, 2), seconds=1.0, fps=12,
                      size=(320, 240))


def check_schema(report: dict) -> None:
    """The documented JSON schema (engines/detect.py), checked field by field."""
    assert isinstance(report["lorefd_version"], str)
    assert {"path", "detector", "image_size", "bundle_version", "threshold_source",
            "preprocess"} <= set(report["model"])
    assert isinstance(report["threshold"], float)
    assert set(report["summary"]) == {"inputs", "seconds", *STATUSES}
    assert report["summary"]["inputs"] == len(report["results"])
    for r in report["results"]:
        assert set(r) == {"path", "type", "status", "message", "p_fake", "verdict", "faces",
                          "frames", "heatmap", "seconds"}
        assert r["type"] in ("image", "video", None)
        assert r["status"] in STATUSES and isinstance(r["message"], str)
        if r["status"] == "ok":
            assert 0.0 <= r["p_fake"] <= 1.0 and r["faces"]
            assert r["verdict"] == ("fake" if r["p_fake"] >= report["threshold"] else "real")
        else:
            assert r["p_fake"] is None and r["verdict"] is None and r["faces"] == []
            assert r["message"]
        for f in r["faces"]:
            assert set(f) == {"box", "p_fake", "frame_index"} and len(f["box"]) == 4
            assert 0.0 <= f["p_fake"] <= 1.0
            assert (f["frame_index"] is None) == (r["type"] == "image")
        if r["type"] == "video" and r["frames"] is not None:
            assert {"count", "mean", "share_above_threshold", "sampled", "decoded", "total",
                    "fps"} <= set(r["frames"])
        else:
            assert r["frames"] is None
        assert r["heatmap"] is None or Path(r["heatmap"]).is_file()


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def test_image_with_heatmap(bundle: Path, face_image: Path, work: Path) -> None:
    heat = work / "heat_image"
    report = detect_paths([face_image], bundle, DetectOptions(heatmap_dir=heat))
    check_schema(report)
    (r,) = report["results"]
    assert (r["type"], r["status"], len(r["faces"])) == ("image", "ok", 1)
    assert r["p_fake"] == r["faces"][0]["p_fake"]
    x0, y0, x1, y1 = (int(v) for v in r["faces"][0]["box"])
    assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 288
    assert r["heatmap"] == str(heat / "face_heatmap.png")
    original, overlay = load_rgb(face_image), load_rgb(r["heatmap"])
    h, w = original.shape[:2]  # the original image (not the crop), the strip below it
    assert overlay.shape[1] == w and overlay.shape[0] > h
    diff = np.abs(overlay[:original.shape[0]].astype(int) - original.astype(int)).sum(2)
    inner = diff[y0 + (y1 - y0) // 4:y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4:x1 - (x1 - x0) // 4]
    assert (inner > 10).mean() > 0.9  # the colour map covers the face
    assert (diff[-20:] == 0).all() and (diff[:, -20:] == 0).all()  # nothing far outside it


def test_scores_match_the_training_crops(bundle: Path, face_image: Path, video: Path,
                                         tmp_path: Path) -> None:
    """Detect crops faces exactly like `lorefd preprocess` + the training dataset do."""
    det = load_bundle(bundle).detector
    report = detect_paths([face_image, video], bundle, DetectOptions(frames=6))
    for r, path in zip(report["results"], (face_image, video), strict=True):
        item = MediaItem(path=path, label=0, dataset="t", video_id=path.stem)
        rec = process_item(item, tmp_path / "pre", PreprocessOptions(frames=6, workers=1))
        assert rec["status"] == "ok"
        crops = torch.stack([to_tensor(resize_square(load_rgb(tmp_path / "pre" / row["path"]), 64))
                             for row in rec["rows"]])
        expected = det.predict_proba(crops).numpy()
        got = np.array([f["p_fake"] for f in r["faces"]])
        assert len(got) == len(expected)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        if r["type"] == "video":
            assert [f["frame_index"] for f in r["faces"]] == [row["frame_index"]
                                                               for row in rec["rows"]]


def test_image_without_a_face_is_not_an_error(bundle: Path, no_face_image: Path, work: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = work / "noface.json"
    assert main(["detect", str(no_face_image), "--model", str(bundle), "--json", str(out),
                 "--heatmap", str(work / "heat_noface")]) == 0
    table = capsys.readouterr().out
    assert "no face" in table
    report = json.loads(out.read_text())
    check_schema(report)
    (r,) = report["results"]
    assert (r["status"], r["p_fake"], r["verdict"], r["heatmap"]) == ("no face", None, None, None)


def test_short_video_with_heatmap(bundle: Path, video: Path, work: Path) -> None:
    heat = work / "heat_video"
    report = detect_paths([video], bundle, DetectOptions(heatmap_dir=heat, frames=8))
    check_schema(report)
    (r,) = report["results"]
    assert (r["type"], r["status"]) == ("video", "ok")
    fr = r["frames"]
    assert (fr["total"], fr["sampled"], fr["decoded"], fr["count"]) == (12, 8, 8, 8)
    scores = np.array([f["p_fake"] for f in r["faces"]])
    assert [f["frame_index"] for f in r["faces"]] == [0, 2, 3, 5, 6, 8, 9, 11]
    assert fr["mean"] == pytest.approx(scores.mean(), abs=1e-6)
    assert fr["median"] == pytest.approx(np.median(scores), abs=1e-6)
    assert fr["aggregate"] == "median" and r["p_fake"] == fr["median"]
    assert fr["share_above_threshold"] == pytest.approx((scores >= report["threshold"]).mean())
    frames = decode(Path(r["heatmap"]))
    assert r["heatmap"].endswith("clip_heatmap.mp4") and len(frames) == 8
    assert frames[0].shape[1:] == (320, 3) and frames[0].shape[0] > 240  # frame + strip
    assert len({f.shape for f in frames}) == 1  # every frame the same size
    original = decode(video)[r["faces"][0]["frame_index"]].astype(int)
    x0, y0, x1, y1 = (int(v) for v in r["faces"][0]["box"])
    diff = np.abs(frames[0][:original.shape[0]].astype(int) - original).mean(2)
    assert diff[y0 + 10:y1 - 10, x0 + 10:x1 - 10].mean() > 20  # overlay on the face
    assert diff[-15:, -15:].mean() < 8  # background untouched (up to h264 noise)


def test_mixed_folder(bundle: Path, face_image: Path, no_face_image: Path, video: Path,
                      work: Path, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lorefd.engines.heatmaps.VIDEO_MAX_SIDE", 160)  # heatmap MP4 downscale
    folder = work / "mixed"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(face_image, folder / "face.png")
    shutil.copy(face_image, folder / "sub" / "face.png")  # same name in another folder
    shutil.copy(no_face_image, folder / "gradient.png")
    shutil.copy(video, folder / "sub" / "clip.mp4")
    (folder / "notes.txt").write_text("not media\n")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / ".hidden.png").write_bytes(b"")
    out, heat = work / "mixed.json", work / "heat_mixed"
    code = main(["detect", str(folder), str(work / "missing.png"), "--model", str(bundle),
                 "--json", str(out), "--heatmap", str(heat), "--frames", "4"])
    assert code == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    check_schema(report)
    status = {Path(r["path"]).relative_to(work).as_posix(): r["status"]
              for r in report["results"]}
    assert status == {
        "mixed/broken.jpg": "unreadable", "mixed/empty.mp4": "unreadable",
        "mixed/face.png": "ok", "mixed/garbage.mp4": "unreadable",
        "mixed/gradient.png": "no face", "mixed/notes.txt": "unsupported",
        "mixed/sub/clip.mp4": "ok", "mixed/sub/face.png": "ok", "missing.png": "unreadable"}
    types = {Path(r["path"]).name: r["type"] for r in report["results"]}
    assert types["notes.txt"] is None and types["clip.mp4"] == "video"
    assert {p.relative_to(heat).as_posix() for p in heat.rglob("*") if p.is_file()} == {
        "mixed/face_heatmap.png", "mixed/sub/face_heatmap.png", "mixed/sub/clip_heatmap.mp4"}
    assert report["summary"]["ok"] == 3 and report["summary"]["unreadable"] == 4
    assert types["missing.png"] == "image" and types["empty.mp4"] == "video"
    shape = decode(heat / "mixed" / "sub" / "clip_heatmap.mp4")[0].shape
    assert shape[1:] == (160, 3) and shape[0] > 120
    for line in ("broken.jpg", "notes.txt", "empty.mp4", "clip.mp4", "9 input(s)"):
        assert line in table
    # nothing processable at all: exit status 1
    assert main(["detect", str(folder / "notes.txt"), str(folder / "empty.mp4"),
                 "--model", str(bundle)]) == 1


def test_several_faces_and_threshold(bundle: Path, work: Path) -> None:
    path = work / "inputs" / "two.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(render_frames(stills(2, 0), 1, (480, 240), motion=False,
                                                      face_frac=0.7)[0], cv2.COLOR_RGB2BGR))
    report = detect_paths([path], bundle, DetectOptions(threshold=0.0))
    (r,) = report["results"]
    assert r["status"] == "ok" and len(r["faces"]) == 2
    assert r["p_fake"] == max(f["p_fake"] for f in r["faces"])
    assert r["verdict"] == "fake" and report["threshold"] == 0.0
    assert "2 faces" in r["message"]


def test_baseline_heatmap_says_it_has_no_attention(work: Path, face_image: Path) -> None:
    out = work / "xception.lorefd"
    export_bundle(make_detector_checkpoint(work, name="baseline", sub="baseline"), out,
                  verify=False)
    report = detect_paths([face_image], out, DetectOptions(heatmap_dir=work / "heat_xception"))
    (r,) = report["results"]
    assert r["status"] == "ok" and "no attention map" in r["message"]
    original, overlay = load_rgb(face_image), load_rgb(r["heatmap"])
    assert overlay.shape[1] == original.shape[1] and overlay.shape[0] > original.shape[0]
    x0, y0, x1, y1 = (int(v) for v in r["faces"][0]["box"])
    assert (overlay[y0 + 5:y1 - 5, x0 + 5:x1 - 5] == original[y0 + 5:y1 - 5, x0 + 5:x1 - 5]).all()


def test_two_runs_never_overwrite_each_others_heatmaps(bundle: Path, face_image: Path,
                                                       work: Path) -> None:
    heat = work / "heat_shared"
    first = detect_paths([face_image], bundle, DetectOptions(heatmap_dir=heat))["results"][0]["heatmap"]
    before = Path(first).read_bytes()
    second = detect_paths([face_image], bundle, DetectOptions(heatmap_dir=heat, threshold=0.0))
    path = second["results"][0]["heatmap"]
    assert path != first and Path(path).name == "face_png_heatmap.png"
    assert Path(first).read_bytes() == before  # the first run's file is untouched
    third = detect_paths([face_image], bundle, DetectOptions(heatmap_dir=heat))["results"][0]["heatmap"]
    assert Path(third).name == "face_2_heatmap.png"
    assert len(list(heat.iterdir())) == 3


def test_heatmap_names_are_claimed_atomically(tmp_path: Path) -> None:
    from lorefd.engines.inputs import HeatmapNamer, InputFile, claim

    item = InputFile(tmp_path / "x.jpg", Path("x.jpg"))
    a, b = HeatmapNamer(tmp_path / "heat"), HeatmapNamer(tmp_path / "heat")  # two "runs"
    assert a(item, ".png").name == "x_heatmap.png"
    assert b(item, ".png").name == "x_jpg_heatmap.png"  # claimed on disk by the other run
    assert not claim(tmp_path / "heat" / "x_heatmap.png")


def test_csv_table_and_progress(bundle: Path, face_image: Path, no_face_image: Path,
                                video: Path, work: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    import csv

    from lorefd.engines.report_schema import CSV_COLUMNS

    out_csv, out_json = work / "rows.csv", work / "rows.json"
    args = ["detect", str(face_image), str(no_face_image), str(video), "--model", str(bundle),
            "--frames", "4", "--csv", str(out_csv), "--json", str(out_json)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "P(fake)" in captured.out.splitlines()[0]
    assert "detect:" not in captured.err  # stderr is not a terminal: no progress bar
    report = json.loads(out_json.read_text())
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 3
    for row, r in zip(rows, report["results"], strict=True):
        assert row["path"] == r["path"] and row["status"] == r["status"]
        assert row["p_fake"] == ("" if r["p_fake"] is None else f"{r['p_fake']:.6f}")
        assert row["verdict"] == (r["verdict"] or "")
    vid = rows[2]
    assert (vid["type"], vid["frames_sampled"], vid["frames_decoded"], vid["frames_scored"]) == (
        "video", "4", "4", "4")
    assert rows[1]["status"] == "no face" and rows[1]["frames_sampled"] == ""
    # on a terminal: a progress bar with ETA over the files, unless --quiet
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(args[:4] + ["--model", str(bundle)]) == 0
    err = capsys.readouterr().err
    assert "detect:" in err and "3/3" in err and "<" in err  # tqdm: elapsed<remaining
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(args[:4] + ["--model", str(bundle), "--quiet"]) == 0
    assert "3/3" not in capsys.readouterr().err


def test_long_video_progress_bar(bundle: Path, video: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lorefd.engines.detect.PROGRESS_MIN_FRAMES", 4)
    detect_paths([video], bundle, DetectOptions(frames=4, progress=True))
    assert "clip.mp4" in capsys.readouterr().err


def test_heatmap_draws_on_the_face_only_and_says_what_colours_mean_below_it() -> None:
    from lorefd.data.preprocess.crops import FaceCrop
    from lorefd.render import render_overlay

    rgb = np.full((300, 400, 3), 128, np.uint8)
    crop = FaceCrop(box=(150, 100, 250, 200), image=torch.zeros(3, 8, 8),
                    matrix=np.array([[1.0, 0, -150], [0, 1.0, -100]]),
                    heat=np.linspace(0, 1, 100 * 100, dtype=np.float32).reshape(100, 100))
    plain = render_overlay(rgb, [crop], 0.5)
    legend = render_overlay(rgb, [crop], 0.5, legend="P(pixel blended in), 0 to 1")
    assert plain.shape[1] == legend.shape[1] == 400
    assert plain.shape[0] > 300 and legend.shape[0] > plain.shape[0]  # a strip below, taller
    picture = legend[:300]
    assert (picture == render_overlay(rgb, [crop], 0.5)[:300]).all()  # the legend is not on it
    tinted = np.abs(picture.astype(int) - 128).sum(2) > 0
    ys, xs = np.nonzero(tinted)
    assert ys.min() >= 90 and ys.max() <= 210 and xs.min() >= 140 and xs.max() <= 260  # face only
    strip = legend[300:]
    low, high = cv2.applyColorMap(np.array([[0, 255]], np.uint8), cv2.COLORMAP_JET)[0, :, ::-1]
    rows = [y for y in range(strip.shape[0]) if (strip[y] == low).all(1).any()]
    assert rows  # the bar starts blue...
    reds = np.nonzero((strip[rows[0]] == high).all(1))[0]
    blues = np.nonzero((strip[rows[0]] == low).all(1))[0]
    assert reds.size and reds.min() > blues.max()  # ...and ends red, to the right
    no_heat = dataclasses.replace(crop, heat=None)
    assert render_overlay(rgb, [no_heat], 0.5).shape == plain.shape  # no legend: no bar


def test_the_strip_is_sized_to_the_picture() -> None:
    from lorefd.render import info_strip

    small, big = info_strip(128, [("fake 0.56", (230, 40, 40))], legend="P(blended in), 0 to 1"), \
        info_strip(1920, [("fake 0.56", (230, 40, 40))], legend="P(blended in), 0 to 1")
    assert small.shape[1] == 128 and big.shape[1] == 1920
    assert 30 < small.shape[0] < big.shape[0] < 400  # text scales with the width


def test_workers_score_files_in_threads_in_order(bundle: Path, face_image: Path,
                                                 no_face_image: Path, video: Path,
                                                 tmp_path: Path) -> None:
    """`workers=2`: the same report as one worker, rows in input order, one face pipeline per
    worker kept in the list passed (a second call makes none), heatmap names never shared."""
    from lorefd.data.preprocess.crops import FacePipeline
    from lorefd.models.graph import load_runtime_model

    copies = []
    for i in range(4):  # the same face under four names, two in one sub-folder
        copies.append(tmp_path / "in" / ("sub" if i % 2 else ".") / f"face{i}.png")
        copies[-1].parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(face_image, copies[-1])
    inputs = [copies[0], no_face_image, video, *copies[1:]]
    loaded = load_runtime_model(str(bundle), "cpu", None, 1)
    one = detect_paths(inputs, loaded, DetectOptions(frames=4))["results"]
    pipelines = [FacePipeline.from_bundle(loaded)]
    two = detect_paths(inputs, loaded, DetectOptions(frames=4, workers=2,
                                                     heatmap_dir=tmp_path / "heat"),
                       faces=pipelines)["results"]
    assert len(pipelines) == 2 and pipelines[0].backend is not pipelines[1].backend
    assert [r["path"] for r in two] == [str(p) for p in inputs]
    for a, b in zip(one, two, strict=True):
        assert (a["status"], a["p_fake"], a["faces"]) == (b["status"], b["p_fake"], b["faces"])
    heat = [r["heatmap"] for r in two if r["heatmap"]]
    assert len(heat) == 5 and len(set(heat)) == 5 and all(Path(h).is_file() for h in heat)
    again = detect_paths(inputs[:3], loaded, DetectOptions(frames=4, workers=2),
                         faces=pipelines)["results"]
    assert len(pipelines) == 2 and [r["p_fake"] for r in again] == [r["p_fake"] for r in one[:3]]


def test_workers_by_default_follow_the_cores_for_many_images(tmp_path: Path, monkeypatch) -> None:
    """`lorefd detect` without --workers: one per core (at most 4) from 128 images, else 1."""
    import os

    from lorefd.cli.detect import AUTO_MIN_IMAGES, auto_workers

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(AUTO_MIN_IMAGES - 1):
        (folder / f"{i}.jpg").touch()
    (folder / "notes.txt").touch()  # not an image
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert auto_workers([str(folder)]) == 1
    (tmp_path / "one_more.png").touch()
    assert auto_workers([str(folder), str(tmp_path / "one_more.png")]) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert auto_workers([str(folder), str(tmp_path / "one_more.png")]) == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert auto_workers([str(folder), str(tmp_path / "one_more.png")]) == 1
