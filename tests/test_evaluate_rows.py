"""`lorefd evaluate` scores each row with its own image: unreadable rows are excluded, listed."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
from conftest import make_detector_checkpoint

from lorefd.cli import main
from lorefd.data.manifest import FAKE, REAL, read_manifest, write_manifest
from lorefd.evaluation.evaluate import evaluate


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_detector_checkpoint(tmp_path_factory.mktemp("evalrows"), name="xception",
                                    sub="xception")


def _manifest_with_corrupt_rows(faces_manifest: Path, folder: Path) -> tuple[Path, list[str]]:
    good = [dataclasses.replace(s, label=REAL if i % 2 else FAKE, method="" if i % 2 else "sbi")
            for i, s in enumerate(read_manifest(faces_manifest)[:16])]
    bad = []
    for i in range(4):
        f = folder / f"corrupt_{i}.png"
        f.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # PNG magic, then garbage
        bad.append(dataclasses.replace(good[i], path=str(f), landmarks="", video_id=f"bad{i}"))
    rows = good[:5] + bad[:2] + good[5:] + bad[2:]  # bad rows among the good ones
    write_manifest(folder / "manifest.csv", rows)
    return folder / "manifest.csv", [b.path for b in bad]


def test_unreadable_rows_are_excluded_from_every_metric_and_listed(
        baseline: Path, faces_manifest: Path, tmp_path: Path) -> None:
    manifest, bad = _manifest_with_corrupt_rows(faces_manifest, tmp_path)
    out = tmp_path / "eval"
    m = evaluate(baseline, read_manifest(manifest), out, batch_size=8)
    assert m["overall"]["frame"]["n"] == 16 and m["scored"] == 16 and m["rows"] == 20
    assert sum(r["n"] for r in [m["overall"]["frame"]]) == 16
    assert sorted(e["path"] for e in m["excluded"]) == sorted(bad)
    assert all(e["reason"] for e in m["excluded"])
    with open(out / "predictions.csv") as fh:
        preds = list(csv.DictReader(fh))
    assert len(preds) == 16 and not {p["path"] for p in preds} & set(bad)
    with open(out / "excluded.csv") as fh:
        assert sorted(r["path"] for r in csv.DictReader(fh)) == sorted(bad)
    json.loads((out / "metrics.json").read_text())  # strict JSON
    # every good row has its own score: scoring the good rows alone gives the same numbers
    alone = evaluate(baseline, [s for s in read_manifest(manifest) if s.path not in bad],
                     batch_size=8)
    assert alone["overall"]["frame"]["auc"] == m["overall"]["frame"]["auc"]


def test_nothing_readable_exits_1(baseline: Path, faces_manifest: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    manifest, bad = _manifest_with_corrupt_rows(faces_manifest, tmp_path)
    only_bad = [s for s in read_manifest(manifest) if s.path in bad]
    write_manifest(tmp_path / "bad.csv", only_bad)
    code = main(["evaluate", "--model", str(baseline), "--data", str(tmp_path / "bad.csv"),
                 "--out", str(tmp_path / "e")])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "could be" in err


def test_evaluate_table_shows_best_acc_with_its_threshold(
        baseline: Path, faces_manifest: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    manifest, _ = _manifest_with_corrupt_rows(faces_manifest, tmp_path)
    out = tmp_path / "eval_cli"
    assert main(["evaluate", "--model", str(baseline), "--data", str(manifest),
                 "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("subset"))
    assert header.split()[4:6] == ["AccBest", "BestThr"]
    frame = json.loads((out / "metrics.json").read_text())["overall"]["frame"]
    row = next(line for line in lines if line.split()[:2] == ["overall", "frame"]).split()
    assert row[4] == f"{frame['best_acc'] * 100:.2f}"
    assert row[5] == f"{frame['best_threshold']:.3f}"  # the threshold that best Acc used


def test_a_run_and_its_bundle_are_evaluated_at_one_threshold(faces_manifest: Path,
                                                               tmp_path: Path) -> None:
    from lorefd.models.export import export_bundle

    ckpt = make_detector_checkpoint(tmp_path, name="baseline", sub="best",
                                    meta={"val": {"val_threshold": 0.37}})
    export_bundle(ckpt, tmp_path / "m.lorefd", verify=False)
    samples = [dataclasses.replace(s, label=REAL if i % 2 else FAKE, method="" if i % 2 else "sbi")
               for i, s in enumerate(read_manifest(faces_manifest)[:12])]
    run = evaluate(ckpt, samples, device="cpu")["overall"]["frame"]
    bundle = evaluate(tmp_path / "m.lorefd", samples, device="cpu")["overall"]["frame"]
    assert run["threshold"] == bundle["threshold"] == pytest.approx(0.37)
    assert run["acc"] == bundle["acc"]


def test_a_missing_row_is_left_out_and_listed_as_robustness_does(
        baseline: Path, faces_manifest: Path, tmp_path: Path) -> None:
    good = [dataclasses.replace(s, label=REAL if i % 2 else FAKE, method="" if i % 2 else "sbi")
            for i, s in enumerate(read_manifest(faces_manifest)[:8])]
    gone = dataclasses.replace(good[0], path=str(tmp_path / "gone.png"), video_id="gone")
    m = evaluate(baseline, [*good, gone], device="cpu")
    assert m["scored"] == 8 and [e["path"] for e in m["excluded"]] == [gone.path]
