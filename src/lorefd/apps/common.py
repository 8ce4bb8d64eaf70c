"""What the workflows share: the bundled faces, the detectors they train, the crop margin of
FFHQ-style faces, the identity split, a stage clock and the held-out evaluation set."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from lorefd.data.images import load_rgb
from lorefd.data.manifest import REAL, Sample, read_manifest, write_manifest
from lorefd.data.perturb import jpeg as jpeg_roundtrip
from lorefd.data.synth.fakeset import write_fake_set

log = logging.getLogger("lorefd")

BUNDLED_FACES = Path(__file__).resolve().parents[1] / "assets" / "faces"
# The baseline first: offline there are no ImageNet weights, so the method's frozen feature
# extractor starts from the trained baseline (Section III-C asks for a pretrained extractor).
DETECTORS = ("baseline", "lre")
MARGIN = 0.1  # FFHQ-style tight crops: a wider template would pad black borders


def bundled_ids() -> set[str]:
    """File stems of the faces bundled with lorefd (the demo set)."""
    return {p.stem for p in (BUNDLED_FACES / "real").glob("*.jpg")}


def split_by_identity(samples: list[Sample], val: float, test: float, seed: int = 0,
                      reserved: Collection[str] = ()) -> dict[str, list[Sample]]:
    """Deterministic identity-disjoint split (identity = ``Sample.group``) by hashed id; the
    samples whose file stem is in ``reserved`` go to test whatever their hash."""
    out: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for s in samples:
        h = int(hashlib.sha1(f"{seed}:{s.group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if Path(s.video_id or s.path).name in reserved:
            split = "test"
        else:
            split = "test" if h < test else "val" if h < test + val else "train"
        s.split = split
        out[split].append(s)
    return out


def clip_person(video_id: str) -> str:
    """Who a real clip shows, so that one person's clips stay on one side of a split: a clip
    is its own person, but for the corpora whose names say who it is (MEAD's speaker codes,
    and the two Alexandria Ocasio-Cortez demo clips of SadTalker and V-Express)."""
    m = re.search(r"MEAD__([MW]\d{3})_", video_id)
    if m:
        return f"real/MEAD__{m.group(1)}"
    if "AlexandriaOcasioCortez" in video_id or "_AOC_" in video_id:
        return "real/AOC"
    return video_id


def split_clips(frames: list[Sample], held: float = 0.2, every: int = 2
                ) -> tuple[list[Sample], list[Sample]]:
    """Real video frames split by person: a fixed ``held`` share of the people (by hash) held
    out whole -- for false positives and the threshold rule -- and every ``every``-th frame of
    the others' clips for training (more frames of the same clips add no new faces)."""
    def unit(video_id: str) -> float:
        return int(hashlib.sha1(clip_person(video_id).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    train, held_out, seen = [], [], {}
    for s in frames:
        if unit(s.video_id) < held:
            held_out.append(s)
            continue
        k = seen[s.video_id] = seen.get(s.video_id, -1) + 1
        if k % every == 0:
            s.split = "train"
            train.append(s)
    return train, held_out


@dataclass
class Stopwatch:
    """Elapsed seconds of each named stage (added up when a stage runs again), printed as
    they finish; ``after`` runs after each stage (e.g. to save a summary)."""

    label: str
    times: dict[str, float] = field(default_factory=dict)
    after: Callable[[], None] | None = None

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t0
        self.times[name] = self.times.get(name, 0.0) + elapsed
        if self.after is not None:
            self.after()
        print(f"[{self.label}] {name}: {elapsed:.1f} s", flush=True)
        return result


def jpeg_reals(samples: list[Sample], out: Path, quality: int) -> list[Sample]:
    """JPEG round trip of the reals at ``quality``, matching the fakes' last step, so
    compression is no shortcut at evaluation."""
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for i, s in enumerate(samples):
        rgb = jpeg_roundtrip(load_rgb(s.path), quality)
        dest = out / f"{i:05d}_{Path(s.path).stem}.png"
        cv2.imwrite(str(dest), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        copies.append(Sample(path=str(dest), label=REAL, dataset=s.dataset, split=s.split,
                             video_id=s.video_id, landmarks=s.landmarks, method="real"))
    return copies


def held_out_set(reals: list[Sample], out: Path, seed: int, quality: int = 90) -> list[Sample]:
    """The reals of held-out identities plus one fixed synthesised fake of each (kinds in turn)."""
    summary = write_fake_set(reals, out / "fakes", per_image=1, seed=seed, jpeg=quality)
    fakes = read_manifest(out / "fakes" / "manifest.csv")
    for f in fakes:  # a fake is its own "video", never grouped with the real it came from
        f.video_id = f"{f.method}:{f.video_id}"
    samples = jpeg_reals(reals, out / "reals", quality) + fakes
    write_manifest(out / "manifest.csv", samples)
    log.info("held-out set %s: %d reals, %d fakes (%s)", out.name, len(reals), len(fakes),
             summary["ms_per_fake"])
    return samples


__all__ = ["BUNDLED_FACES", "DETECTORS", "MARGIN", "Stopwatch", "bundled_ids", "clip_person",
           "held_out_set", "jpeg_reals", "split_by_identity", "split_clips"]
