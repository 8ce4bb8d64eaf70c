"""Preprocessing pieces without video decoding: sampling, alignment, adapters, naming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lorefd.data.preprocess.adapters import index_dataset, load_ffpp_splits
from lorefd.data.preprocess.align import (
    align_face,
    box_matrix,
    five_point_template,
    similarity_transform,
    transform_points,
)
from lorefd.data.preprocess.frames import sample_indices
from lorefd.data.preprocess.runner import safe_relpath


def test_sample_indices_even_every_and_short():
    idx = sample_indices(300, frames=32)
    assert len(idx) == 32 and idx == sorted(set(idx))
    assert idx[0] > 0 and idx[-1] < 299
    gaps = np.diff(idx)
    assert gaps.min() >= 9 and gaps.max() <= 10
    assert sample_indices(10, frames=32) == list(range(10))
    assert sample_indices(10, every=4) == [0, 4, 8]
    assert sample_indices(0, frames=32) == []


def test_similarity_transform_recovers_known_motion():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-6)
    np.testing.assert_allclose(transform_points(src, m), dst, atol=1e-3)


def test_template_margin_and_size():
    tight = five_point_template(112, margin=0.0)
    np.testing.assert_allclose(tight[0], [38.2946, 51.6963], atol=1e-3)
    loose = five_point_template(224, margin=0.25)
    assert np.all(loose > 0) and np.all(loose < 224)
    # a margin shrinks the face around the crop centre
    assert np.ptp(loose[:, 0]) < np.ptp(five_point_template(224, 0.0)[:, 0])


def test_align_face_maps_template_points(faces_manifest: Path):
    from lorefd.data.images import load_rgb
    from lorefd.data.landmarks import five_points

    folder = faces_manifest.parent
    rgb = load_rgb(folder / "real" / "00161.jpg")
    lm = np.load(folder / "landmarks" / "00161.npy")
    crop, pts, m = align_face(rgb, lm, size=160, margin=0.25)
    assert crop.shape == (160, 160, 3) and pts.shape == (68, 2)
    err = np.abs(five_points(pts)[:2] - five_point_template(160, 0.25)[:2]).max()
    assert err < 5.0


def test_box_crop_keeps_roll_and_frames_the_landmarks_box(faces_manifest: Path):
    from lorefd.data.images import load_rgb

    folder = faces_manifest.parent
    rgb = load_rgb(folder / "real" / "00161.jpg")
    lm = np.load(folder / "landmarks" / "00161.npy")
    crop, pts, m = align_face(rgb, lm, size=128, margin=0.25, crop="box")
    assert crop.shape == (128, 128, 3)
    assert m[0, 1] == 0.0 and m[1, 0] == 0.0  # axis-aligned: no rotation
    # the box's sides land margin / (1 + 2 margin) in from the left and right, and the chin
    # margin / (1 + 3 margin) up from the bottom (twice the margin above, for the forehead)
    np.testing.assert_allclose([pts[:, 0].min(), 128 - pts[:, 0].max()], [128 * 0.25 / 1.5] * 2,
                               atol=1e-3)
    np.testing.assert_allclose([pts[:, 1].min(), 128 - pts[:, 1].max()],
                               [128 * 0.5 / 1.75, 128 * 0.25 / 1.75], atol=1e-3)
    # a rolled face stays rolled: the eye line keeps its angle in a box crop
    angle = 0.3
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rolled = (lm - lm.mean(0)) @ rot.T + lm.mean(0)
    box = transform_points(rolled, box_matrix(rolled, 128, 0.25))
    eyes = box[45] - box[36]
    assert abs(np.arctan2(eyes[1], eyes[0])) > 0.15
    tmpl = align_face(rgb, rolled, 128, 0.1)[1]
    eyes = tmpl[45] - tmpl[36]
    assert abs(np.arctan2(eyes[1], eyes[0])) < 0.1
    with pytest.raises(ValueError, match="crop mode"):
        align_face(rgb, lm, 128, 0.25, crop="oval")


def test_crop_mode_is_part_of_the_crops_contract() -> None:
    from lorefd.data.manifest import crop_mismatches
    from lorefd.data.preprocess.runner import PreprocessOptions

    template, box = PreprocessOptions(size=128, margin=0.25), PreprocessOptions(
        size=128, margin=0.25, crop="box")
    assert "crop" not in template.fingerprint()  # crops made before crop modes stay valid
    assert box.fingerprint() != template.fingerprint()
    assert "-box-" in box.cache_name() and "-box-" not in template.cache_name()
    assert PreprocessOptions.for_model({"face_detector": "dlib", "size": 128, "margin": 0.25,
                                        "crop": "box"}).crop == "box"
    model = {"size": 128, "margin": 0.25, "face_detector": "dlib", "crop": "box"}
    errors, _ = crop_mismatches({"size": 128, "margin": 0.25, "face_detector": "dlib"}, model)
    assert errors == ["crop mode template (the model's: box)"]
    assert crop_mismatches({**model}, model) == ([], [])
    errors, warnings = crop_mismatches({"size": 128}, model)  # only the side is known
    assert not errors and any("crop mode is unknown" in w for w in warnings)


def test_detect_crops_as_the_bundle_records(faces_manifest: Path):
    """``detect``/``serve`` crop with the bundle's crop mode: a box model gets box crops."""
    from lorefd.data.images import load_rgb, resize_square, to_chw
    from lorefd.data.landmarks import Face
    from lorefd.data.preprocess.crops import FacePipeline

    folder = faces_manifest.parent
    rgb = load_rgb(folder / "real" / "00161.jpg")
    face = Face(box=(0.0, 0.0, 10.0, 10.0), score=1.0,
                landmarks=np.load(folder / "landmarks" / "00161.npy"))
    pre = {"face_detector": "dlib", "size": 128, "margin": 0.25, "detect_side": 640,
           "track_face_side": 100, "frames": 8}
    for mode in ("template", "box"):
        pipe = FacePipeline.from_preprocess({**pre, "crop": mode}, image_size=96)
        want, _, matrix = align_face(rgb, face.landmarks, 128, 0.25, crop=mode)
        got = pipe.crop(rgb, face)
        np.testing.assert_array_equal(got.image, to_chw(resize_square(want, 96)))
        np.testing.assert_allclose(got.matrix, matrix)
    assert FacePipeline.from_preprocess(pre, image_size=96).crop_mode == "template"


def _touch(root: Path, rel: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


@pytest.fixture()
def ffpp_names(tmp_path: Path) -> Path:
    splits = load_ffpp_splits()
    (a, b), (c, d) = splits["train"][0], splits["test"][0]
    for vid in (a, b, c):
        _touch(tmp_path, f"original_sequences/youtube/c23/videos/{vid}.mp4")
    _touch(tmp_path, f"original_sequences/youtube/raw/videos/{a}.mp4")
    _touch(tmp_path, f"manipulated_sequences/Deepfakes/c23/videos/{a}_{b}.mp4")
    _touch(tmp_path, f"manipulated_sequences/Deepfakes/c23/videos/{b}_{a}.mp4")
    _touch(tmp_path, f"manipulated_sequences/FaceSwap/c23/videos/{c}_{d}.mp4")
    _touch(tmp_path, "manipulated_sequences/FaceSwap/c23/masks/videos/ignored.mp4")
    _touch(tmp_path, "original_sequences/actors/c23/videos/01__talking.mp4")
    _touch(tmp_path, "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__talking__AB12.mp4")
    return tmp_path


def test_ffpp_adapter_labels_splits_ids(ffpp_names: Path):
    splits = load_ffpp_splits()
    (a, b), (c, d) = splits["train"][0], splits["test"][0]
    index = index_dataset("ffpp", ffpp_names, compressions=["c23"])
    by_id = {i.video_id.split("/")[-1]: i for i in index.items}
    assert set(by_id) == {a, b, c, f"{a}_{b}", f"{b}_{a}", f"{c}_{d}"}
    assert by_id[f"{a}_{b}"].split == by_id[f"{b}_{a}"].split == "train"
    assert by_id[f"{c}_{d}"].split == "test" and by_id[c].split == "test"
    fake = by_id[f"{a}_{b}"]
    assert (fake.label, fake.method, fake.compression, fake.target_id, fake.source_id) == (
        1, "Deepfakes", "c23", a, b)
    assert by_id[a].label == 0 and by_id[a].method == ""
    assert "manipulated_sequences/Face2Face/c23" in index.missing
    # default: every compression present (raw is called c0)
    comps = {i.compression for i in index_dataset("ffpp", ffpp_names).items}
    assert comps == {"c0", "c23"}
    raw = index_dataset("ffpp", ffpp_names, compressions=["raw"]).items
    assert len(raw) == 1 and raw[0].compression == "c0"
    test_only = index_dataset("ffpp", ffpp_names, split="test", compressions=["c23"])
    assert {i.split for i in test_only.items} == {"test"} and len(test_only.items) == 2
    # a missing compression is reported, not fatal
    assert index_dataset("ffpp", ffpp_names, compressions=["c40"]).items == []


def test_dfd_adapter(ffpp_names: Path):
    index = index_dataset("dfd", ffpp_names)
    assert len(index.items) == 2
    fake = next(i for i in index.items if i.label == 1)
    assert (fake.method, fake.target_id, fake.source_id, fake.split) == (
        "DeepFakeDetection", "01", "02", "test")


def test_celebdf_adapter(tmp_path: Path):
    _touch(tmp_path, "Celeb-real/id0_0000.mp4")
    _touch(tmp_path, "Celeb-real/id1_0001.mp4")
    _touch(tmp_path, "YouTube-real/00000.mp4")
    _touch(tmp_path, "Celeb-synthesis/id0_id1_0000.mp4")
    (tmp_path / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n")
    index = index_dataset("celebdf", tmp_path)
    by_id = {i.video_id: i for i in index.items}
    assert by_id["YouTube-real/00000"].split == "test"
    assert by_id["Celeb-real/id0_0000"].split == "train"
    fake = by_id["Celeb-synthesis/id0_id1_0000"]
    assert (fake.label, fake.split, fake.target_id, fake.source_id) == (1, "test", "id0", "id1")
    (tmp_path / "List_of_testing_videos.txt").unlink()
    index = index_dataset("celebdf", tmp_path)
    assert {i.split for i in index.items} == {"train"} and index.missing


def test_folder_adapter_any_depth(tmp_path: Path):
    _touch(tmp_path, "train/real/a/x.png")
    _touch(tmp_path, "val/real/y.mp4")
    _touch(tmp_path, "test/fake/Deepfakes/z.mp4")
    _touch(tmp_path, "fake/w.jpg")
    _touch(tmp_path, "other/ignored.png")
    _touch(tmp_path, "real/notes.txt")
    index = index_dataset("folder", tmp_path)
    by_id = {i.video_id: i for i in index.items}
    assert set(by_id) == {"train/real/a/x", "val/real/y", "test/fake/Deepfakes/z", "fake/w"}
    assert by_id["train/real/a/x"].split == "train" and by_id["train/real/a/x"].label == 0
    assert by_id["test/fake/Deepfakes/z"].method == "Deepfakes"
    assert by_id["fake/w"].label == 1 and by_id["fake/w"].split == ""
    assert [i.video_id for i in index_dataset("folder", tmp_path, split="val").items] == [
        "val/real/y"]
    _touch(tmp_path, "val/real/y.avi")  # same stem, another container: ids stay unique
    ids = [i.video_id for i in index_dataset("folder", tmp_path, split="val").items]
    assert sorted(ids) == ["val/real/y.avi", "val/real/y.mp4"]


def test_missing_root_and_unknown_layout(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        index_dataset("ffpp", tmp_path / "nope")
    with pytest.raises(ValueError):
        index_dataset("dfdc", tmp_path)
    assert index_dataset("ffpp", tmp_path).missing  # empty root: reported, no crash


def test_safe_relpath_odd_names():
    assert safe_relpath("a/b/000_003") == Path("a/b/000_003")
    odd = safe_relpath("real/odd 'näme' #1 (copy)")
    assert odd.parts[0] == "real" and all(c.isascii() for c in str(odd))
    assert safe_relpath("real/a b") != safe_relpath("real/a_b")
    assert ".." not in safe_relpath("../x").parts


def test_retinaface_backend_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from lorefd.data.landmarks import LandmarkBackendError
    from lorefd.data.preprocess import retinaface

    with pytest.raises(LandmarkBackendError, match="not found"):
        retinaface.resolve_weights(tmp_path / "missing.pth")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    monkeypatch.setenv(retinaface.ENV_WEIGHTS, str(weights))
    assert retinaface.resolve_weights() == weights
    try:
        import facexlib  # noqa: F401
    except ImportError:
        with pytest.raises(LandmarkBackendError, match="facexlib"):
            retinaface.RetinaFaceBackend()


def test_cli_retinaface_without_backend_exits_2(tmp_path: Path):
    pytest.importorskip("dlib")
    try:
        import facexlib  # noqa: F401
        pytest.skip("facexlib installed")
    except ImportError:
        pass
    from lorefd.cli import main

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x.png").write_bytes(b"x")
    assert main(["preprocess", "folder", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--detector", "retinaface", "--no-progress"]) == 2


def test_finder_small_face_in_large_frame_and_tracking():
    """A face too small for the 640-px detection copy is found by the retry; later frames are
    found through the tracked region."""
    pytest.importorskip("dlib")
    from media import render_frames, stills

    from lorefd.data.preprocess.faces import FaceFinder, make_backend

    frames = render_frames(stills(1, 4), 3, (1920, 1080), motion=True, face_frac=0.16)
    finder = FaceFinder(make_backend("dlib"), detect_side=640)
    found = [finder.find(f) for f in frames]
    assert all(face is not None for face, _ in found)
    assert [n for _, n in found][1:] == [1, 1]  # tracked, no full-frame pass
    assert FaceFinder(make_backend("dlib"), detect_side=640, track_face_side=0).find(
        frames[0])[0] is not None
