"""Small helpers shared by every layer: logging, seeding, atomic file writes."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger("lorefd")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (pytest and notebooks swap it)."""

    @property
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """One plain format for every command; idempotent."""
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def seed_everything(seed: int) -> None:
    import torch  # lazily: preprocessing workers never need torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success rename it onto ``path``.

    A killed process leaves at most a ``.tmp`` file behind, never a half-written ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_path
        # mkstemp makes 0600, and writers that recreate the file (safetensors) keep it so:
        # give the finished file the usual mode
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any, allow_nan: bool = True) -> None:
    """``obj`` as indented JSON; ``allow_nan=False``: strict JSON (a NaN raises ValueError)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str,
                                       allow_nan=allow_nan))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one line (flushed) to a JSON-lines log such as ``metrics.jsonl``."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=float) + "\n")
        fh.flush()


def pick_device(name: str | None = None) -> torch.device:
    import torch

    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            from lorefd.errors import DeviceError

            raise DeviceError(f"--device {name} asked for, but CUDA is not available")
        try:
            return torch.device(name)
        except RuntimeError as exc:
            from lorefd.errors import DeviceError

            raise DeviceError(f"--device {name}: {exc}") from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
