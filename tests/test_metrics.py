"""Metrics agree with direct scikit-learn calls; one-class subsets give n/a."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score, roc_curve

from lorefd.metrics import NA, binary_metrics, equal_error_rate, report, video_level

y10 = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
p10 = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2, 0.9, 0.55, 0.45, 0.65])


def test_agrees_with_sklearn():
    m = binary_metrics(y10, p10)
    assert m["auc"] == pytest.approx(roc_auc_score(y10, p10))
    assert m["ap"] == pytest.approx(average_precision_score(y10, p10))
    assert m["acc"] == pytest.approx(accuracy_score(y10, p10 >= 0.5))
    fpr, tpr, _ = roc_curve(y10, p10)
    i = np.argmin(np.abs((1 - tpr) - fpr))
    assert m["eer"] == pytest.approx((fpr[i] + 1 - tpr[i]) / 2)
    assert (m["n"], m["n_real"], m["n_fake"]) == (10, 4, 6)


def test_best_threshold_is_the_best_accuracy_on_the_set():
    m = binary_metrics(y10, p10)
    brute = max(accuracy_score(y10, p10 >= t) for t in np.unique(p10))
    assert m["best_acc"] == pytest.approx(brute)
    assert accuracy_score(y10, p10 >= m["best_threshold"]) == pytest.approx(m["best_acc"])
    assert m["best_acc"] >= m["acc"]


def test_known_values():
    y = np.array([0, 0, 1, 1])
    perfect = binary_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert (perfect["auc"], perfect["eer"], perfect["acc"], perfect["ap"]) == (1.0, 0.0, 1.0, 1.0)
    inverted = binary_metrics(y, np.array([0.9, 0.8, 0.2, 0.1]))
    assert inverted["auc"] == 0.0 and inverted["eer"] == 1.0 and inverted["acc"] == 0.0
    assert equal_error_rate(y10, p10) == pytest.approx(binary_metrics(y10, p10)["eer"])


def test_single_class_is_na_not_a_crash():
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert m["acc"] == pytest.approx(2 / 3)
    assert m["auc"] == m["eer"] == m["ap"] == m["best_threshold"] == NA
    assert binary_metrics([], [])["acc"] == NA


def test_video_level_means_frames_per_group():
    vy, vp, keys = video_level([0, 0, 1, 1, 1], [0.2, 0.4, 0.9, 0.5, 0.6], ["a", "a", "b", "b", "c"])
    assert keys == ["a", "b", "c"]
    assert vy.tolist() == [0, 1, 1]
    assert vp.tolist() == pytest.approx([0.3, 0.7, 0.6])


def test_report_per_method_against_all_reals():
    y = [0, 0, 1, 1, 1, 1]
    p = [0.1, 0.6, 0.9, 0.8, 0.3, 0.2]
    methods = ["", "", "Deepfakes", "Deepfakes", "FaceSwap", "FaceSwap"]
    groups = ["r1", "r2", "d1", "d1", "f1", "f2"]
    r = report(y, p, groups, methods)
    df = r["per_method"]["Deepfakes"]
    assert df["frame"]["n"] == 4
    assert df["frame"]["auc"] == pytest.approx(roc_auc_score([0, 0, 1, 1], [0.1, 0.6, 0.9, 0.8]))
    assert df["video"]["n"] == 3  # r1, r2, d1
    fs = r["per_method"]["FaceSwap"]["frame"]
    assert fs["auc"] == pytest.approx(roc_auc_score([0, 0, 1, 1], [0.1, 0.6, 0.3, 0.2]))
    assert r["overall"]["video"]["n"] == 5


def test_one_best_threshold_function_labels_first() -> None:
    import lorefd.engines.train as train
    import lorefd.metrics as metrics
    from lorefd.metrics import best_threshold

    assert metrics.best_threshold is best_threshold and train.best_threshold is best_threshold
    assert not hasattr(train, "accuracy_threshold")
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.3, 0.8, 0.9, 0.7, 0.6])
    t, acc = best_threshold(y, p)  # (labels, probs), scikit-learn's order
    assert (t, acc) == (pytest.approx(0.75), pytest.approx(5 / 6))
    assert accuracy_score(y, p >= t) == pytest.approx(acc)
    assert train.validation_metrics(p, y)["threshold"] == pytest.approx(t)
    assert metrics.binary_metrics(y, p)["best_threshold"] == pytest.approx(t)
