"""Arguments shared by several commands, and the checks every command makes before working.

Kept free of heavy imports: ``lorefd --help`` builds every parser without torch or OpenCV.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the platform says)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cap_threads(threads: int | None, option: str = "--threads") -> int | None:
    """``threads`` at most :func:`cpu_cores` (more only slow the runtime down: 1000 threads
    made one image 56 s instead of 2.4 s), with a warning when it was more."""
    if threads is None:
        return None
    cores = cpu_cores()
    if threads > cores:
        import logging

        logging.getLogger("lorefd").warning("%s %d: using %d, the cores this process may use",
                                            option, threads, cores)
        return cores
    return threads


# ---- argument types (argparse ``type=``): a bad value is a usage error naming the rule --------
def positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def non_negative_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def probability(value: str) -> float:
    x = float(value)
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {x}")
    return x


def add_config_args(p: argparse.ArgumentParser, default: str | None = "paper") -> None:
    """``--config`` (a YAML file or a bundled name) and repeatable ``--set KEY=VALUE``."""
    p.add_argument("--config", default=default,
                   help="YAML file, or a bundled config by bare name (paper, tiny, demo); "
                        "default: %(default)s")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. --set train.epochs=5)")


class DeprecatedAlias(argparse.Action):
    """An old option spelling: works as ``new`` does, and says it is deprecated."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        kwargs.setdefault("help", f"deprecated alias of {new}")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_alias(p: argparse.ArgumentParser | argparse._ActionsContainer, old: str, new: str,
              dest: str, **kwargs: Any) -> None:
    """``old`` as a deprecated spelling of ``new`` (same ``dest``)."""
    p.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, default=argparse.SUPPRESS,
                   **kwargs)


def _option_with_alias(p: argparse.ArgumentParser, new: str, old: str, dest: str,
                       required: bool, help: str, metavar: str) -> None:
    """``new`` and its deprecated spelling ``old``; when ``required``, one of the two."""
    group = p.add_mutually_exclusive_group(required=True) if required else p
    group.add_argument(new, dest=dest, default=None, metavar=metavar, help=help)
    add_alias(group, old, new, dest, metavar=metavar)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """``--device``, described one way everywhere."""
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")


def add_runtime_arg(p: argparse.ArgumentParser) -> None:
    """``--runtime onnx|torch`` (lorefd.models.graph.RUNTIMES; not imported: no heavy imports)."""
    p.add_argument("--runtime", choices=["onnx", "torch"], default=None,
                   help="run the bundle's ONNX graph with ONNX Runtime (default when the "
                        "bundle has one; no PyTorch is loaded) or the network with PyTorch")


def add_allow_unchecksummed_arg(p: argparse.ArgumentParser) -> None:
    """``--allow-unchecksummed``: resume a run whose state has no recorded checksum."""
    p.add_argument("--allow-unchecksummed", action="store_true",
                   help="with --resume: accept a resume state without a recorded checksum (a "
                        "run of an older lorefd); only for run folders you trust. The state is "
                        "read without running code either way")


def add_model_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--model``: a detector as a bundle, a run folder or a checkpoint folder (``--ckpt``:
    deprecated alias). Optional: when omitted, the model shipped with lorefd."""
    _option_with_alias(p, "--model", "--ckpt", "model", required, metavar="MODEL",
                       help="trained detector: a .lorefd bundle, a `lorefd train` run folder or "
                            "a checkpoint folder (RUN/best)"
                            + ("" if required else "; default: the model shipped with lorefd"))


def add_mae_arg(p: argparse.ArgumentParser, required: bool = False, help: str = "") -> None:
    """``--mae``: the stage-1 model (``--ckpt``: deprecated alias)."""
    _option_with_alias(p, "--mae", "--ckpt", "mae", required, metavar="MAE",
                       help=help or "stage-1 model: a `lorefd pretrain` run folder or its mae/")


def _nearest_existing(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path(".")


def _probe_writable(base: Path, option: str, path: Path) -> None:
    """Create and remove a folder in ``base``: permissions alone do not say that a file can
    be made there (``/proc``, a read-only mount, a full disk answer only when one tries)."""
    import tempfile

    from lorefd.errors import UserError

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lorefd-probe-", dir=base))
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot write into {base} "
                        f"({exc.strerror or exc})") from None


def check_output_file(path: str | Path | None, option: str) -> None:
    """Before any work: ``path`` can be written as a file (not a folder; its nearest existing
    ancestor is a writable folder). Raises a user error naming ``option``."""
    from lorefd.errors import UserError

    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise UserError(f"{option} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: cannot write into {base}")
    _probe_writable(base, option, path)


def check_output_dir(path: str | Path | None, option: str) -> None:
    """Before any work: ``path`` can be a folder (not an existing file; writable)."""
    from lorefd.errors import UserError

    if path is None:
        return
    path = Path(path)
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"{option} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: cannot write into {base}")
    _probe_writable(base, option, path)


def check_outputs_spare_inputs(outputs: dict[str, str | Path | None],
                               inputs: list[str | Path]) -> None:
    """Before any work: no output file is an input, lies inside an input checkpoint or run
    folder's files, or is named by two options. Raises a user error naming both."""
    from lorefd.errors import UserError

    given = {opt: Path(p).resolve() for opt, p in outputs.items() if p is not None}
    seen: dict[Path, str] = {}
    for opt, out in given.items():
        if out in seen:
            raise UserError(f"{opt} and {seen[out]} name the same file {out}; give two files")
        seen[out] = opt
        for raw in inputs:
            src = Path(raw).resolve()
            if out == src:
                raise UserError(f"{opt} {out} is an input; it would be overwritten (write the "
                                "output elsewhere)")
            if src.is_dir() and out.is_file() and src in out.parents and (
                    _is_media(out) or out.suffix in (".safetensors", ".json", ".pt")):
                raise UserError(f"{opt} {out} is a file inside the input {src}; it would be "
                                "overwritten (write the output elsewhere)")


MODEL_FILES = (".json", ".jsonl", ".safetensors", ".pt", ".lorefd", ".yaml")


def check_writes_spare_inputs(targets: dict[str, str | Path], data: list[Any] | tuple = (),
                              models: list[Any] | tuple = ()) -> None:
    """Before any work, for every command that writes: no file it will write (``targets``:
    what to call it in the error -> its path) is an input, a manifest or an image/video
    inside an input data folder (``data``: read for ``manifest.csv`` and media, so a written
    one would be read, or overwrite what is), or an existing checkpoint/run file inside an
    input model folder (``models``: run and checkpoint folders, read for their JSON, weights
    and state). A user error naming both; inputs that are None are skipped."""
    from lorefd.errors import UserError

    data_in = [(str(d), Path(d).expanduser().resolve()) for d in data if d is not None]
    model_in = [(str(m), Path(m).expanduser().resolve()) for m in models if m is not None]
    for label, raw_target in targets.items():
        target = Path(raw_target).expanduser().resolve()
        for raw, src in data_in + model_in:
            if target == src:
                raise UserError(f"{label} is the input {raw}; it would be overwritten (write "
                                "the output elsewhere)")
        for raw, src in data_in:
            if src.is_dir() and src in target.parents and (
                    target.name == "manifest.csv" or _is_media(target)):
                raise UserError(f"{label} lies inside the input folder {raw}, which is read "
                                "for its manifest and images: it would overwrite or join the "
                                "input (write the output elsewhere)")
        for raw, src in model_in:
            if (src.is_dir() and src in target.parents and target.is_file()
                    and target.suffix in MODEL_FILES):
                raise UserError(f"{label} would overwrite {target}, a file of the input "
                                f"{raw} (write the output elsewhere)")


def out_files(out: str | Path, option: str, names: list[str] | tuple[str, ...]
              ) -> dict[str, Path]:
    """``{"--out OUT/name": OUT/name}`` for :func:`check_writes_spare_inputs`."""
    return {f"{option} {Path(out) / n}": Path(out) / n for n in names}


def _is_media(path: Path) -> bool:
    from lorefd.data.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    return path.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
