"""`lorefd demo --quick` end to end, and training on synthesised fakes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lorefd.apps.common import split_by_identity
from lorefd.config import load_config
from lorefd.data.manifest import FAKE, REAL, load_samples
from lorefd.engines.train import build_train_dataset, dataset_labels


def test_split_by_identity_is_disjoint_and_deterministic(faces_manifest):
    samples = load_samples(faces_manifest)
    a = split_by_identity(samples, val=0.125, test=0.25, seed=0)
    groups = {k: {s.group for s in v} for k, v in a.items()}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
    assert sum(len(v) for v in a.values()) == len(samples)
    assert all(len(v) > 0 for v in a.values())
    b = split_by_identity(load_samples(faces_manifest), val=0.125, test=0.25, seed=0)
    assert [s.path for s in a["test"]] == [s.path for s in b["test"]]


@pytest.mark.parametrize("mode", ["synth", "both"])
def test_train_dataset_with_synthesised_fakes(faces_manifest, mode):
    samples = load_samples(faces_manifest)[:12]
    if mode == "both":  # pretend a few manifest rows are fakes
        for s in samples[:3]:
            s.label = FAKE
    cfg = load_config("tiny", [f"train.fakes={mode}"])
    ds = build_train_dataset(cfg, samples)
    ds.set_epoch(0)
    batch = next(iter(DataLoader(ds, batch_size=len(ds), shuffle=False)))
    assert batch["image"].shape[1:] == (3, 64, 64)
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    labels = set(batch["label"].tolist())
    assert labels == {float(REAL), float(FAKE)}, labels
    assert batch["landmarks"].max() <= 1.5  # normalised, like FaceDataset
    if mode == "both":
        assert dataset_labels(ds).count(FAKE) == 3 + (len(samples) - 3)
    else:
        assert dataset_labels(ds) is None  # labels are drawn per item
    ds.set_epoch(1)
    again = next(iter(DataLoader(ds, batch_size=len(ds), shuffle=False)))
    assert not torch.equal(again["image"], batch["image"])  # new fakes every epoch


def test_demo_quick_writes_a_report_with_measured_numbers(tmp_path):
    from lorefd.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in ("lre", "baseline"):
        frame = summary["metrics"][name]["overall"]["frame"]
        assert 0.0 <= frame["auc"] <= 1.0 and 0.0 <= frame["acc"] <= 1.0
        assert (out / name / "best" / "model.safetensors").is_file()
    assert summary["seconds"] > 0 and set(summary["identities"]) == {"train", "val", "test"}
    md = (out / "report.md").read_text()
    auc = summary["metrics"]["lre"]["overall"]["frame"]["auc"]
    assert f"{auc:.3f}" in md  # the report shows the measured number
    assert re.search(r"\| LRE .*\| \d\.\d{3} [\[(]", md)
    assert "(**right**)" in md or "(**wrong**)" in md  # captions say whether detect was right
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "<img src='figures" not in page
    assert (out / "model.lorefd").is_file()
    heatmaps = [r["heatmap"] for r in summary["detect"]["results"] if r.get("heatmap")]
    assert heatmaps
    _a_person_reads_the_report(out / "report.html")
    # a second run into the same folder is refused instead of mixing two runs
    assert main(["demo", "--quick", "--out", str(out)]) == 2


def _a_person_reads_the_report(page: Path) -> None:
    """In a real browser (when chromium is installed): no literal Markdown, every image loaded
    with a non-empty alt text, the detect examples' verdicts visible."""
    import shutil

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--window-size=1100,1400"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=webdriver.ChromeService(shutil.which("chromedriver")),
                              options=opts)
    try:
        driver.get(page.resolve().as_uri())
        text = driver.find_element("tag name", "body").text
        assert "**" not in text and "`" not in text
        assert driver.execute_script("return document.images.length > 3 && [...document.images]"
                                     ".every(i => i.complete && i.naturalWidth > 0 && i.alt.trim())")
        assert "→ fake" in text or "→ real" in text
    finally:
        driver.quit()
