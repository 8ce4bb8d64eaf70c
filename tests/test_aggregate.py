"""Frame aggregation for video scores, and H.264 as the training compression step."""

from __future__ import annotations

import numpy as np
import pytest

from lorefd.aggregate import COMPARED, aggregate, check_spec
from lorefd.data.synth.augment import random_jpeg
from lorefd.data.synth.dataset import compress
from lorefd.metrics import report, video_level


def test_rules_on_known_scores():
    s = [0.1, 0.2, 0.3, 0.4, 0.9, 0.5, 0.6, 0.7]
    assert aggregate(s, "mean") == pytest.approx(0.4625)
    assert aggregate(s, "median") == pytest.approx(0.45)
    assert aggregate(s, "max") == pytest.approx(0.9)
    assert aggregate(s, "top25") == pytest.approx((0.9 + 0.7) / 2)  # 2 of 8 frames
    assert aggregate(s, "top1") == pytest.approx(0.9)  # at least one frame
    assert aggregate(s, "q50") == pytest.approx(0.45)
    assert aggregate(s, "q100") == pytest.approx(0.9)
    assert np.isnan(aggregate([], "mean"))
    for bad in ("avg", "top0", "q101", "top", ""):
        with pytest.raises(ValueError, match="unknown frame aggregation"):
            check_spec(bad)


def test_video_level_and_report_use_the_rule():
    # video a: one strongly fake frame among low ones; video b: uniformly middling
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    probs = [0.05, 0.05, 0.05, 0.95, 0.3, 0.3, 0.3, 0.3]
    groups = ["a"] * 4 + ["b"] * 4
    _, default, keys = video_level(labels, probs, groups)
    _, mean, _ = video_level(labels, probs, groups, "mean")
    _, top, _ = video_level(labels, probs, groups, "max")
    assert keys == ["a", "b"]
    assert default.tolist() == pytest.approx([0.05, 0.3])  # the median, the default rule
    assert mean.tolist() == pytest.approx([0.275, 0.3]) and top.tolist() == pytest.approx([0.95, 0.3])
    r = report(labels, probs, groups, ["m"] * 4 + [""] * 4, rule="max")
    assert r["overall"]["video"]["aggregate"] == "max"
    assert set(r["aggregations"]) == set(COMPARED)
    assert r["aggregations"]["max"]["auc"] == 1.0 and r["aggregations"]["mean"]["auc"] == 0.0


def test_h264_training_compression_keeps_shape_and_changes_pixels():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48] = (200, 120, 90)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    out = compress(img, np.random.default_rng(1), None, h264_ratio=1.0, h264_crf=[40, 40])
    assert out.shape == img.shape and out.dtype == np.uint8
    assert 0 < np.abs(out.astype(int) - img).mean() < 30  # compressed, still the same picture
    # ratio 0: exactly the JPEG step of before, the same random draws
    a = compress(img, np.random.default_rng(2), [60, 90], h264_ratio=0.0)
    b, _ = random_jpeg(img, np.random.default_rng(2), [60, 90])
    assert np.array_equal(a, b)
