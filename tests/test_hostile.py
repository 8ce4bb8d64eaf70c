"""Hostile files and hostile numbers: every file here is made by the test itself.

A crafted resume state must not run code; a bundle re-sealed with hostile values (its manifest
edited and its checksums recomputed, the tensors untouched), or with its ONNX graph swapped,
is refused in one line, exit 2, on both runtimes, before any file is scored; outputs never
overwrite inputs; workers are bounded; a 16-bit PNG bomb is decoded
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


def _one_line_error(capsys: pytest.CaptureFixture[str], no_output: bool = False) -> str:
    """The command's error on stderr: exactly one line beside the progress log (``HH:MM:SS
    INFO ...``), no traceback; with ``no_output``, nothing on stdout (no file was scored)."""
    captured = capsys.readouterr()
    err = captured.err
    if no_output:
        assert captured.out == "", captured.out
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


# ------------------------------------------------------------------------------ 2, 4, 6: bundles
@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny baseline bundle with its ONNX graph and reference face, as `lorefd export`
    writes it."""
    from lorefd.models.export import export_bundle
    from lorefd.models.graph import add_graph

    root = tmp_path_factory.mktemp("hostile_bundle")
    out = root / "model.lorefd"
    # seed 4: the reference face scores 0.12, far from 0 and 1, and its mirror image differs
    export_bundle(make_detector_checkpoint(root, "baseline", seed=4), out, verify=False)
    add_graph(out)
    return out


def reseal(src: Path, dst: Path, edit=None, tensors: dict | None = None) -> Path:  # noqa: ANN001
    """``src`` with its manifest edited by ``edit(manifest)`` (and tensors replaced from
    ``tensors``), every checksum recomputed: what anyone holding the file can do."""
    from safetensors.torch import load_file

    from lorefd.models.bundle import read_bundle_header, write_bundle

    manifest = {k: v for k, v in read_bundle_header(src).items()
                if k not in ("payload_sha256", "tensors_sha256")}
    if edit is not None:
        edit(manifest)
    write_bundle(dst, {**load_file(str(src)), **(tensors or {})}, manifest)
    return dst


def _set(key: str, value: object):  # noqa: ANN202
    """An ``edit`` for :func:`reseal`: ``a.b.c`` set to ``value`` (None: deleted)."""
    def edit(m: dict) -> None:
        *parents, last = key.split(".")
        for p in parents:
            m = m[p]
        if value is None:
            del m[last]
        else:
            m[last] = value
    return edit


HOSTILE = {  # name: (key edited, new value or None to delete it, what the refusal names)
    "threshold 2.0": ("threshold.value", 2.0, "threshold.value"),
    "threshold -1": ("threshold.value", -1, "threshold.value"),
    "threshold NaN": ("threshold.value", float("nan"), "threshold.value"),
    "no threshold": ("threshold", None, "threshold"),
    "preprocess null": ("preprocess", "null", "preprocess"),
    "margin -1": ("preprocess.margin", -1.0, "preprocess.margin"),
    "margin 100": ("preprocess.margin", 100.0, "preprocess.margin"),
    "size 0": ("preprocess.size", 0, "preprocess.size"),
    "size 100000": ("preprocess.size", 100000, "preprocess.size"),
    "crop evil": ("preprocess.crop", "evil", "preprocess.crop"),
    "detect side -5": ("preprocess.detect_side", -5, "preprocess.detect_side"),
    "image size big": ("config.data.image_size", "big", "data.image_size"),
    "tta evil": ("config.detector.tta", "evil", "detector.tta"),
    "image_size 0": ("image_size", 0, "image_size"),
}


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_resealed_hostile_value_is_refused_on_both_runtimes(
        case: str, runtime: str, sealed: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`detect F --model BAD --runtime R`: exit 2, one line naming the key and the file, no
    table (no file scored)."""
    from lorefd.models.bundle import BundleError
    from lorefd.models.graph import load_runtime_model

    key, value, named = HOSTILE[case]
    bad = reseal(sealed, tmp_path / "bad.lorefd",
                 _set(key, None if value == "null" else value) if value != "null"
                 else (lambda m: m.__setitem__("preprocess", None)))
    with pytest.raises(BundleError) as info:
        load_runtime_model(bad, runtime=runtime)
    assert named in str(info.value) and str(bad) in str(info.value)
    assert main(["detect", str(FACE), "--model", str(bad), "--runtime", runtime]) == 2
    line = _one_line_error(capsys, no_output=True)
    assert named in line and str(bad) in line, line


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_detect_refuses_a_resealed_bundle_before_scoring(runtime: str, sealed: Path,
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    bad = reseal(sealed, tmp_path / "margin.lorefd", _set("preprocess.margin", 100.0))
    assert main(["detect", str(FACE), "--model", str(bad), "--runtime", runtime]) == 2
    assert "preprocess.margin must be a number in [0, 1], got 100.0" in _one_line_error(
        capsys, no_output=True)  # no table: no file was scored
    assert main(["detect", str(FACE), "--model", str(sealed), "--runtime", runtime]) == 0


def _times_zero(graph: bytes) -> bytes:
    """The same ONNX graph with its probability output multiplied by 0."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(graph)
    for node in model.graph.node:
        node.output[:] = ["prob_raw" if o == "prob" else o for o in node.output]
    model.graph.initializer.append(onnx.numpy_helper.from_array(
        __import__("numpy").zeros((), "float32"), "zero"))
    model.graph.node.append(helper.make_node("Mul", ["prob_raw", "zero"], ["prob"]))
    return model.SerializeToString()


def test_a_swapped_graph_is_refused(sealed: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    from safetensors.numpy import load_file

    from lorefd.models.bundle import BundleError
    from lorefd.models.graph import GRAPH_KEY, load_runtime_model

    graph = _times_zero(load_file(str(sealed))[GRAPH_KEY].tobytes())
    bad = reseal(sealed, tmp_path / "zero.lorefd",
                 _set("onnx.sha256", hashlib.sha256(graph).hexdigest()),
                 {GRAPH_KEY: torch.frombuffer(bytearray(graph), dtype=torch.uint8)})
    with pytest.raises(BundleError, match=r"ONNX Runtime gives P\(fake\) 0\.0000 on its "
                                          "reference face where the export recorded"):
        load_runtime_model(bad)
    assert main(["detect", str(FACE), "--model", str(bad)]) == 2
    assert "ONNX graph does not compute what was exported" in _one_line_error(
        capsys, no_output=True)
    # the network itself is intact: PyTorch runs it (and checks it on the same face)
    assert not hasattr(load_runtime_model(bad, runtime="torch").detector, "session")


def test_an_edited_config_that_changes_the_scores_is_refused(sealed: Path, tmp_path: Path
                                                             ) -> None:
    """A valid but different value (the test-time flip turned on) re-sealed: PyTorch no
    longer gives the reference face the score the export recorded."""
    from lorefd.models.bundle import BundleError, load_bundle

    bad = reseal(sealed, tmp_path / "flip.lorefd", _set("config.detector.tta", "flip"))
    with pytest.raises(BundleError, match="PyTorch gives P.*network does not compute"):
        load_bundle(bad)


def test_a_graph_without_reference_scores_is_not_run(sealed: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A bundle of an older lorefd (a graph, no reference face): PyTorch runs it, with one
    warning saying how to re-export; --runtime onnx is refused."""
    import logging

    from lorefd.models.bundle_check import REFERENCE_KEY
    from lorefd.models.graph import GraphError, OnnxDetector, load_runtime_model

    src_tensors = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(sealed))
    old = tmp_path / "old.lorefd"
    manifest_edit = _set("reference", None)
    from lorefd.models.bundle import read_bundle_header, write_bundle

    manifest = {k: v for k, v in read_bundle_header(sealed).items()
                if k not in ("payload_sha256", "tensors_sha256")}
    manifest_edit(manifest)
    write_bundle(old, {k: v for k, v in src_tensors.items() if k != REFERENCE_KEY}, manifest)
    with pytest.raises(GraphError, match="no reference scores"):
        load_runtime_model(old, runtime="onnx")
    with caplog.at_level(logging.WARNING, logger="lorefd"):
        assert not isinstance(load_runtime_model(old).detector, OnnxDetector)
    assert any("re-export it" in r.getMessage() for r in caplog.records)


def test_the_shipped_model_digest_is_pinned() -> None:
    """The shipped bundle is the one this lorefd pins. Replacing it on purpose: set
    SHIPPED_MANIFEST_SHA256 in src/lorefd/models/bundle.py to the digest this test prints."""
    from safetensors import safe_open

    from lorefd.models.bundle import SHIPPED_BUNDLE, SHIPPED_MANIFEST_SHA256

    with safe_open(str(SHIPPED_BUNDLE), "np") as fh:
        digest = fh.metadata()["manifest_sha256"]
    assert digest == SHIPPED_MANIFEST_SHA256, (
        f"the shipped bundle is not the pinned one; if it was replaced on purpose, set "
        f"SHIPPED_MANIFEST_SHA256 = {digest!r} in src/lorefd/models/bundle.py")


def test_the_shipped_model_records_its_reference_face() -> None:
    """The README's numbers: the bundled face 00161.jpg scores 0.794, threshold 0.690."""
    from lorefd.models.bundle import SHIPPED_BUNDLE, read_bundle_header

    manifest = read_bundle_header(SHIPPED_BUNDLE)
    assert manifest["reference"]["faces"] == [FACE.name]
    assert round(manifest["reference"]["prob"][0], 3) == 0.794
    assert round(manifest["threshold"]["value"], 3) == 0.690


def test_a_modified_default_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from lorefd.models import bundle as bundle_mod
    from lorefd.models.bundle import SHIPPED_BUNDLE, BundleError
    from lorefd.models.graph import load_runtime_model

    default = tmp_path / "model" / "default.lorefd"
    default.parent.mkdir()
    shutil.copy(SHIPPED_BUNDLE, default)
    monkeypatch.setattr(bundle_mod, "SHIPPED_BUNDLE", default)
    assert load_runtime_model(None).path == default  # the pinned bytes load from there
    reseal(SHIPPED_BUNDLE, default, _set("threshold.value", 0.9))  # valid, but not shipped
    for runtime in ("onnx", "torch"):
        with pytest.raises(BundleError, match="the model shipped with lorefd was modified"):
            load_runtime_model(None, runtime=runtime)
    assert main(["detect", str(FACE)]) == 2
    assert "reinstall lorefd" in _one_line_error(capsys, no_output=True)


# ------------------------------------------------------------------------------ 5: outputs
def test_evaluate_onto_its_own_input_is_refused(sealed: Path, mini_ffpp: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    data = tmp_path / "predictions.csv"
    shutil.copy(mini_ffpp, data)
    before = data.read_bytes()
    assert main(["evaluate", "--model", str(sealed), "--data", str(data), "--out",
                 str(tmp_path)]) == 2
    assert "is the input" in _one_line_error(capsys)
    assert data.read_bytes() == before and not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("command", ["evaluate", "explain", "robustness", "synth", "train",
                                     "pretrain", "masks", "preprocess", "recipe", "demo"])
def test_commands_that_write_spare_their_inputs(command: str, sealed: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Each writer refuses, before any work, an output that is an input, joins an input
    folder of images, or overwrites a file of an input run folder."""
    import shutil

    faces = tmp_path / "faces"
    faces.mkdir()
    shutil.copy(FACE, faces / FACE.name)
    run = tmp_path / "run"  # a stage-1 run folder: its summary.json must survive `train`
    run.mkdir()
    (run / "summary.json").write_text("{}")
    argv = {
        "evaluate": ["evaluate", "--model", str(sealed), "--data", str(faces), "--out",
                     str(faces)],
        "explain": ["explain", "--model", str(sealed), str(faces / FACE.name), "--out",
                    str(faces / FACE.name)],
        "robustness": ["robustness", "--model", str(sealed), "--data", str(faces), "--out",
                       str(faces)],
        "synth": ["synth", str(faces), "--out", str(faces)],
        "train": ["train", "--config", "tiny", "--mae", str(run), "--train", str(faces),
                  "--out", str(run)],
        "pretrain": ["pretrain", "--config", "tiny", "--data", str(faces), "--out", str(faces)],
        "masks": ["masks", "--config", "tiny", "--data", str(faces), "--out",
                  str(faces / "masks.png")],
        "preprocess": ["preprocess", "folder", str(faces), "--out", str(faces / "crops")],
        "recipe": ["recipe", str(faces), "--out", str(faces / "run")],
        "demo": ["demo", "--faces", str(faces), "--out", str(faces)],
    }[command]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert "input" in line and "elsewhere" in line, line
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing changed


# ------------------------------------------------------------------------------ 7: workers
def test_workers_are_capped_by_inputs_and_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    import logging

    from lorefd.cli import detect as detect_cli
    from lorefd.cli.common import cap_threads, cpu_cores

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"{i}.jpg").write_bytes(FACE.read_bytes())
    assert detect_cli.cap_workers(1000, [str(FACE)]) == 1
    assert detect_cli.cap_workers(1000, [str(photos)]) == min(3, cpu_cores())
    assert detect_cli.cap_workers(2, [str(photos)]) == min(2, cpu_cores())
    assert cap_threads(1000) == cpu_cores() and cap_threads(None) is None
    said: list[str] = []  # the command's log, whatever handlers other tests left behind

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    logging.getLogger("lorefd").addHandler(Collect())  # removed after the test (conftest)
    assert main(["detect", str(FACE), "--workers", "1000", "--threads", "1000", "-q"]) == 0
    assert "--workers 1000: using 1 (1 input file(s))" in said, said


# ------------------------------------------------------------------------------ 8: image bombs
BOMB_SIDE = 6000  # 36 MP of 16-bit grey: 72 MB decoded, a few hundred KB on disk


@pytest.fixture(scope="module")
def bomb16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np
    from PIL import Image

    path = tmp_path_factory.mktemp("bomb") / "bomb16.png"
    arr = np.zeros((BOMB_SIDE, BOMB_SIDE), np.uint16)
    arr[::97, ::89] = 40000  # not all one value
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode == "I;16"
    return path


DECODE_PEAK = r"""
import json, resource, sys
from lorefd.data.images import load_rgb
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rgb = load_rgb(sys.argv[1])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"shape": list(rgb.shape), "max": int(rgb.max()), "peak_mb": (peak - base) / 1024}))
"""


def test_a_16_bit_png_bomb_decodes_within_its_budget(bomb16: Path) -> None:
    """Decoding costs the decoded samples (2 bytes a pixel), the RGB result (3) and strips:
    no float64 copy of the image (which took 8 bytes a pixel, several times over)."""
    import subprocess
    import sys

    assert bomb16.stat().st_size < 2_000_000
    out = subprocess.run([sys.executable, "-c", DECODE_PEAK, str(bomb16)], capture_output=True,
                         text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["shape"] == [BOMB_SIDE, BOMB_SIDE, 3] and got["max"] == 156  # 40000/65535*255
    budget_mb = BOMB_SIDE**2 * (2 + 3) / 2**20 + 64
    assert got["peak_mb"] <= budget_mb, (got, budget_mb)


def test_images_are_budgeted_by_bytes_not_only_pixels(bomb16: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from lorefd.data.images import ImageLoadError, load_rgb

    rgb, rgba = tmp_path / "rgb.png", tmp_path / "rgba.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(rgb)
    Image.fromarray(np.zeros((100, 100, 4), np.uint8)).save(rgba)
    # at the pixel limit: 3 bytes a pixel fit the budget, 4 (alpha) do not
    assert load_rgb(rgb, max_pixels=100 * 100).shape == (100, 100, 3)
    with pytest.raises(ImageLoadError, match=r"too large to decode .*RGBA: 0\.04 MB, above "
                                             r"0\.03 MB"):
        load_rgb(rgba, max_pixels=100 * 100)
    assert load_rgb(rgba, max_pixels=100 * 100, max_bytes=4 * 100 * 100).shape == (100, 100, 3)
    with pytest.raises(ImageLoadError, match="too large to decode .*I;16"):
        load_rgb(bomb16, max_bytes=BOMB_SIDE**2)  # 2 bytes a pixel: twice that


def test_float_tiffs_are_scaled_and_nan_is_refused(tmp_path: Path) -> None:
    import warnings

    import numpy as np
    from PIL import Image

    from lorefd.data.images import ImageLoadError, load_rgb

    grey = load_rgb(FACE)[..., 0]
    unit = tmp_path / "unit.tif"
    Image.fromarray(grey.astype(np.float32) / 255.0, "F").save(unit)
    got = load_rgb(unit)
    assert np.abs(got[..., 0].astype(int) - grey).max() <= 1  # the face, not black
    nan = tmp_path / "nan.tif"
    bad = grey.astype(np.float32) / 255.0
    bad[10:20] = np.nan
    Image.fromarray(bad, "F").save(nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no numpy warning on the way
        with pytest.raises(ImageLoadError, match="NaN or infinite"):
            load_rgb(nan)


# ------------------------------------------------------------------------------ 3: serve crash
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_serve(tmp: Path, port: int):  # noqa: ANN202
    """`lorefd serve` (the shipped model) with its work folders under ``tmp``; up and healthy."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "lorefd.cli", "serve", "--port", str(port)],
                            env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("serve did not start")


def test_a_crashed_servers_uploads_are_removed_at_the_next_start(tmp_path: Path) -> None:
    import signal
    import socket
    import time

    work = tmp_path / "tmp"
    work.mkdir()
    legacy = work / "lorefd-serve-legacy"  # an older lorefd's folder (no lock): not ours to judge
    (legacy / "uploads").mkdir(parents=True)
    port = _free_port()
    first = _start_serve(work, port)
    try:
        (root,) = [p for p in work.glob("lorefd-serve-*") if p != legacy]
        with socket.create_connection(("127.0.0.1", port)) as conn:  # an upload, mid-request
            part = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.jpg"'
                    b"\r\n\r\n\xff\xd8\xff" + b"\x00" * 4000)
            conn.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/"
                         b"form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n" + part)
            deadline = time.monotonic() + 30
            while not list((root / "uploads").glob("*/*")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert list((root / "uploads").glob("*/*")), "the upload never reached the disk"
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        assert list((root / "uploads").glob("*/*"))  # left behind by the crash
        second = _start_serve(work, port)
        try:
            assert not root.exists()  # the dead server's folder is gone
            assert legacy.is_dir()
            (live,) = [p for p in work.glob("lorefd-serve-*") if p != legacy]
            from lorefd.apps.serve.service import clean_stale_workdirs

            assert clean_stale_workdirs(work) == [] and live.is_dir()  # a running one is kept
        finally:
            second.terminate()
            second.wait(timeout=60)
        assert not live.exists()  # a clean stop removes its own folder
    finally:
        if first.poll() is None:
            first.kill()


# ------------------------------------------------------------------------------ 9: the minor ones
def test_slow_request_headers_get_408(tmp_path: Path) -> None:
    """A slow-loris trickling header lines gets 408 like a slow body, not h11's 400."""
    import socket
    import threading
    import time

    import uvicorn
    from fastapi import FastAPI

    from lorefd.apps.serve.protocol import header_deadline

    app = FastAPI()

    @app.get("/ok")
    def ok() -> dict:
        return {"ok": True}

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           http=header_deadline(0.5)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\n")
            conn.settimeout(0.1)
            got, t0 = b"", time.monotonic()
            while time.monotonic() - t0 < 10 and b"\r\n\r\n" not in got:
                try:
                    conn.sendall(b"X-a: b\r\n")
                    got += conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
        assert got.startswith(b"HTTP/1.1 408 ") and b"headers too slow" in got, got
        with socket.create_connection(("127.0.0.1", port)) as conn:  # a prompt one is served
            conn.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            conn.settimeout(5)
            assert conn.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_heic_uploads_get_415(sealed: Path) -> None:
    from fastapi.testclient import TestClient

    from lorefd.apps.serve import ServeOptions, Service, create_app, sniff

    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    avif = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64
    mp4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64
    assert sniff(heic) is None and sniff(avif) is None and sniff(mp4) == ("video", ".mp4")
    service = Service.load(sealed, ServeOptions())
    try:
        r = TestClient(create_app(service)).post(
            "/v1/detect", files={"files": ("IMG_0001.HEIC", heic, "image/heic")})
        assert r.status_code == 415 and r.json()["files"] == ["IMG_0001.HEIC"]
    finally:
        service.close()


def test_an_unwritable_heatmap_folder_fails_before_any_work(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc")
    assert main(["detect", str(FACE), "--heatmap", "/proc/x", "-q"]) == 2
    assert "--heatmap /proc/x: cannot write into /proc" in _one_line_error(
        capsys, no_output=True)  # no file was scored


def test_a_train_refused_at_its_first_step_leaves_no_tb(tmp_path: Path, mini_ffpp: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    from lorefd.engines import train as train_mod
    from lorefd.errors import UserError

    def refuse(*args: object, **kwargs: object) -> None:
        raise UserError("refused at the first step")

    monkeypatch.setattr(train_mod, "train_one_epoch", refuse)
    run = tmp_path / "run"
    sets = [a for o in TINY for a in ("--set", o)]
    assert main(["train", "--config", "tiny", *sets, "--detector", "baseline", "--train",
                 str(mini_ffpp), "--filter", "split=train", "--out", str(run)]) == 2
    assert "refused at the first step" in _one_line_error(capsys)
    assert not (run / "tb").exists() and not (run / "metrics.jsonl").exists()
