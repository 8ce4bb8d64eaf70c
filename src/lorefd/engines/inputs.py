"""What ``lorefd detect`` reads and where its heatmaps go.

:func:`collect_inputs` turns the path arguments into :class:`InputFile` items (folders walked
recursively); :func:`input_kind` and :func:`missing_reason` say what an item is, or why it
cannot be read. :class:`HeatmapNamer` names a heatmap after its input and claims the name on
disk (:func:`claim`), so that runs sharing a folder never overwrite each other.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lorefd.data.images import is_image, is_video, walk_files


@dataclass
class InputFile:
    """One file to process; ``rel`` is its path under the folder argument (for heatmaps)."""

    path: Path
    rel: Path


# where the heatmap of an input goes: (input, extension) -> a claimed path
HeatmapPaths = Callable[[InputFile, str], Path]


def collect_inputs(paths: list[str | Path]) -> list[InputFile]:
    """Files of the arguments: a file as is, a folder recursively (hidden entries skipped,
    symbolic links to folders followed), in argument order then sorted; a missing path or a
    dangling link is kept (reported as unreadable)."""
    out: list[InputFile] = []
    for p in map(Path, paths):
        if p.is_dir():
            files, broken = walk_files(p)
            for f in sorted(files + broken):
                out.append(InputFile(f, Path(p.name or "input") / f.relative_to(p)))
        else:
            out.append(InputFile(p, Path(p.name)))
    return out


def input_kind(path: Path) -> str | None:
    """``"image"``, ``"video"`` (by extension) or None."""
    return "image" if is_image(path) else "video" if is_video(path) else None


def missing_reason(path: Path) -> str:
    """Why ``path`` (which does not exist) cannot be read: a link loop, a dangling link, none."""
    if not path.is_symlink():
        return "not found"
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 on a loop
        return "symbolic link loop (it points back to itself)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (it points back to itself)"
    return "broken symbolic link (target missing)"


def claim(path: Path) -> bool:
    """Create ``path`` empty if nothing is there (``O_EXCL``: atomic even against another
    process writing into the same folder); False when it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


@dataclass
class HeatmapNamer:
    """Heatmap paths mirroring the inputs' folders: ``DIR/<folder>/<stem>_heatmap.png``.

    A name is claimed on disk (an empty file, created exclusively) before it is returned, so
    two inputs of one run, or two runs writing into the same folder at once or one after the
    other, never overwrite each other's heatmaps: a taken name gets ``_<ext>`` then ``_2``,
    ``_3``... (the report's ``heatmap`` says which file is whose).
    """

    root: Path
    used: set[Path] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)  # several workers at once

    def candidates(self, item: InputFile, ext: str) -> Iterator[Path]:
        parent, stem = self.root / item.rel.parent, item.rel.stem
        yield parent / f"{stem}_heatmap{ext}"
        yield parent / f"{stem}_{item.rel.suffix.lstrip('.')}_heatmap{ext}"
        n = 2
        while True:
            yield parent / f"{stem}_{n}_heatmap{ext}"
            n += 1

    def __call__(self, item: InputFile, ext: str) -> Path:
        with self.lock:
            for path in self.candidates(item, ext):
                if path not in self.used and claim(path):
                    self.used.add(path)
                    return path
        raise AssertionError("unreachable")  # candidates() never ends


__all__ = ["HeatmapNamer", "HeatmapPaths", "InputFile", "claim", "collect_inputs", "input_kind",
           "missing_reason"]
