"""End-to-end ``lorefd preprocess`` on small generated datasets (real face stills, h264)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from media import make_bad_files, make_image, make_video, stills

from lorefd.cli import main
from lorefd.data.manifest import load_samples
from lorefd.data.preprocess.adapters import load_ffpp_splits
from lorefd.data.preprocess.align import five_point_template

pytest.importorskip("dlib")

SIZE, MARGIN = 160, 0.25
COMMON = ["--size", str(SIZE), "--no-progress", "--workers", "1"]


@pytest.fixture(scope="module")
def ffpp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two train pairs and one test pair, c23 only, Deepfakes + FaceSwap partially present."""
    root = tmp_path_factory.mktemp("ffpp")
    splits = load_ffpp_splits()
    (a, b), (c, d) = splits["train"][0], splits["test"][0]
    real = root / "original_sequences" / "youtube" / "c23" / "videos"
    for k, vid in enumerate((a, b, c)):
        make_video(real / f"{vid}.mp4", stills(1, k), seconds=1.5, fps=12, seed=k)
    make_video(root / "manipulated_sequences/Deepfakes/c23/videos" / f"{a}_{b}.mp4",
               stills(1, 5), seconds=1.5, fps=12, seed=5)
    make_video(root / "manipulated_sequences/FaceSwap/c23/videos" / f"{c}_{d}.mp4",
               stills(1, 6), seconds=0.25, fps=12, size=(640, 360), seed=6)
    return root


def _run(*args: str) -> int:
    return main(["preprocess", *args])


def test_ffpp_manifest_rows_labels_splits_landmarks(ffpp_root: Path, tmp_path: Path):
    out = tmp_path / "out"
    assert _run("ffpp", str(ffpp_root), "--out", str(out), "--frames", "4", *COMMON) == 0
    samples = load_samples(out)
    splits = load_ffpp_splits()
    (a, b), (c, d) = splits["train"][0], splits["test"][0]
    assert len(samples) == 4 * 4 + 3  # the FaceSwap video is shorter than --frames: all 3
    by_video = {}
    for s in samples:
        by_video.setdefault(s.video_id.split("/")[-1], []).append(s)
        assert Path(s.path).is_file() and s.dataset == "ffpp" and s.compression == "c23"
        pts = s.load_landmarks()
        assert pts.shape == (68, 2)
        assert (pts >= 0).all() and (pts < SIZE).all(), "landmarks outside the crop"
        assert len(s.box.split()) == 4 and s.score is not None
    assert {s.label for s in by_video[a]} == {0} and {s.split for s in by_video[a]} == {"train"}
    fake = by_video[f"{a}_{b}"][0]
    assert (fake.label, fake.method, fake.split, fake.target_id, fake.source_id) == (
        1, "Deepfakes", "train", a, b)
    assert {s.split for s in by_video[f"{c}_{d}"]} == {"test"}
    assert sorted(s.frame_index for s in by_video[a]) == [2, 6, 11, 15]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == 5 and summary["ok"] == 5 and summary["failed"] == 0
    assert summary["short_videos"] == 1
    assert summary["frames_sampled"] == summary["faces_found"] == len(samples)
    assert "manipulated_sequences/Face2Face/c23" in summary["missing"]
    assert (out / "failures.jsonl").read_text() == ""
    # The contract with stage 1: the dataset key region from the stored landmarks covers the
    # face's centre without spanning the whole crop.
    from lorefd.data.keyregion import dataset_key_region, normalise_landmarks

    pts = np.stack([s.load_landmarks() for s in samples])
    region = dataset_key_region(normalise_landmarks(pts, SIZE, SIZE), margin=0.02)
    x0, y0, x1, y1 = region.rect
    assert 0 < x0 < 0.5 < x1 < 1 and 0 < y0 < 0.5 < y1 <= 1
    assert 0 < len(region.patch_set(SIZE, 16)) < (SIZE // 16) ** 2


def test_eyes_land_on_template(ffpp_root: Path, tmp_path: Path):
    """Re-detected eyes on the written crops sit at the template's eye positions."""
    from lorefd.data.images import load_rgb
    from lorefd.data.landmarks import LandmarkDetector, five_points

    out = tmp_path / "out"
    assert _run("ffpp", str(ffpp_root), "--out", str(out), "--frames", "2", "--split", "test",
                *COMMON) == 0
    samples = load_samples(out)
    assert samples and {s.split for s in samples} == {"test"}
    template = five_point_template(SIZE, MARGIN)
    detector = LandmarkDetector(max_side=0)
    for s in samples:
        stored = five_points(s.load_landmarks())
        assert np.abs(stored[:2] - template[:2]).max() < 5.0
        face = detector.largest(load_rgb(s.path))
        assert face is not None
        assert np.abs(five_points(face.landmarks)[:2] - template[:2]).max() < 5.0


def test_resume_skips_done_and_redoes_interrupted(ffpp_root: Path, tmp_path: Path):
    out = tmp_path / "out"
    args = ["ffpp", str(ffpp_root), "--out", str(out), "--frames", "3", "--format", "jpg",
            *COMMON]
    assert _run(*args) == 0
    first = (out / "manifest.csv").read_text()
    assert ".jpg" in first
    # Simulate a kill in the middle of one video: its done marker is gone, a temp file and a
    # stale crop are left behind.
    done = sorted(out.glob("crops/**/done.json"))
    victim = done[0].parent
    done[0].unlink()
    (victim / ".000001.jpg.abc.tmp").write_bytes(b"partial")
    (victim / "999999.jpg").write_bytes(b"stale")
    (out / ".manifest.csv.xyz.tmp").write_text("half a manifest")
    assert _run(*args) == 0
    assert not list(out.glob(".*.tmp"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] == 4 and summary["processed"] == 1
    assert (out / "manifest.csv").read_text() == first
    assert not list(victim.glob("*.tmp")) and not (victim / "999999.jpg").exists()
    # Changing an output option redoes everything.
    assert _run(*args[:-len(COMMON)], "--size", "128", "--no-progress", "--workers", "1") == 0
    assert json.loads((out / "summary.json").read_text())["processed"] == 5


def test_kill_and_resume_subprocess(ffpp_root: Path, tmp_path: Path):
    """SIGKILL a real run after its first finished video, then finish it."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "lorefd.cli", "preprocess", "ffpp", str(ffpp_root), "--out",
           str(out), "--frames", "8", *COMMON]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("crops/**/done.json")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.csv").exists() or proc.returncode == 0
    finished = len(list(out.glob("crops/**/done.json")))
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 5 and summary["resumed"] == finished
    for s in load_samples(out):
        assert Path(s.path).stat().st_size > 0 and s.load_landmarks().shape == (68, 2)


def test_workers_pool_every_k(ffpp_root: Path, tmp_path: Path):
    out = tmp_path / "out"
    assert _run("ffpp", str(ffpp_root), "--out", str(out), "--every", "6", "--methods",
                "Deepfakes", "--size", "96", "--workers", "2", "--no-progress") == 0
    samples = load_samples(out)
    assert {s.method for s in samples} == {"", "Deepfakes"}
    assert sorted({s.frame_index for s in samples}) == [0, 6, 12]


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("bad")
    bad = make_bad_files(root / "real")
    make_video(root / "real" / "good.mp4", seconds=1.0, seed=2)
    make_image(root / "fake" / "deep" / "still.png", stills(1, 7)[0])
    big = root / "fake" / "big.jpg"
    make_image(big, stills(1, 8)[0], size=(3000, 3000))
    return root, bad


def test_bad_inputs_are_logged_skips(bad_root: tuple[Path, dict[str, Path]], tmp_path: Path):
    root, bad = bad_root
    out = tmp_path / "out"
    assert _run("folder", str(root), "--out", str(out), "--frames", "3", *COMMON) == 0
    failures = {Path(f["path"]).name: f for f in map(
        json.loads, (out / "failures.jsonl").read_text().splitlines())}
    expect_failed = ["empty", "truncated", "corrupt", "unsupported_codec", "not_a_video",
                     "audio_only", "huge_image", "bad_image"]
    for case in expect_failed:
        f = failures[bad[case].name]
        assert f["status"] == "failed" and f["reason"], case
    assert "empty" in failures[bad["empty"].name]["reason"]
    assert "codec" in failures[bad["unsupported_codec"].name]["reason"]
    assert "no video stream" in failures[bad["audio_only"].name]["reason"]
    assert "pixels" in failures[bad["huge_image"].name]["reason"]
    assert failures[bad["no_face"].name]["status"] == "no_face"
    produced = {s.video_id.split("/")[-1] for s in load_samples(out)}
    for ok in ("several_faces", "odd_name", "gray", "cmyk", "16bit", "alpha",
               "truncated_readable"):
        assert bad[ok].stem in produced, ok
    assert {"good", "still", "big"} <= produced
    summary = json.loads((out / "summary.json").read_text())
    assert summary["multi_face_frames"] >= 1 and summary["no_face"] == 1
    assert summary["failed"] == len(expect_failed)
    # a several-faces video keeps the largest face: one crop per frame
    several = [s for s in load_samples(out) if s.video_id.endswith("several_faces")]
    assert len(several) == len({s.frame_index for s in several}) == 3
    # --strict turns skips into a failing exit code; resume keeps the failures
    assert _run("folder", str(root), "--out", str(out), "--frames", "3", "--strict",
                *COMMON) == 1
    assert json.loads((out / "summary.json").read_text())["processed"] == 0


def test_nothing_produced_is_an_error(bad_root: tuple[Path, dict[str, Path]], tmp_path: Path):
    root, bad = bad_root
    only_bad = tmp_path / "only_bad" / "real"
    only_bad.mkdir(parents=True)
    for case in ("empty", "corrupt", "no_face"):
        (only_bad / bad[case].name).write_bytes(bad[case].read_bytes())
    out = tmp_path / "out"
    assert _run("folder", str(only_bad.parent), "--out", str(out), *COMMON) == 1
    assert len((out / "failures.jsonl").read_text().splitlines()) == 3
    assert _run("ffpp", str(tmp_path / "missing"), "--out", str(out), *COMMON) == 2


def test_dfd_and_celebdf_layouts(tmp_path: Path):
    dfd = tmp_path / "dfd"
    make_video(dfd / "original_sequences/actors/c40/videos/01__walk.mp4", stills(1, 9),
               seconds=1.0, seed=9)
    make_video(dfd / "manipulated_sequences/DeepFakeDetection/c40/videos/01_02__walk__X1.mp4",
               stills(1, 10), seconds=1.0, seed=10)
    assert _run("dfd", str(dfd), "--out", str(tmp_path / "o1"), "--frames", "2", *COMMON) == 0
    samples = load_samples(tmp_path / "o1")
    assert {(s.label, s.method, s.compression, s.split) for s in samples} == {
        (0, "", "c40", "test"), (1, "DeepFakeDetection", "c40", "test")}

    cdf = tmp_path / "celebdf"
    make_video(cdf / "Celeb-real/id0_0000.mp4", stills(1, 11), seconds=1.0, seed=11)
    make_video(cdf / "Celeb-synthesis/id0_id1_0000.mp4", stills(1, 12), seconds=1.0, seed=12)
    (cdf / "List_of_testing_videos.txt").write_text("0 Celeb-synthesis/id0_id1_0000.mp4\n")
    assert _run("celebdf", str(cdf), "--out", str(tmp_path / "o2"), "--frames", "2",
                *COMMON) == 0
    samples = load_samples(tmp_path / "o2")
    assert {(s.label, s.split) for s in samples} == {(0, "train"), (1, "test")}
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert "YouTube-real" in summary["missing"]
