"""`lorefd quality`: real videos re-encoded worse, scored like `detect`, compared as published."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from media import make_video, stills

from lorefd.data.perturb import PerturbationError, degrade_video
from lorefd.evaluation import quality as q


def _frames(path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return len(frames), frames[0].shape[:2]


def test_degrade_video_lowers_bitrate_and_resolution(tmp_path) -> None:
    src = make_video(tmp_path / "v.mp4", stills(2), seconds=1.0, size=(320, 240))
    n, (h, w) = _frames(src)
    low = degrade_video(src, tmp_path / "low.mp4", crf=45)
    high = degrade_video(src, tmp_path / "high.mp4", crf=None)
    half = degrade_video(src, tmp_path / "half.mp4", crf=None, scale=0.5)
    assert low.stat().st_size < high.stat().st_size
    assert _frames(low) == (n, (h, w))
    assert _frames(half) == (n, (h // 2, w // 2))
    assert not list(tmp_path.glob(".*.part"))
    with pytest.raises(PerturbationError):
        degrade_video(src, tmp_path / "x.mp4", scale=2.0)
    with pytest.raises(PerturbationError):
        degrade_video(tmp_path / "half.mp4.missing", tmp_path / "y.mp4")


def test_summarise_pools_frames_and_the_pass_rule() -> None:
    s = q.summarise([np.array([0.1, 0.9, 0.5]), None, np.array([0.2])], threshold=0.5)
    assert s["videos"] == 2 and s["frames"] == 4
    assert s["share_fake"] == pytest.approx(0.5) and s["median_p_fake"] == pytest.approx(0.35)
    assert s["video_medians"] == [pytest.approx(0.5), None, pytest.approx(0.2)]


def test_quality_check_end_to_end_on_the_shipped_model(tmp_path, monkeypatch) -> None:
    videos = [make_video(tmp_path / "src" / f"{i}.mp4", stills(2, start=3 * i), seconds=1.0,
                         size=(480, 360), seed=i) for i in range(2)]
    variants = (q.Variant("crf45", 45), q.Variant("half", None, 0.5))
    # a variant whose copy cannot be made is left out, on both sides of its comparison
    real_degrade = q.degrade_video

    def flaky(src, dst, crf=None, scale=1.0):
        if scale != 1.0 and src.name == "1.mp4":
            raise PerturbationError("cannot")
        return real_degrade(src, dst, crf, scale)

    monkeypatch.setattr(q, "degrade_video", flaky)
    rep = q.quality_check(None, videos, tmp_path / "out", variants=variants, frames=6)
    saved = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert saved["passes"] == rep["passes"]
    base = rep["variants"][q.ORIGINAL]
    assert base["videos"] == 2 and base["frames"] > 0
    from lorefd.engines.detect import DetectOptions, detect_paths

    direct = detect_paths([videos[0]], None, DetectOptions(frames=6))["results"][0]
    assert base["video_medians"][0] == pytest.approx(np.median(
        [f["p_fake"] for f in direct["faces"]]), abs=1e-6)
    crf = rep["variants"]["crf45"]
    assert crf["videos"] == 2 and crf["as_published"]["share_fake"] == base["share_fake"]
    assert crf["passes"] == (crf["share_fake"] <= base["share_fake"]
                             and crf["median_p_fake"] <= base["median_p_fake"])
    half = rep["variants"]["half"]
    assert half["videos"] == 1 and half["as_published"]["videos"] == 1
    assert half["as_published"]["median_p_fake"] == pytest.approx(base["video_medians"][0])
    assert "| crf45 |" in (tmp_path / "out" / "quality.md").read_text()
    # run again: the copies are reused, not re-made
    made = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "variants").rglob("*.mp4")}
    q.quality_check(None, videos, tmp_path / "out", variants=variants, frames=6)
    assert made == {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "variants").rglob("*.mp4")}


def test_cli_quality_refuses_missing_inputs(tmp_path, capsys) -> None:
    from lorefd.cli import main

    assert main(["quality", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["quality", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no videos" in capsys.readouterr().err
