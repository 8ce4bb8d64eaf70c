"""Hostile files and hostile numbers (issue 31): every file here is made by the test itself.

A crafted resume state must not run code; a bundle re-sealed with hostile values (its manifest
edited and its checksums recomputed, the tensors untouched), or with its ONNX graph swapped,
is refused in one line, exit 2, on both runtimes, before any file is scored; outputs never
overwrite inputs; workers are bounded and die with their parent; a 16-bit PNG bomb is decoded
within a stated budget; a crashed server's uploads are cleaned at the next start.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_detector_checkpoint

from lorefd.checkpoint import CONFIG, STATE, CheckpointError, file_sha256, load_state
from lorefd.cli import main

ASSETS = Path(__file__).resolve().parents[1] / "src" / "lorefd" / "assets"
FACE = ASSETS / "faces" / "real" / "00161.jpg"


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's error on stderr: exactly one line beside the progress log (``HH:MM:SS
    INFO ...``), no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines()
             if ln.strip() and not re.match(r"\d\d:\d\d:\d\d (INFO|DEBUG) ", ln)]
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------------------------ 1: resume state
class _Opens:
    """Unpickled by a plain ``torch.load``, this calls ``open(path, "w")``: code from a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.path), "w"))


def _run_with_state(root: Path, state: object, checksums: bool = True) -> Path:
    """A ``lorefd train`` run folder (tiny baseline, ``RUN/last``) whose ``state.pt`` is
    ``state``; its checksum recomputed (as whoever hands the folder over can), or the
    folder's checksums dropped altogether (as an older lorefd wrote them)."""
    last = make_detector_checkpoint(root / "run", "baseline", sub="last")
    torch.save(state, last / STATE)
    data = json.loads((last / CONFIG).read_text())
    if checksums:
        data["checksums"][STATE] = file_sha256(last / STATE)
    else:
        data.pop("checksums")
    (last / CONFIG).write_text(json.dumps(data))
    return root / "run"


def _train_resume(run: Path, data: Path, *extra: str) -> int:
    sets = [a for o in TINY for a in ("--set", o)]
    return main(["train", "--config", "tiny", *sets, "--detector", "baseline", "--train",
                 str(data), "--filter", "split=train", "--out", str(run), "--resume", *extra])


def test_a_crafted_resume_state_runs_no_code(tmp_path: Path, mini_ffpp: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    run = _run_with_state(tmp_path, {"optimizer": _Opens(marker), "step": 1, "epoch": 0})
    with pytest.raises(CheckpointError, match="holds a reference to .*open.*runs no code"):
        load_state(run / "last")
    assert not marker.exists()
    assert _train_resume(run, mini_ffpp) == 2  # the command: one line, exit 2, no code run
    assert "runs no code from a checkpoint" in _one_line_error(capsys)
    assert not marker.exists()
    # the file is live: the pickle loading lorefd used before would have run it
    torch.load(run / "last" / STATE, weights_only=False)
    assert marker.exists()


def test_an_unchecksummed_run_is_resumed_only_when_allowed(tmp_path: Path, mini_ffpp: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    marker = tmp_path / "pwned"
    run = _run_with_state(tmp_path, {"optimizer": _Opens(marker), "step": 1, "epoch": 0},
                          checksums=False)
    assert _train_resume(run, mini_ffpp) == 2
    line = _one_line_error(capsys)
    assert "has no checksum" in line and "--allow-unchecksummed" in line
    assert not (run / "tb").exists()  # refused before any work
    # allowed: read anyway, still without running code
    assert _train_resume(run, mini_ffpp, "--allow-unchecksummed") == 2
    assert "runs no code from a checkpoint" in _one_line_error(capsys)
    assert not marker.exists()


def test_a_resume_state_lacking_the_optimizer_is_one_line(tmp_path: Path, mini_ffpp: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from lorefd.checkpoint import rng_state

    run = _run_with_state(tmp_path, {"rng": rng_state(), "step": 2, "epoch": 0})
    assert _train_resume(run, mini_ffpp) == 2
    line = _one_line_error(capsys)
    assert "lacks 'optimizer'" in line and str(run / "last") in line


def test_resume_state_round_trips_without_pickled_code(tmp_path: Path) -> None:
    """What lorefd writes is read back with the weights-only loader: the generators resume
    exactly (numpy's key travels as plain ints, no numpy array is pickled)."""
    import random

    import numpy as np

    from lorefd.checkpoint import rng_state, save_checkpoint, set_rng_state
    from lorefd.config import load_config

    np.random.seed(3)
    random.seed(3)
    torch.manual_seed(3)
    save_checkpoint(tmp_path / "c", torch.nn.Linear(2, 2), load_config("tiny"), {"kind": "x"},
                    state={"rng": rng_state(), "step": 1})
    want = (np.random.rand(3), random.random(), torch.rand(2))
    set_rng_state(load_state(tmp_path / "c")["rng"])
    got = (np.random.rand(3), random.random(), torch.rand(2))
    assert np.array_equal(want[0], got[0]) and want[1] == got[1] and torch.equal(want[2], got[2])
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "c" / STATE) == []


# ------------------------------------------------------------------------------ 6: config numbers
@pytest.mark.parametrize("override", ["train.iters_per_epoch=10000000000000000000000",
                                      "train.iters_per_epoch=1e22", "train.lr=.inf",
                                      "train.epochs=.nan"])
def test_huge_or_non_finite_config_numbers_are_one_line(override: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    assert main(["train", "--config", "tiny", "--detector", "baseline", "--set", override,
                 "--train", str(tmp_path / "none.csv"), "--out", str(tmp_path / "run")]) == 2
    assert override.split("=")[0] in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()
