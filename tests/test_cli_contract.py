"""One contract for every command: exit codes, one-line errors, `--model`, help, start-up imports."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_detector_checkpoint

from lorefd.cli import COMMANDS, build_parser, main

HEAVY = ("torch", "cv2", "matplotlib", "av", "dlib", "sklearn", "timm", "scipy")
CONFIG_COMMANDS = [  # commands that read --config, with what else they require
    ["pretrain", "--data", "D", "--out", "O"],
    ["train", "--train", "D", "--out", "O", "--detector", "xception"],
    ["protocol", "gid", "--ffpp", "D", "--mae", "M", "--out", "O"],
    ["masks", "--data", "D", "--out", "O.png"],
]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training run folder holding only best/ (a tiny baseline detector)."""
    run = tmp_path_factory.mktemp("contract") / "run"
    run.mkdir()
    make_detector_checkpoint(run, name="xception", sub="best")
    return run


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------------------ start-up
def test_building_the_parser_imports_no_heavy_library() -> None:
    code = ("import sys; from lorefd.cli import build_parser; build_parser(); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", f"imported at parser build time: {out}"


@pytest.mark.parametrize("argv", [["--help"], ["detect", "--help"], ["train", "--help"]])
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    """What kept `--help` slow (7.4 s) was torch/OpenCV/matplotlib at start-up; the time
    itself is measured by benchmarks/bench_cli_startup.py."""
    code = ("import sys\nfrom lorefd.cli import main\ntry:\n    main(" + repr(argv) + ")\n"
            "except SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert "usage: lorefd" in run.stdout
    assert run.stderr.strip().splitlines()[-1] == "[]", run.stderr


def test_every_option_of_every_command_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(COMMANDS) <= set(sub.choices)
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, p in sub.choices.items() for a in p._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not missing, f"options without help text: {missing}"


def test_cli_constants_match_the_library() -> None:
    from lorefd.cli import preprocess, synth
    from lorefd.data.preprocess.adapters import ADAPTERS, COMPRESSIONS
    from lorefd.data.synth import KINDS

    assert sorted(ADAPTERS) == preprocess.LAYOUTS and preprocess.COMPRESSIONS == COMPRESSIONS
    assert list(KINDS) == synth.KINDS


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("argv", CONFIG_COMMANDS, ids=lambda a: a[0])
def test_a_bad_config_is_exit_2_in_every_command(argv: list[str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data:\n  image_size: [64\n")
    cases = [(["--config", str(tmp_path / "missing" / "tiny.yaml")], "not found"),
             (["--config", str(bad_yaml)], "not valid YAML"),
             (["--config", "tiny", "--set", "data.image_size=0"], "data.image_size"),
             (["--config", "tiny", "--set", "pretrain.batch_size=0"], "pretrain.batch_size"),
             (["--config", "tiny", "--set", "mask.mask_ratio=1.5"], "mask.mask_ratio")]
    for extra, said in cases:
        assert main([*argv, *extra]) == 2, extra
        err = _err(capsys)
        assert said in err and err.count("\n") == 1 and err.startswith(f"lorefd {argv[0]}: ")


@pytest.mark.parametrize("argv", [
    ["detect", "x.jpg"], ["evaluate", "--data", "D", "--out", "O"],
    ["explain", "x.png", "--out", "e.png"],
], ids=lambda a: a[0])
def test_a_missing_model_is_exit_2(argv: list[str], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert main([*argv, "--model", str(tmp_path / "nowhere")]) == 2
    assert "model not found" in _err(capsys)
    import lorefd.models.bundle as bundle

    monkeypatch.setattr(bundle, "shipped_bundle", lambda: None)
    assert main(argv) == 2  # no --model and no shipped model
    assert "--model is required" in _err(capsys)


def test_output_paths_are_checked_before_the_work(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    # the model does not exist either: the --json check comes first, before any loading
    assert main(["detect", "x.jpg", "--model", "nowhere", "--json", str(tmp_path)]) == 2
    assert "--json" in _err(capsys)
    assert main(["detect", "x.jpg", "--model", "nowhere", "--heatmap", str(a_file)]) == 2
    assert "--heatmap" in _err(capsys)
    assert main(["evaluate", "--model", "nowhere", "--data", "D", "--out",
                 str(a_file / "sub")]) == 2
    assert "--out" in _err(capsys)
    assert main(["export", "nowhere", "--out", str(tmp_path)]) == 2
    assert "is a folder" in _err(capsys)


def test_deprecated_spellings_work_and_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["evaluate", "--ckpt", "RUN", "--data", "D", "--out", "O"])
    assert args.model == "RUN" and "--ckpt is deprecated; use --model" in capsys.readouterr().err
    args = parser.parse_args(["reconstruct", "--ckpt", "S1", "x.png", "--out", "f.png"])
    assert args.mae == "S1" and "use --mae" in capsys.readouterr().err
    args = parser.parse_args(["preprocess", "folder", "R", "--out", "O", "--detector",
                              "retinaface"])
    assert args.detector == "retinaface" and "use --face-detector" in capsys.readouterr().err
    args = parser.parse_args(["preprocess", "folder", "R", "--out", "O", "--face-detector",
                              "retinaface"])
    assert args.detector == "retinaface" and not capsys.readouterr().err


# ------------------------------------------------------------------------------ --model forms
def test_evaluate_and_explain_accept_a_run_folder(run_folder: Path, faces_manifest: Path,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from lorefd.data.manifest import read_manifest, write_manifest

    samples = read_manifest(faces_manifest)[:4]
    for i, s in enumerate(samples):
        s.label = i % 2
    write_manifest(tmp_path / "m.csv", samples)
    assert main(["evaluate", "--model", str(run_folder), "--data", str(tmp_path / "m.csv"),
                 "--out", str(tmp_path / "ev"), "--batch-size", "4"]) == 0
    assert (tmp_path / "ev" / "metrics.json").is_file()
    assert main(["explain", "--model", str(run_folder), samples[0].path, "--out",
                 str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").stat().st_size > 0
    capsys.readouterr()


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A bare ValueError inside a command is a bug, not the user's input: exit 1 with the
    traceback; the project's errors (a UserError, also ValueErrors) stay one line, exit 2."""
    import lorefd.cli.masks as masks
    from lorefd.config import ConfigError

    def boom(args: argparse.Namespace) -> int:
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(masks, "run", boom)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["masks", "--data", "D", "--out", "O.png"])

    def user(args: argparse.Namespace) -> int:
        raise ConfigError("mask.ratio must be in (0, 1)")

    monkeypatch.setattr(masks, "run", user)
    assert main(["masks", "--data", "D", "--out", "O.png"]) == 2
    assert "mask.ratio must be in (0, 1)" in _err(capsys)
