"""The manifest: one CSV row per face crop, the contract between preprocessing and training.

Paths in a manifest are stored relative to the manifest's folder (portable between machines)
and resolved to absolute paths when read. ``label`` is 0 for real, 1 for fake. ``landmarks``
names a ``.npy`` file of ``(68, 2)`` float32 points in crop pixel coordinates.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lorefd.data.images import is_image, walk_files
from lorefd.errors import UserError

log = logging.getLogger("lorefd")

MANIFEST_COLUMNS = [
    "path", "label", "dataset", "split", "video_id", "frame_index", "method", "compression",
    "source_id", "target_id", "box", "score", "landmarks",
]
REAL, FAKE = 0, 1
FAKE_FOLDER_NAMES = {"fake", "fakes", "manipulated", "synthesis", "forged"}
REAL_FOLDER_NAMES = {"real", "reals", "original", "pristine"}


class ManifestError(UserError, ValueError):
    """A manifest that cannot be used: missing columns or files, bad labels, empty selection."""


@dataclass
class Sample:
    """One face crop. ``landmarks`` is a path; ``points`` holds landmarks already in memory."""

    path: str
    label: int = REAL
    dataset: str = ""
    split: str = ""
    video_id: str = ""
    frame_index: int = -1
    method: str = ""
    compression: str = ""
    source_id: str = ""
    target_id: str = ""
    box: str = ""
    score: float | None = None
    landmarks: str = ""
    points: np.ndarray | None = field(default=None, repr=False, compare=False)

    def load_landmarks(self) -> np.ndarray | None:
        """``(68, 2)`` float32 landmarks, or None when the sample has none."""
        if self.points is not None:
            return self.points
        if not self.landmarks:
            return None
        pts = np.load(self.landmarks).astype(np.float32)
        if pts.shape != (68, 2):
            raise ManifestError(f"{self.landmarks}: expected (68, 2) landmarks, got {pts.shape}")
        return pts

    @property
    def group(self) -> str:
        """The id used for video-level aggregation (the file itself for still images)."""
        return self.video_id or self.path


def _resolve(base: Path, value: str) -> str:
    if not value:
        return ""
    p = Path(value)
    return str(p if p.is_absolute() else (base / p))


def _relative(base: Path, value: str) -> str:
    if not value:
        return ""
    try:
        return os.path.relpath(value, base)
    except ValueError:  # another drive on Windows
        return value


def read_manifest(path: str | Path) -> list[Sample]:
    """Read a manifest CSV into samples with absolute paths; raise :class:`ManifestError`."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    base = path.parent.resolve()
    samples: list[Sample] = []
    try:
        return _read_rows(path, base, samples)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not a text (UTF-8) CSV manifest ({exc.reason} at byte "
                            f"{exc.start})") from None


def _read_rows(path: Path, base: Path, samples: list[Sample]) -> list[Sample]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(f"{path}: missing columns {sorted(missing)}")
        for lineno, row in enumerate(reader, start=2):
            try:
                label = int(row["label"])
            except (TypeError, ValueError):
                raise ManifestError(f"{path}:{lineno}: label {row['label']!r} is not 0/1") from None
            if label not in (REAL, FAKE):
                raise ManifestError(f"{path}:{lineno}: label {label} is not 0 (real) or 1 (fake)")
            score = row.get("score") or ""
            samples.append(Sample(
                path=_resolve(base, row["path"]),
                label=label,
                dataset=row.get("dataset") or "",
                split=row.get("split") or "",
                video_id=row.get("video_id") or "",
                frame_index=int(row.get("frame_index") or -1),
                method=row.get("method") or "",
                compression=row.get("compression") or "",
                source_id=row.get("source_id") or "",
                target_id=row.get("target_id") or "",
                box=row.get("box") or "",
                score=float(score) if score else None,
                landmarks=_resolve(base, row.get("landmarks") or ""),
            ))
    return samples


def write_manifest(path: str | Path, samples: list[Sample]) -> None:
    """Write ``samples`` atomically, paths relative to the manifest's folder."""
    from lorefd.utils import atomic_path

    path = Path(path)
    base = path.parent.resolve()
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for s in samples:
            row = {k: v for k, v in dataclasses.asdict(s).items() if k in MANIFEST_COLUMNS}
            row["path"] = _relative(base, s.path)
            row["landmarks"] = _relative(base, s.landmarks)
            row["score"] = "" if s.score is None else f"{s.score:.4f}"
            writer.writerow(row)


def check_files(samples: list[Sample], what: str = "data") -> None:
    """Fail early, naming a few of the missing crops or landmark files."""
    missing = [s.path for s in samples if not os.path.isfile(s.path)]
    missing += [s.landmarks for s in samples if s.landmarks and not os.path.isfile(s.landmarks)]
    if missing:
        shown = ", ".join(missing[:3])
        raise ManifestError(f"{what}: {len(missing)} missing file(s), e.g. {shown}")


def filter_samples(samples: list[Sample], filters: list[str] | None) -> list[Sample]:
    """Keep samples matching every ``key=v1,v2`` filter (e.g. ``method=Deepfakes,real``).

    The value ``real`` for ``method`` also keeps real samples (their method is empty).
    """
    out = samples
    for item in filters or []:
        if "=" not in item:
            raise ManifestError(f"filter {item!r} is not key=value")
        key, raw = item.split("=", 1)
        if key not in MANIFEST_COLUMNS:
            raise ManifestError(f"filter on unknown column {key!r}")
        wanted = set(raw.split(","))
        out = [s for s in out if str(getattr(s, key)) in wanted
               or (key == "method" and "real" in wanted and s.label == REAL)]
    return out


def label_from_path(path: Path, root: Path) -> int | None:
    """0/1 from a ``real``/``fake`` folder anywhere under ``root``; None when neither."""
    for part in path.relative_to(root).parts[:-1]:
        low = part.lower()
        if low in FAKE_FOLDER_NAMES:
            return FAKE
        if low in REAL_FOLDER_NAMES:
            return REAL
    return None


def scan_folder(root: str | Path, default_label: int | None = REAL) -> list[Sample]:
    """Images under ``root`` (any depth, symbolic links to folders followed); label from
    ``real/`` / ``fake/`` folders. Dangling links are logged."""
    root = Path(root)
    samples = []
    files, broken = walk_files(root)
    if broken:
        log.warning("%s: %d dangling symbolic link(s) or unreadable folder(s) skipped, e.g. %s",
                    root, len(broken), broken[0])
    for p in files:
        if not is_image(p):
            continue
        label = label_from_path(p, root)
        if label is None:
            label = default_label
        if label is None:
            continue
        samples.append(Sample(path=str(p.resolve()), label=label, dataset=root.name,
                              video_id=p.stem))
    return samples


def load_samples(source: str | Path) -> list[Sample]:
    """Samples from a manifest CSV, a folder holding ``manifest.csv``, or a folder of images."""
    source = Path(source)
    if source.is_file():
        return read_manifest(source)
    if source.is_dir():
        if (source / "manifest.csv").is_file():
            return read_manifest(source / "manifest.csv")
        return scan_folder(source)
    raise ManifestError(f"no such manifest or folder: {source}")


def describe(samples: list[Sample]) -> str:
    """``'120 samples: 60 real, 60 fake (Deepfakes 30, FaceSwap 30)'``."""
    labels = Counter(s.label for s in samples)
    methods = Counter(s.method for s in samples if s.label == FAKE and s.method)
    text = f"{len(samples)} samples: {labels[REAL]} real, {labels[FAKE]} fake"
    if methods:
        text += " (" + ", ".join(f"{m} {n}" for m, n in sorted(methods.items())) + ")"
    return text


def preprocess_record(samples: list[Sample], max_folders: int = 8) -> dict[str, object] | None:
    """How the crops of ``samples`` were made, for ``lorefd export`` to reproduce.

    The options of the ``summary.json`` that ``lorefd preprocess`` wrote above the crops (crop
    ``size``, template ``margin``, face detector, ...), found from the first few crop folders
    upwards; else the crop side read from the first image's header (margin unknown); None
    when neither can be read.
    """
    seen: set[Path] = set()
    for s in samples:
        folder = Path(s.path).parent
        if folder in seen:
            continue
        seen.add(folder)
        if len(seen) > max_folders:
            break
        for parent in [folder, *folder.parents][:4]:
            summary = parent / "summary.json"
            if not summary.is_file():
                continue
            try:
                opts = json.loads(summary.read_text()).get("options") or {}
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(opts, dict) and "size" in opts and "margin" in opts:
                names = {"detector": "face_detector"}
                keys = ("size", "margin", "crop", "detector", "detect_side", "track_face_side",
                        "frames")
                return {names.get(k, k): opts[k] for k in keys if opts.get(k) is not None} | {
                    "source": str(summary)}
    for s in samples[:1]:
        try:
            from PIL import Image

            with Image.open(s.path) as img:
                w, h = img.size
        except (OSError, ValueError):
            return None
        return {"size": w, "source": f"crop size of {s.path}"} if w == h else None
    return None


def crop_mismatches(record: dict[str, object] | None, pre: dict[str, object]
                    ) -> tuple[list[str], list[str]]:
    """How crops made as ``record`` says (:func:`preprocess_record`) differ from the crops a
    model expects (its ``preprocess`` block): ``(errors, warnings)``.

    A different crop mode, template margin or face detector frames the face otherwise than in training
    (the shipped model scores chance on crops at preprocess's default margin 0.25): an error.
    A different crop side only changes the resampling to the model's input: a warning, as is
    a margin that cannot be read (crops without the ``summary.json`` of ``lorefd preprocess``).
    """
    errors: list[str] = []
    warnings: list[str] = []
    if record is None:
        return errors, ["the crops' parameters cannot be read (no summary.json of `lorefd "
                        "preprocess` above them): they are assumed to match the model's"]
    if "margin" in record and "margin" in pre:
        if abs(float(record["margin"]) - float(pre["margin"])) > 1e-6:  # type: ignore[arg-type]
            errors.append(f"template margin {record['margin']} (the model's: {pre['margin']})")
    elif "margin" in pre:
        warnings.append(f"the crops' template margin is unknown (the model's: {pre['margin']})")
    # a summary.json from before crop modes existed (it has a margin) means template crops;
    # crops known only by their side (no summary.json) may be either: a warning, as for margin
    model_mode = pre.get("crop", "template")
    if "crop" in record or "margin" in record:
        mode = record.get("crop", "template")
        if mode != model_mode:
            errors.append(f"crop mode {mode} (the model's: {model_mode})")
    elif model_mode != "template":
        warnings.append(f"the crops' crop mode is unknown (the model's: {model_mode})")
    if "face_detector" in record and record["face_detector"] != pre.get("face_detector"):
        errors.append(f"face detector {record['face_detector']} (the model's: "
                      f"{pre.get('face_detector')})")
    if "size" in record and "size" in pre and int(record["size"]) != int(pre["size"]):  # type: ignore[call-overload]
        warnings.append(f"crop side {record['size']} px (the model's: {pre['size']} px; "
                        "resized to the model's input either way)")
    return errors, warnings
