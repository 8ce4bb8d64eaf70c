"""Forgery synthesis: labels, masks inside the face hull, changes only under the mask, seeds."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lorefd.cli import main
from lorefd.data.images import load_rgb
from lorefd.data.manifest import FAKE, Sample, load_samples, read_manifest
from lorefd.data.synth import HULL_TOLERANCE, KINDS, SynthError, synthesize
from lorefd.data.synth.dataset import SynthDataset
from lorefd.data.synth.local import local_forgery
from lorefd.data.synth.masks import face_size
from lorefd.data.synth.swap import face_swap

SEEDS = range(6)


@pytest.fixture(scope="module")
def faces(faces_manifest) -> list[tuple[np.ndarray, np.ndarray, str]]:
    samples = load_samples(faces_manifest)[:12]
    return [(load_rgb(s.path), s.load_landmarks(), s.group) for s in samples]


def hull_allowed(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The 68-point hull dilated by the documented tolerance (plus one pixel of rounding)."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1)
    reach = HULL_TOLERANCE * face_size(landmarks) + 1
    dist = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 5)
    return dist <= reach


def check_fake(result, real: np.ndarray, landmarks: np.ndarray) -> None:
    assert result.label == 1
    assert result.image.shape == real.shape and result.image.dtype == np.uint8
    m = result.mask
    assert m.shape == real.shape[:2] and m.dtype == np.float32
    assert m.min() >= 0.0 and m.max() <= 1.0
    assert m.max() > 0.2, "empty mask"
    # The mask stays inside the face hull (dilated by HULL_TOLERANCE * face size).
    assert not (m > 0)[~hull_allowed(landmarks, real.shape)].any(), "mask outside face hull"
    # Pixels change only where the blend weight is non-zero ...
    changed = np.abs(result.image.astype(int) - real.astype(int)).max(2) > 0
    assert not changed[m == 0].any(), "pixels changed outside the mask"
    # ... and the forgery is visible where the weight is high.
    assert changed[m >= 0.5 * m.max()].mean() > 0.3


@pytest.mark.parametrize("kind", KINDS)
def test_synthesiser_contract(kind, faces):
    for seed in SEEDS:
        image, lm, _ = faces[seed]
        donor = faces[seed + 6][:2]
        result = synthesize(kind, image, lm, np.random.default_rng(seed), donor=donor)
        assert result.kind == kind
        check_fake(result, image, lm)


@pytest.mark.parametrize("method", ["feather", "poisson"])
def test_swap_blend_methods(method, faces):
    image, lm, _ = faces[0]
    donor, dlm, _ = faces[1]
    result = face_swap(image, lm, donor, dlm, np.random.default_rng(3), method=method)
    assert result.meta["method"] == method
    check_fake(result, image, lm)


@pytest.mark.parametrize("region", ["eyes", "left_eye", "right_eye", "nose", "mouth"])
@pytest.mark.parametrize("mode", ["blend", "swap"])
def test_local_regions(region, mode, faces):
    image, lm, _ = faces[2]
    result = local_forgery(image, lm, np.random.default_rng(1), donor=faces[3][:2],
                           region=region, mode=mode)
    check_fake(result, image, lm)
    # Local means local: well under the whole face.
    hull = hull_allowed(lm, image.shape)
    assert (result.mask > 0.5).sum() < 0.35 * hull.sum()


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_fake(kind, faces):
    image, lm, _ = faces[4]
    donor = faces[5][:2]
    a = synthesize(kind, image, lm, np.random.default_rng(7), donor=donor)
    b = synthesize(kind, image, lm, np.random.default_rng(7), donor=donor)
    c = synthesize(kind, image, lm, np.random.default_rng(8), donor=donor)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.meta == b.meta
    assert not np.array_equal(a.image, c.image)


def test_jpeg_is_a_separate_global_step(faces):
    image, lm, _ = faces[0]
    plain = synthesize("sbi", image, lm, np.random.default_rng(0))
    compressed = synthesize("sbi", image, lm, np.random.default_rng(0), jpeg=70)
    assert compressed.meta["jpeg"] == 70
    changed = np.abs(compressed.image.astype(int) - image.astype(int)).max(2) > 0
    assert changed[plain.mask == 0].any()  # JPEG touches the background too


def test_bad_input_raises_synth_error(faces):
    image, lm, _ = faces[0]
    rng = np.random.default_rng(0)
    with pytest.raises(SynthError):
        synthesize("sbi", image, None, rng)
    with pytest.raises(SynthError):
        synthesize("sbi", image, lm[:10], rng)
    with pytest.raises(SynthError):
        synthesize("sbi", image, np.full((68, 2), 100.0, np.float32), rng)  # degenerate hull
    with pytest.raises(SynthError):
        synthesize("sbi", image, lm + 1000.0, rng)  # outside the image
    with pytest.raises(SynthError):
        synthesize("sbi", image, np.where(np.arange(68)[:, None] == 3, np.nan, lm), rng)
    with pytest.raises(SynthError):
        synthesize("swap", image, lm, rng)  # no donor
    with pytest.raises(SynthError):
        synthesize("swap", image, lm, rng, donor=(image.copy(), lm.copy()))  # itself
    with pytest.raises(SynthError):
        synthesize("nope", image, lm, rng)


def test_dataset_epochs_and_identities(faces_manifest):
    samples = load_samples(faces_manifest)[:8]
    # Two crops per identity: donors must still come from another identity.
    samples = [Sample(**{**s.__dict__, "video_id": f"id{i // 2}"}) for i, s in enumerate(samples)]
    ds = SynthDataset(samples, kinds=["swap", "local"], weights=[3, 1], seed=5,
                      image_size=128)
    assert len(ds) == 8
    items = [ds[i] for i in range(len(ds))]
    for it in items:
        assert it["label"].item() == 1
        assert it["image"].shape == (3, 128, 128) and it["mask"].shape == (1, 128, 128)
        assert it["image"].min() >= 0.0 and it["image"].max() <= 1.0
        assert it["mask"].max() > 0
        if it["donor"] >= 0:
            assert ds.samples[it["donor"]].group != ds.samples[it["index"]].group
    assert any(it["kind"] == "swap" for it in items)
    again = ds[3]
    assert np.array_equal(again["image"].numpy(), items[3]["image"].numpy())
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 128, 128) and len(batch["kind"]) == 4
    assert torch.equal(batch["image"][3], items[3]["image"])
    ds.set_epoch(1)
    assert not np.array_equal(ds[3]["image"].numpy(), items[3]["image"].numpy())
    ds.set_epoch(0)
    assert np.array_equal(ds[3]["image"].numpy(), items[3]["image"].numpy())
    for i in range(len(ds)):  # many donor draws, never the same identity
        for _ in range(5):
            d = ds.donors.pick(i, np.random.default_rng(i * 10 + _))
            assert ds.donors.ids[d] != ds.donors.ids[i]


def test_dataset_mixes_reals_and_skips_bad_samples(faces_manifest, tmp_path):
    samples = load_samples(faces_manifest)[:6]
    broken = Sample(path=str(tmp_path / "missing.jpg"), landmarks=samples[0].landmarks,
                    video_id="broken")
    no_lm = Sample(path=samples[1].path, video_id="nolm")
    ds = SynthDataset([broken, no_lm, *samples], kinds=["sbi"], fake_ratio=0.5,
                      jpeg_quality=[60, 100], seed=1)
    assert len(ds) == 7  # the one without landmarks is dropped up front
    labels = [ds[i]["label"].item() for i in range(len(ds))]  # the missing file is skipped
    assert set(labels) == {0, 1}
    for i in range(len(ds)):
        it = ds[i]
        assert (it["mask"].max() > 0) == (it["label"].item() == 1)
        assert it["kind"] in ("real", "sbi")


def test_cli_writes_fakes_masks_and_manifest(faces_manifest, tmp_path):
    out = tmp_path / "synth"
    rc = main(["synth", str(faces_manifest), "--out", str(out), "--limit", "6",
               "--per-image", "2", "--seed", "3", "--reals-mode", "ref"])
    assert rc == 0
    rows = read_manifest(out / "manifest.csv")
    fakes = [r for r in rows if r.label == FAKE]
    assert len(fakes) == 12 and len(rows) == 18
    assert {r.method for r in fakes} == set(KINDS)
    for r in fakes:
        img = load_rgb(r.path)
        assert img.shape == (256, 256, 3)
        assert np.load(r.landmarks).shape == (68, 2)
        mask_path = out / "masks" / r.method / (r.path.rsplit("/", 1)[1])
        assert cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE).max() > 0
        assert r.target_id
        if r.method == "swap":
            assert r.source_id and r.source_id != r.target_id
    # Same seed, same files.
    out2 = tmp_path / "synth2"
    assert main(["synth", str(faces_manifest), "--out", str(out2), "--limit", "6",
                 "--per-image", "2", "--seed", "3"]) == 0
    with open(out2 / "manifest.csv") as fh:
        first = next(csv.DictReader(fh))["path"]
    assert (out / first).read_bytes() == (out2 / first).read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_face_cut_by_the_image_border(kind, faces):
    """A face partly outside the image still gives a valid fake (or a SynthError, not a crash)."""
    image, lm, _ = faces[0]
    shifted = lm + np.array([-100.0, 0.0], np.float32)  # about a third of the points outside
    for seed in range(3):
        result = synthesize(kind, image, shifted, np.random.default_rng(seed), donor=faces[1][:2])
        changed = np.abs(result.image.astype(int) - image.astype(int)).max(2) > 0
        assert not changed[result.mask == 0].any()
        assert result.mask.max() > 0


def test_dataset_same_items_in_dataloader_workers(faces_manifest):
    from lorefd.config import SynthConfig

    ds = SynthDataset.from_config(load_samples(faces_manifest)[:6], SynthConfig(), seed=2,
                                  image_size=64)
    assert ds.fake_ratio == SynthConfig().fake_ratio and ds.jpeg_quality == [60, 100]
    ds.set_epoch(3)
    direct = torch.stack([ds[i]["image"] for i in range(len(ds))])
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    assert torch.equal(torch.cat([b["image"] for b in loader]), direct)


def test_cli_clear_errors(faces_manifest, tmp_path, capsys):
    folder = tmp_path / "plain" / "real"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes((faces_manifest.parent / "real" / "00161.jpg").read_bytes())
    for args, said in [([str(tmp_path / "plain")], "detect-landmarks"),
                       ([str(faces_manifest), "--kinds", "x"], "unknown kind"),
                       ([str(tmp_path / "missing")], "no such manifest")]:
        assert main(["synth", *args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err


def test_similarity_jitter_moves_image_mask_and_landmarks_together():
    """``data.jitter``: a bright dot drawn at a landmark ends where the moved landmark says;
    the mask moves with the image; amount 0 changes nothing."""
    import torch

    from lorefd.data.synth.dataset import similarity_jitter

    size = 64
    pts = torch.tensor([[0.30, 0.40], [0.65, 0.55]])
    image = torch.zeros(3, size, size)
    for x, y in pts.tolist():
        image[:, int(y * size), int(x * size)] = 1.0
    image = torch.nn.functional.avg_pool2d(image[None], 3, 1, 1)[0]  # a 3x3 blob, not a pixel
    mask = (image[:1] > 0).float()
    for seed in range(5):
        moved, moved_mask, moved_pts = similarity_jitter(image, mask, pts, 0.1,
                                                         np.random.default_rng(seed))
        assert moved.shape == image.shape and moved_mask.shape == mask.shape
        assert not torch.allclose(moved, image)
        for (x, y) in moved_pts.tolist():  # the blob's centre lies within 1.5 px of the point
            px, py = x * size - 0.5, y * size - 0.5
            ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
            near = ((xs - px) ** 2 + (ys - py) ** 2) < 9
            w = moved[0] * near
            cx, cy = float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())
            assert abs(cx - px) < 1.5 and abs(cy - py) < 1.5
        assert torch.equal(moved_mask > 0.01, moved[:1] > 0.01 / 9)  # the mask moved alike
    same = similarity_jitter(image, mask, pts, 0.0, np.random.default_rng(0))
    torch.testing.assert_close(same[0], image, atol=1e-5, rtol=0)
    torch.testing.assert_close(same[2], pts, atol=1e-6, rtol=0)
