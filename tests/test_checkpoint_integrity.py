"""A damaged checkpoint is refused with the file named; a non-finite score is never a verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_detector_checkpoint

from lorefd.checkpoint import (
    CONFIG,
    STATE,
    WEIGHTS,
    CheckpointError,
    load_checkpoint,
    load_state,
    save_checkpoint,
)
from lorefd.cli import main
from lorefd.config import load_config
from lorefd.errors import NonFiniteScoreError, NothingProcessedError
from lorefd.models.bundle import BundleError, load_bundle, write_bundle


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_detector_checkpoint(tmp_path_factory.mktemp("integrity"), name="xception",
                                    sub="best")


def _nan_exponent(path: Path, tensor: str = "net.body.fc.weight") -> None:
    """Set one float32 value's exponent bits to all ones in the file (a NaN or inf)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    start = 8 + n + header[tensor]["data_offsets"][0]
    data = bytearray(raw)
    data[start + 3] |= 0x7F
    data[start + 2] |= 0x80
    path.write_bytes(bytes(data))


def _damaged(ckpt: Path, tmp_path: Path, keep_checksums: bool = True) -> Path:
    bad = tmp_path / "run" / "best"
    shutil.copytree(ckpt, bad)
    _nan_exponent(bad / WEIGHTS)
    if not keep_checksums:  # as written by an older lorefd
        data = json.loads((bad / CONFIG).read_text())
        data.pop("checksums")
        (bad / CONFIG).write_text(json.dumps(data))
    return bad


def test_checkpoints_carry_checksums_of_weights_and_state(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "c", net, load_config("tiny"), {"kind": "x"},
                    state={"step": 3})
    sums = json.loads((tmp_path / "c" / CONFIG).read_text())["checksums"]
    assert set(sums) == {WEIGHTS, STATE, CONFIG}  # the config and meta too
    assert load_state(tmp_path / "c")["step"] == 3
    state = tmp_path / "c" / STATE
    raw = bytearray(state.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte
    state.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=str(state)):
        load_state(tmp_path / "c")


def test_an_edited_config_or_meta_is_refused(tmp_path: Path) -> None:
    from lorefd.checkpoint import read_checkpoint_info

    save_checkpoint(tmp_path / "c", torch.nn.Linear(3, 2), load_config("tiny"), {"kind": "x"})
    data = json.loads((tmp_path / "c" / CONFIG).read_text())
    data["config"]["data"]["image_size"] += 1  # one edit, the file still valid JSON
    (tmp_path / "c" / CONFIG).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        read_checkpoint_info(tmp_path / "c")


def test_a_flipped_byte_is_refused_naming_the_file(ckpt: Path, tmp_path: Path) -> None:
    bad = _damaged(ckpt, tmp_path)
    with pytest.raises(CheckpointError, match=f"{bad / WEIGHTS}.*checksum"):
        load_checkpoint(bad)


def test_non_finite_weights_are_refused_without_checksums(ckpt: Path, tmp_path: Path) -> None:
    bad = _damaged(ckpt, tmp_path, keep_checksums=False)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(bad)


@pytest.mark.parametrize("argv", [["export", "{run}", "--out", "{tmp}/m.lorefd"],
                                  ["detect", "{tmp}/x.png", "--model", "{run}"],
                                  ["explain", "--model", "{run}", "{tmp}/x.png",
                                   "--out", "{tmp}/e.png"]], ids=lambda a: a[0])
def test_commands_refuse_a_damaged_checkpoint(argv: list[str], ckpt: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = _damaged(ckpt, tmp_path)
    args = [a.format(run=bad.parent, tmp=tmp_path) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(bad / WEIGHTS) in err and "Traceback" not in err
    assert not (tmp_path / "m.lorefd").exists()  # export sealed nothing


def test_a_bundle_with_non_finite_weights_is_refused(tmp_path: Path) -> None:
    weights = {"w": torch.tensor([1.0, float("nan")])}
    write_bundle(tmp_path / "b.lorefd", weights, {"detector": "x"})
    with pytest.raises(BundleError, match="non-finite"):
        load_bundle(tmp_path / "b.lorefd")


def _nan_detector(ckpt: Path):  # noqa: ANN202
    from lorefd.models.bundle import load_bundle

    det = load_bundle(ckpt).detector
    with torch.no_grad():
        det.net.body.fc.bias.fill_(float("nan"))  # a model that scores NaN
    return det


def test_explain_and_evaluate_give_no_verdict_for_a_nan_score(ckpt: Path, faces_manifest: Path,
                                                             tmp_path: Path) -> None:
    from lorefd.data.manifest import read_manifest
    from lorefd.evaluation.evaluate import evaluate
    from lorefd.evaluation.explain import explain_figure

    samples = read_manifest(faces_manifest)[:2]
    with pytest.raises(NonFiniteScoreError, match=Path(samples[0].path).name):
        explain_figure(_nan_detector(ckpt), [samples[0].path], tmp_path / "e.png")
    with pytest.raises(NothingProcessedError, match="non-finite"):
        evaluate(_nan_detector(ckpt), samples, tmp_path / "ev")
    assert not (tmp_path / "ev" / "metrics.json").exists()


def test_old_checkpoints_without_checksums_still_load(ckpt: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(ckpt, old)
    data = json.loads((old / CONFIG).read_text())
    data.pop("checksums")
    (old / CONFIG).write_text(json.dumps(data))
    weights, _, meta = load_checkpoint(old)
    assert meta["kind"] == "detector" and weights
