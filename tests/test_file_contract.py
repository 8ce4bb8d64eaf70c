"""Files are never lost or silently swapped: outputs never overwrite inputs (refused before any
work, exit 2, both names said), and a run is never silently replaced by another checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import lorefd
from lorefd.cli import main

FACE = sorted((Path(lorefd.__file__).parent / "assets" / "faces" / "real").glob("*.jpg"))[0]


@pytest.fixture()
def victim(tmp_path: Path) -> Path:
    out = tmp_path / "in" / "victim.jpg"
    out.parent.mkdir()
    shutil.copy(FACE, out)
    return out


@pytest.mark.parametrize("extra", [
    lambda v: ["--json", str(v)],                                  # the input itself
    lambda v: ["--csv", str(v.parent / ".." / "in" / v.name)],     # the same file, spelled apart
    lambda v: ["--json", str(v.parent / "r.txt"), "--csv", str(v.parent / "r.txt")],  # two in one
])
def test_detect_refuses_outputs_that_would_destroy_inputs(victim: Path, extra, capsys) -> None:
    before = victim.read_bytes()
    assert main(["detect", str(victim), *extra(victim)]) == 2
    err = capsys.readouterr().err
    assert "overwritten" in err or "same file" in err
    assert victim.read_bytes() == before and not (victim.parent / "r.txt").exists()


def test_detect_refuses_a_file_inside_an_input_folder(victim: Path, capsys) -> None:
    assert main(["detect", str(victim.parent), "--json", str(victim)]) == 2
    assert "inside the input" in capsys.readouterr().err


def test_export_refuses_to_write_over_its_input(tmp_path: Path, capsys) -> None:
    bundle = tmp_path / "m.lorefd"
    shutil.copy(Path(lorefd.__file__).parent / "assets" / "model" / "default.lorefd", bundle)
    before = bundle.stat().st_mtime_ns
    assert main(["export", str(bundle), "--out", str(bundle)]) == 2
    assert "is an input" in capsys.readouterr().err and bundle.stat().st_mtime_ns == before


def test_export_refuses_to_write_over_the_runs_weights(tmp_path: Path, capsys) -> None:
    from conftest import make_detector_checkpoint

    ckpt = make_detector_checkpoint(tmp_path / "run", name="baseline", sub="best")
    weights = ckpt / "model.safetensors"
    before = weights.read_bytes()
    assert main(["export", str(tmp_path / "run"), "--out", str(weights)]) == 2
    assert "inside the input" in capsys.readouterr().err and weights.read_bytes() == before


def test_a_run_whose_best_lost_its_config_is_refused_not_replaced_by_last(tmp_path: Path,
                                                                          capsys) -> None:
    from conftest import make_detector_checkpoint

    run = tmp_path / "run"
    make_detector_checkpoint(run, name="baseline", sub="best")
    make_detector_checkpoint(run, name="baseline", sub="last", seed=1)
    (run / "best" / "config.json").unlink()
    assert main(["detect", str(FACE), "--model", str(run)]) == 2
    err = capsys.readouterr().err
    assert "best has no config.json" in err and "last" in err


def test_train_on_images_that_cannot_be_read_is_one_line_exit_2(faces_manifest: Path,
                                                                tmp_path: Path, capsys) -> None:
    import dataclasses

    from lorefd.data.manifest import read_manifest, write_manifest

    rows = []
    for i, s in enumerate(read_manifest(faces_manifest)[:4]):
        bad = tmp_path / f"broken_{i}.png"
        bad.write_bytes(b"not an image at all")
        rows.append(dataclasses.replace(s, path=str(bad)))
    write_manifest(tmp_path / "m.csv", rows)
    code = main(["train", "--config", "tiny", "--detector", "baseline", "--train",
                 str(tmp_path / "m.csv"), "--set", "train.fakes=synth", "--out",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "not one of its 4 images can be read" in err[-1]
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("opt,value,said", [("--size", "0", "crop side in [16, 4096]"),
                                            ("--margin", "-1", "template margin in [0, 1]")])
def test_export_refuses_crop_parameters_no_detect_could_use(tmp_path: Path, opt, value, said,
                                                            capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(tmp_path), "--out", str(tmp_path / "m.lorefd"), opt, value])
    assert exit_.value.code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "m.lorefd").exists()


def test_detect_refuses_a_huge_image_from_its_header(tmp_path: Path) -> None:
    import time

    import numpy as np
    from PIL import Image

    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((8200, 8200), np.uint8)).save(big, optimize=False)  # 67 MP, tiny file
    t0 = time.perf_counter()
    r = lorefd.detect(big)["results"][0]
    assert r["status"] == "unreadable" and "above 64 MP" in r["message"]
    assert time.perf_counter() - t0 < 20


def test_written_files_get_the_usual_mode_not_0600(tmp_path: Path) -> None:
    import os

    import torch

    from lorefd.models.bundle import write_bundle

    umask = os.umask(0o022)
    try:
        write_bundle(tmp_path / "m.lorefd", {"x": torch.zeros(2)}, {})
    finally:
        os.umask(umask)
    assert (tmp_path / "m.lorefd").stat().st_mode & 0o777 == 0o644


def test_a_binary_manifest_is_refused_naming_the_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "m.csv"
    bad.write_bytes(bytes(range(128, 256)) * 8)
    assert main(["evaluate", "--data", str(bad), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a text (UTF-8) CSV manifest" in err


def test_a_link_to_itself_is_called_a_loop_not_a_missing_target(tmp_path: Path) -> None:
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop.name)
    gone = tmp_path / "gone.jpg"
    gone.symlink_to(tmp_path / "nowhere.jpg")
    by_name = {Path(r["path"]).name: r for r in lorefd.detect([loop, gone])["results"]}
    assert "loop" in by_name["loop.jpg"]["message"]
    assert by_name["gone.jpg"]["message"] == "broken symbolic link (target missing)"
