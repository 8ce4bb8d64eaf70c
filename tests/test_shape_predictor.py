"""The bundled 68-point model run in NumPy gives dlib's points bit for bit and refuses damaged
files with a clear error (its load time and speed: benchmarks/RESULTS.md)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from media import FACES_DIR, make_image, stills

from lorefd.data.images import load_rgb
from lorefd.data.landmarks import PREDICTOR_PATH, LandmarkDetector
from lorefd.data.shape_predictor import (
    LAYOUT,
    ShapePredictor,
    ShapePredictorError,
    read_dlib_predictor,
)

# the bundled file; a new one is made only by scripts/convert_shape_predictor.py
PREDICTOR_SHA256 = "597ff1735e86a72c5d2328450cc6179e9f12d9b5e62d364bae4a65b6dfa1bd82"
DLIB_SHA256 = "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f"


def dlib_model() -> Path:
    """dlib's own file (face-recognition-models, in the dev extra), or skip."""
    pytest.importorskip("dlib")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face-recognition-models (dlib's 68-point model) not installed")
    return (Path(next(iter(spec.submodule_search_locations))) / "models"
            / "shape_predictor_68_face_landmarks.dat")


@pytest.fixture(scope="module")
def predictor() -> ShapePredictor:
    return ShapePredictor(PREDICTOR_PATH)


def test_the_bundled_file_is_the_converted_one() -> None:
    from safetensors import safe_open

    assert hashlib.sha256(PREDICTOR_PATH.read_bytes()).hexdigest() == PREDICTOR_SHA256
    with safe_open(str(PREDICTOR_PATH), framework="np") as f:
        assert f.metadata() == {"source": "shape_predictor_68_face_landmarks.dat",
                                "source_sha256": DLIB_SHA256}
        assert set(f.keys()) == set(LAYOUT)


def _cases(tmp_path: Path) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Images and face boxes: the bundled faces with their detected boxes, a small face in a
    wide frame, the same in grey, and boxes that are shifted, tiny, or partly outside."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    rng = np.random.default_rng(0)
    images = [load_rgb(p) for p in sorted((FACES_DIR).glob("*.jpg"))]
    images.append(load_rgb(make_image(tmp_path / "wide.png", stills(1, 7)[0], size=(640, 360))))
    cases = []
    for i, rgb in enumerate(images):
        boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in detector(rgb, 0)]
        if i % 8 == 0:
            h, w = rgb.shape[:2]
            boxes += [(-40, -30, w // 2, h // 2), (w // 3, h // 3, w + 50, h + 60),
                      (10, 10, 14, 13), tuple(int(v) for v in rng.integers(0, 200, 4))]
        for box in boxes:
            cases.append((rgb, box))
            if i % 4 == 0:
                cases.append((np.ascontiguousarray(rgb.mean(2).astype(np.uint8)), box))
    return cases


def test_points_equal_dlibs(predictor: ShapePredictor, tmp_path: Path) -> None:
    import dlib

    reference = dlib.shape_predictor(str(dlib_model()))
    cases = _cases(tmp_path)
    assert len(cases) >= 200
    for image, box in cases:
        want = np.array([[p.x, p.y] for p in reference(image, dlib.rectangle(*box)).parts()],
                        dtype=np.float32)
        np.testing.assert_array_equal(predictor(image, box), want, err_msg=str(box))


def test_conversion_reproduces_the_bundled_file() -> None:
    from safetensors.numpy import load_file

    source = dlib_model()
    assert hashlib.sha256(source.read_bytes()).hexdigest() == DLIB_SHA256
    got, bundled = read_dlib_predictor(source), load_file(str(PREDICTOR_PATH))
    assert set(got) == set(bundled)
    for name, array in got.items():
        assert array.dtype == bundled[name].dtype
        np.testing.assert_array_equal(array, bundled[name], err_msg=name)


def test_the_bundled_faces_keep_their_stored_landmarks() -> None:
    """Without dlib's file: the detector's points are the ones stored beside the bundled faces
    when they were computed with dlib's own predictor."""
    pytest.importorskip("dlib")
    detector = LandmarkDetector()
    paths = sorted(FACES_DIR.glob("*.jpg"))
    assert len(paths) == 160
    for path in paths:
        face = detector.largest(load_rgb(path))
        stored = np.load(FACES_DIR.parent / "landmarks" / f"{path.stem}.npy")
        np.testing.assert_array_equal(face.landmarks, stored, err_msg=path.name)


def test_damaged_files_are_refused(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    with pytest.raises(ShapePredictorError, match="missing"):
        ShapePredictor(tmp_path / "none.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(PREDICTOR_PATH.read_bytes()[:1000])
    with pytest.raises(ShapePredictorError, match="unreadable"):
        ShapePredictor(cut)
    arrays = load_file(str(PREDICTOR_PATH))
    for name, change in [("leaf_values", lambda a: a.astype(np.float16)),
                         ("anchor", lambda a: a + 100),
                         ("delta", lambda a: a[:, :-1])]:
        bad = tmp_path / f"{name}.safetensors"
        save_file({**arrays, name: np.ascontiguousarray(change(arrays[name]))}, str(bad))
        with pytest.raises(ShapePredictorError, match=str(bad)):
            ShapePredictor(bad)


def test_damaged_dlib_files_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x01\x02" + bytes(range(256)) * 4)
    with pytest.raises(ShapePredictorError, match="junk.dat"):
        read_dlib_predictor(junk)
    # version 1, then a 68-point shape cut off after its first number
    cut = tmp_path / "cut.dat"
    cut.write_bytes(bytes([1, 1, 0x81, 136, 0x81, 1, 1, 5, 1, 0]))
    with pytest.raises(ShapePredictorError, match="truncated"):
        read_dlib_predictor(cut)


def test_bad_images_get_a_clear_error(predictor: ShapePredictor) -> None:
    for image in (np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10, 3), np.float32),
                  np.zeros((10, 10, 4, 1), np.uint8)):
        with pytest.raises(ShapePredictorError, match="uint8 image"):
            predictor(image, (0, 0, 5, 5))
