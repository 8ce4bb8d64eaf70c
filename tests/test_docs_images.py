"""The pictures in docs/ that show the shipped model show what it says today.

``scripts/docs_images.py`` (``make docs-images``) makes them and records in docs/img/shown.json
the model's digest, its threshold, each picture's sha256 and every input shown with its score.
Here that record is checked against the files and the shipped model: the inputs are made again
and scored, so a new model, a changed threshold or a picture edited by hand fails until the
script is run again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from serve_helpers import bundled_fake, bundled_real

import lorefd
from lorefd.models.bundle import SHIPPED_MANIFEST_SHA256, read_bundle_header, shipped_bundle

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "img" / "shown.json"


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(RECORD.read_text())


def _input(entry: dict, tmp: Path) -> Path:
    """The input a picture shows, made as the script made it."""
    if "bundled" in entry:
        return bundled_real(entry["bundled"])
    return bundled_fake(tmp / entry["name"], entry["swap"]["target"], entry["swap"]["donor"])


def test_pictures_are_of_the_shipped_model(record: dict) -> None:
    assert record["model_sha256"] == SHIPPED_MANIFEST_SHA256, \
        "docs pictures show another model: run `make docs-images`"
    assert record["threshold"] == read_bundle_header(shipped_bundle())["threshold"]["value"]
    for name, picture in record["images"].items():
        path = ROOT / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == picture["sha256"], \
            f"{name} is not the picture the script made: run `make docs-images`"
    # the serve page's cards say the numbers the record holds
    serve = record["images"]["docs/serve.png"]
    for card, entry in zip(sorted(serve["cards"], key=lambda c: c["name"]),
                           sorted(serve["shows"], key=lambda e: e["name"]), strict=True):
        assert card["name"] == entry["name"]
        assert f"P(fake) {entry['p_fake']:.3f}" in card["text"], card
        assert f"probably {entry['verdict'].upper()}" in card["text"], card


def test_shown_scores_are_the_models(record: dict, tmp_path: Path) -> None:
    entries = {e["name"]: e for p in record["images"].values() for e in p["shows"]}
    paths = {name: _input(e, tmp_path) for name, e in entries.items()}
    report = lorefd.detect(list(paths.values()))
    by_path = {r["path"]: r for r in report["results"]}
    for name, path in paths.items():
        got = by_path[str(path)]
        assert got["p_fake"] == pytest.approx(entries[name]["p_fake"], abs=1e-3), name
        assert got["verdict"] == entries[name]["verdict"], name
