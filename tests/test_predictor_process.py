"""dlib's landmark model in a child process (the cold start of `lorefd detect`): the same points
as in-process, a fallback when the child fails, nothing left running after `detect`."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import numpy as np
import pytest
from media import make_image, make_video, stills

pytest.importorskip("dlib")

from lorefd.cli import main  # noqa: E402
from lorefd.data import landmarks  # noqa: E402
from lorefd.data.images import load_rgb  # noqa: E402
from lorefd.data.predictor_process import PredictorProcess, PredictorProcessError  # noqa: E402


@pytest.fixture(scope="module")
def detector() -> landmarks.LandmarkDetector:
    return landmarks.LandmarkDetector(max_side=0)


def _frames(tmp_path: Path) -> list[np.ndarray]:
    """Bundled faces, and the same faces small inside a bigger frame (a face box far from the
    frame's edges, and one touching them)."""
    frames = [load_rgb(p) for p in stills(6)]
    frames.append(load_rgb(make_image(tmp_path / "wide.png", stills(1, 7)[0], size=(640, 360))))
    return frames


def test_child_gives_the_in_process_points(detector, tmp_path: Path) -> None:
    proc = PredictorProcess(landmarks.find_predictor())
    try:
        n = 0
        for rgb in _frames(tmp_path):
            for face in detector.detect(rgb):
                box = tuple(int(round(v)) for v in face.box)
                np.testing.assert_array_equal(proc(rgb, box), face.landmarks)
                n += 1
        assert n >= 7
    finally:
        proc.close()
    with pytest.raises(PredictorProcessError, match="closed"):
        proc(rgb, box)


def test_a_failing_child_falls_back_to_loading_here(detector, tmp_path: Path, caplog) -> None:
    rgb = load_rgb(stills(1)[0])
    want = detector.detect(rgb)[0].landmarks
    landmarks._PRELOADED.append(PredictorProcess(tmp_path / "missing.dat"))  # dlib cannot load it
    fresh = landmarks.LandmarkDetector(max_side=0)
    assert not landmarks._PRELOADED  # taken by the new detector
    with caplog.at_level(logging.WARNING, logger="lorefd"):
        got = fresh.detect(rgb)[0].landmarks
    np.testing.assert_array_equal(got, want)
    assert any("landmark process exited" in r.getMessage() for r in caplog.records)


def test_detect_uses_the_child_and_leaves_nothing_running(tmp_path: Path, monkeypatch) -> None:
    started: list[PredictorProcess] = []
    real = landmarks.preload_predictor

    def spy() -> bool:
        ok = real()
        started.extend(landmarks._PRELOADED)
        return ok

    calls = []
    serve = PredictorProcess.__call__

    def counted(self, rgb, box):  # type: ignore[no-untyped-def]
        calls.append(box)
        return serve(self, rgb, box)

    monkeypatch.setattr(landmarks, "preload_predictor", spy)
    monkeypatch.setattr(PredictorProcess, "__call__", counted)
    photo = make_image(tmp_path / "p.png", stills(1)[0])
    video = make_video(tmp_path / "v.mp4", faces=stills(1, 3), seconds=0.5, fps=8)
    assert main(["detect", str(photo), str(video), "--json", str(tmp_path / "r.json"),
                 "-q"]) == 0
    assert len(started) == 1 and len(calls) >= 2  # the photo's face and the video's
    assert not landmarks._PRELOADED
    proc = started[0]._proc
    started.clear()
    gc.collect()
    assert proc is None or proc.wait(timeout=5) is not None  # ended with its detector
