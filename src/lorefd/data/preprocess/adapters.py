"""Dataset layouts -> lists of media items with labels, splits and identities.

Partial downloads are normal: every adapter indexes what exists and reports what is missing
(``DatasetIndex.missing``) instead of failing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lorefd.data.images import is_image, is_video, walk_files
from lorefd.data.manifest import FAKE, FAKE_FOLDER_NAMES, REAL, REAL_FOLDER_NAMES, label_from_path
from lorefd.errors import OptionError

FFPP_METHODS = ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter"]
DFD_METHOD = "DeepFakeDetection"
COMPRESSIONS = ["c0", "c23", "c40"]
SPLITS = ["train", "val", "test"]
# FF++ ships uncompressed videos as "raw"; papers call them c0.
COMPRESSION_FOLDERS = {"c0": ("raw", "c0"), "c23": ("c23",), "c40": ("c40",)}
SPLIT_FOLDER_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                      "validation": "val", "dev": "val", "test": "test", "testing": "test"}


@dataclass
class MediaItem:
    """One video (or still image) to preprocess, with everything the manifest needs."""

    path: Path
    label: int
    dataset: str
    video_id: str
    split: str = ""
    method: str = ""
    compression: str = ""
    source_id: str = ""
    target_id: str = ""

    @property
    def is_image(self) -> bool:
        return is_image(self.path)


@dataclass
class DatasetIndex:
    items: list[MediaItem] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _videos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_video(p)
                  and not p.name.startswith("."))


def _rel_id(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def load_ffpp_splits() -> dict[str, list[tuple[str, str]]]:
    """The official FF++ splits shipped with lorefd: ``{split: [(a, b), ...]}``."""
    base = resources.files("lorefd") / "assets" / "ffpp_splits"
    return {s: [tuple(pair) for pair in json.loads((base / f"{s}.json").read_text())]
            for s in SPLITS}


def ffpp_split_maps() -> tuple[dict[str, str], dict[str, str]]:
    """``(id -> split, "a_b" -> split)`` from the official pairs (both orders of a pair)."""
    ids, pairs = {}, {}
    for split, plist in load_ffpp_splits().items():
        for a, b in plist:
            ids[a] = ids[b] = split
            pairs[f"{a}_{b}"] = pairs[f"{b}_{a}"] = split
    return ids, pairs


def _compression_dirs(base: Path, compressions: list[str]) -> list[tuple[str, Path]]:
    """``[(compression, <base>/<folder>/videos)]`` for the requested compressions present."""
    found = []
    for comp in compressions:
        for name in COMPRESSION_FOLDERS.get(comp, (comp,)):
            if (base / name / "videos").is_dir():
                found.append((comp, base / name / "videos"))
                break
    return found


def _present_compressions(root: Path) -> list[str]:
    seen = set()
    for comp, names in COMPRESSION_FOLDERS.items():
        for name in names:
            if any(root.glob(f"*_sequences/*/{name}/videos")):
                seen.add(comp)
    return [c for c in COMPRESSIONS if c in seen]


def _selected(values: Iterable[str] | None, default: list[str]) -> list[str]:
    return list(values) if values else list(default)


def _compressions(values: Iterable[str] | None, root: Path) -> list[str]:
    """Requested compressions (``raw`` is spelled ``c0``), default every one present."""
    return [("c0" if c.lower() == "raw" else c.lower())
            for c in _selected(values, _present_compressions(root))]


def index_ffpp(root: Path, compressions: list[str] | None = None,
               methods: list[str] | None = None, dataset: str = "ffpp") -> DatasetIndex:
    """FaceForensics++: ``original_sequences/youtube`` + ``manipulated_sequences/<method>``.

    A real video ``a`` and a fake ``a_b`` belong to the official split of their pair; ids in no
    official pair get split ``""`` (kept by ``--split all`` only). For a fake ``a_b`` (FF++
    names fakes target_source), ``target_id=a`` and ``source_id=b``; a real has both ``= a``.
    """
    index = DatasetIndex()
    ids, pairs = ffpp_split_maps()
    comps = _compressions(compressions, root)
    if not comps:
        index.missing.append(f"no {{raw,c23,c40}}/videos folders under {root}")
        return index
    methods = _selected(methods, FFPP_METHODS)
    if DFD_METHOD in methods:
        index.missing.append("DeepFakeDetection is the DFD dataset: use `lorefd preprocess dfd`")
        methods = [m for m in methods if m != DFD_METHOD]
    real_base = root / "original_sequences" / "youtube"
    for comp, folder in _compression_dirs(real_base, comps):
        for p in _videos(folder):
            index.items.append(MediaItem(p, REAL, dataset, _rel_id(p, root), ids.get(p.stem, ""),
                                         "", comp, p.stem, p.stem))
    present = {c for c, _ in _compression_dirs(real_base, comps)}
    index.missing += [f"original_sequences/youtube/{c}" for c in comps if c not in present]
    for method in methods:
        base = root / "manipulated_sequences" / method
        found = _compression_dirs(base, comps)
        present = {c for c, _ in found}
        index.missing += [f"manipulated_sequences/{method}/{c}" for c in comps if c not in present]
        for comp, folder in found:
            for p in _videos(folder):
                target, _, source = p.stem.partition("_")
                index.items.append(MediaItem(p, FAKE, dataset, _rel_id(p, root),
                                             pairs.get(p.stem, ""), method, comp, source, target))
    return index


_DFD_FAKE = re.compile(r"^(?P<target>[^_]+)_(?P<source>[^_]+)__")
_DFD_REAL = re.compile(r"^(?P<id>[^_]+)__")


def index_dfd(root: Path, compressions: list[str] | None = None,
              methods: list[str] | None = None, dataset: str = "dfd") -> DatasetIndex:
    """DeepFakeDetection: ``original_sequences/actors`` + ``manipulated_sequences/
    DeepFakeDetection``. DFD has no official split; every video gets split ``test`` (the paper
    uses it for cross-dataset tests). Fakes are named ``<target>_<source>__<scene>__<code>``."""
    index = DatasetIndex()
    comps = _compressions(compressions, root)
    if not comps:
        index.missing.append(f"no {{raw,c23,c40}}/videos folders under {root}")
        return index
    for label, base in ((REAL, root / "original_sequences" / "actors"),
                        (FAKE, root / "manipulated_sequences" / DFD_METHOD)):
        found = _compression_dirs(base, comps)
        present = {c for c, _ in found}
        index.missing += [f"{base.relative_to(root).as_posix()}/{c}" for c in comps
                          if c not in present]
        for comp, folder in found:
            for p in _videos(folder):
                if label == FAKE:
                    m = _DFD_FAKE.match(p.stem)
                    target, source = (m["target"], m["source"]) if m else ("", "")
                else:
                    m = _DFD_REAL.match(p.stem)
                    target = source = m["id"] if m else ""
                index.items.append(MediaItem(p, label, dataset, _rel_id(p, root), "test",
                                             DFD_METHOD if label == FAKE else "", comp,
                                             source, target))
    return index


CELEBDF_FOLDERS = {"Celeb-real": REAL, "YouTube-real": REAL, "Celeb-synthesis": FAKE}
CELEBDF_TEST_LIST = "List_of_testing_videos.txt"


def index_celebdf(root: Path, compressions: list[str] | None = None,
                  methods: list[str] | None = None, dataset: str = "celebdf") -> DatasetIndex:
    """Celeb-DF-v2: ``Celeb-real``, ``YouTube-real``, ``Celeb-synthesis``; test = the videos in
    ``List_of_testing_videos.txt``, train = the rest. Fakes ``idA_idB_NNNN`` put B's face on
    A's video: ``target_id=idA``, ``source_id=idB``."""
    index = DatasetIndex()
    test: set[str] = set()
    listing = root / CELEBDF_TEST_LIST
    if listing.is_file():
        for line in listing.read_text(errors="replace").splitlines():
            parts = line.split()
            if parts:
                test.add(Path(parts[-1]).with_suffix("").as_posix())
    else:
        index.missing.append(f"{CELEBDF_TEST_LIST} (every video gets split train)")
    for folder, label in CELEBDF_FOLDERS.items():
        videos = _videos(root / folder)
        if not videos:
            index.missing.append(folder)
        for p in videos:
            vid = _rel_id(p, root)
            parts = p.stem.split("_")
            if label == FAKE and len(parts) >= 3:
                target, source = parts[0], parts[1]
            else:
                target = source = parts[0] if folder == "Celeb-real" else p.stem
            index.items.append(MediaItem(p, label, dataset, vid,
                                         "test" if vid in test else "train",
                                         "Celeb-synthesis" if label == FAKE else "", "",
                                         source, target))
    return index


def index_folder(root: Path, compressions: list[str] | None = None,
                 methods: list[str] | None = None, dataset: str = "") -> DatasetIndex:
    """Any tree with ``real/`` and ``fake/`` folders (any depth) of images or videos.

    A ``train``/``val``/``test`` folder on the path sets the split; a folder between ``fake/``
    and the file (``fake/<method>/...``) names the method. Symbolic links to folders are
    followed; dangling links are listed under ``missing``.
    """
    index = DatasetIndex()
    dataset = dataset or root.name
    files, broken = walk_files(root)
    for p in broken:
        index.missing.append(f"{p.relative_to(root)} (dangling symbolic link or unreadable "
                             "folder)")
    for p in files:
        rel_parts = p.relative_to(root).parts
        if not (is_video(p) or is_image(p)):
            continue
        label = label_from_path(p, root)
        if label is None:
            continue
        lowered = [part.lower() for part in rel_parts[:-1]]
        split = next((SPLIT_FOLDER_NAMES[x] for x in lowered if x in SPLIT_FOLDER_NAMES), "")
        method = ""
        if label == FAKE:
            after = next(i for i, x in enumerate(lowered) if x in FAKE_FOLDER_NAMES)
            rest = [rel_parts[i] for i in range(after + 1, len(rel_parts) - 1)
                    if lowered[i] not in SPLIT_FOLDER_NAMES]
            method = rest[0] if rest else ""
        if methods and label == FAKE and method not in methods:
            continue
        index.items.append(MediaItem(p, label, dataset, _rel_id(p, root), split, method))
    if not any(i.label == REAL for i in index.items):
        index.missing.append("real/ (no real images or videos found)")
    if not any(i.label == FAKE for i in index.items):
        index.missing.append("fake/ (no fake images or videos found)")
    return index


def _unique_video_ids(items: list[MediaItem], root: Path) -> None:
    """``x.mp4`` and ``x.avi`` side by side would share ``video_id`` ``x``: keep the suffix."""
    counts = Counter(i.video_id for i in items)
    for item in items:
        if counts[item.video_id] > 1:
            item.video_id = item.path.relative_to(root).as_posix()


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def guess_layout(root: str | Path) -> str | None:
    """The dataset layout of ``root`` itself (``ffpp``, ``dfd``, ``celebdf``, ``folder``), or
    None: FF++/DFD from ``original_sequences``/``manipulated_sequences``, Celeb-DF from its
    ``Celeb-real``/``Celeb-synthesis`` folders, ``folder`` from a ``real/`` or ``fake/`` child
    (or one under a ``train``/``val``/``test`` child)."""
    root = Path(root)
    names = {p.name: p for p in _children(root)}
    if "original_sequences" in names or "manipulated_sequences" in names:
        dfd = ((root / "original_sequences" / "actors").is_dir()
               or (root / "manipulated_sequences" / DFD_METHOD).is_dir())
        return "dfd" if dfd else "ffpp"
    if any(name in names for name in CELEBDF_FOLDERS):
        return "celebdf"
    labelled = REAL_FOLDER_NAMES | FAKE_FOLDER_NAMES
    if any(n.lower() in labelled for n in names):
        return "folder"
    for n, p in names.items():
        if n.lower() in SPLIT_FOLDER_NAMES and any(c.name.lower() in labelled
                                                   for c in _children(p)):
            return "folder"
    return None


def find_datasets(root: str | Path) -> list[tuple[str, str, Path]]:
    """``(name, layout, folder)`` of every dataset under ``root``: ``root`` itself when it has
    a layout (:func:`guess_layout`), else each child folder that has one (a root of several
    sets, e.g. one per source or compression, each scored on its own). Empty when none."""
    root = Path(root)
    kind = guess_layout(root)
    if kind is not None:
        return [(root.name, kind, root)]
    found = []
    for child in _children(root):
        kind = guess_layout(child)
        if kind is not None:
            found.append((child.name, kind, child))
    return found


ADAPTERS: dict[str, Callable[..., DatasetIndex]] = {
    "ffpp": index_ffpp, "dfd": index_dfd, "celebdf": index_celebdf, "folder": index_folder,
}


def index_dataset(kind: str, root: str | Path, split: str = "all",
                  compressions: list[str] | None = None,
                  methods: list[str] | None = None) -> DatasetIndex:
    """Index ``root`` with the ``kind`` adapter, keep ``split`` (``all`` keeps everything)."""
    if kind not in ADAPTERS:
        raise OptionError(f"unknown dataset layout {kind!r}: one of {sorted(ADAPTERS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root is not a folder: {root}")
    index = ADAPTERS[kind](root, compressions=compressions, methods=methods)
    _unique_video_ids(index.items, root)
    if split != "all":
        present = sorted({i.split or "none" for i in index.items})
        index.items = [i for i in index.items if i.split == split]
        if not index.items and present:
            index.missing.append(f"no video in split {split!r} (splits present: "
                                 f"{', '.join(present)})")
    return index
