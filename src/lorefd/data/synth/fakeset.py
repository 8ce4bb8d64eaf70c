"""Writing a set of synthesised fakes (PNG + mask + landmarks) and its manifest.

Fake ``k`` of real ``i`` is a pure function of ``(seed, i, k)``, whatever ``workers``.
Kinds are taken in turn (real ``i``, fake ``k`` gets ``kinds[(i * per_image + k) % len]``) so
the set is balanced. Reals that cannot be used (no landmarks, unreadable) are skipped and
counted in ``synth.json``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lorefd.data.images import ImageLoadError
from lorefd.data.manifest import FAKE, REAL, ManifestError, Sample, write_manifest
from lorefd.data.perturb import jpeg as jpeg_roundtrip
from lorefd.data.synth import KINDS, SynthError
from lorefd.data.synth.dataset import SynthDataset, usable_reals
from lorefd.errors import OptionError
from lorefd.utils import atomic_path, atomic_write_json

log = logging.getLogger("lorefd")

_DATASET: SynthDataset | None = None  # per worker process


def detect_missing_landmarks(samples: list[Sample], out: Path) -> None:
    """Fill ``landmarks`` of samples that have none (dlib), saved as ``.npy`` under ``out``."""
    from lorefd.data.landmarks import LandmarkCache

    cache = LandmarkCache(out / "landmark_cache")
    folder = out / "landmarks" / "real"
    for i, s in enumerate(samples):
        if s.landmarks or s.label != REAL:
            continue
        try:
            lm = cache.get(s.path)
        except ImageLoadError as exc:
            log.warning("synth: %s", exc)
            continue
        if lm is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{i:06d}_{Path(s.path).stem}.npy"
        np.save(dest, lm.astype(np.float32))
        s.landmarks = str(dest)


def _init_worker(dataset: SynthDataset) -> None:
    global _DATASET
    _DATASET = dataset
    cv2.setNumThreads(1)


def _write_png(path: Path, rgb_or_gray: np.ndarray) -> None:
    img = rgb_or_gray if rgb_or_gray.ndim == 2 else cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"cannot encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def make_one(job: tuple[int, int, str, int, str, int | None]) -> dict:
    """Synthesise and write fake ``k`` of real ``i``; a dict for the manifest (or the error)."""
    i, k, kind, seed, out, quality = job
    ds = _DATASET
    assert ds is not None
    real = ds.samples[i]
    name = f"{i:06d}_{Path(real.path).stem}_{k}"
    t0 = time.perf_counter()
    try:
        result, donor = ds.make_fake(i, np.random.default_rng([seed, i, k]), kind=kind)
    except (SynthError, ImageLoadError) as exc:
        return {"i": i, "k": k, "error": str(exc)}
    ms = (time.perf_counter() - t0) * 1000
    image = result.image if quality is None else jpeg_roundtrip(result.image, quality)
    root = Path(out)
    path = root / "fake" / kind / f"{name}.png"
    mask_path = root / "masks" / kind / f"{name}.png"
    lm_path = root / "landmarks" / kind / f"{name}.npy"
    _write_png(path, image)
    _write_png(mask_path, np.round(result.mask * 255).astype(np.uint8))
    lm_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(lm_path, ds.points[i])
    target = real.group
    source = ds.samples[donor].group if donor >= 0 else target
    sample = Sample(
        path=str(path), label=FAKE, dataset="synth", split=real.split,
        video_id=target if source == target else f"{target}_{source}",
        frame_index=real.frame_index, method=kind,
        compression="" if quality is None else f"q{quality}",
        source_id=source, target_id=target, box=real.box, score=real.score,
        landmarks=str(lm_path))
    return {"i": i, "k": k, "sample": sample, "ms": ms, "mask": str(mask_path),
            "meta": {**result.meta, "path": str(path.relative_to(root))}}


def copy_reals(samples: list[Sample], out: Path) -> list[Sample]:
    """Copies of the reals (image + landmarks) under ``out/real``, as new samples."""
    copies = []
    for i, s in enumerate(samples):
        name = f"{i:06d}_{Path(s.path).name}"
        dest = out / "real" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s.path, dest)
        lm_dest = out / "landmarks" / "real_copy" / f"{Path(name).stem}.npy"
        lm_dest.parent.mkdir(parents=True, exist_ok=True)
        np.save(lm_dest, s.load_landmarks())
        copies.append(Sample(**{**{f: getattr(s, f) for f in (
            "label", "dataset", "split", "video_id", "frame_index", "method", "compression",
            "source_id", "target_id", "box", "score")}, "path": str(dest),
            "landmarks": str(lm_dest)}))
    return copies


def write_fake_set(samples: list[Sample], out: str | Path, kinds: list[str] | None = None,
                   per_image: int = 1, seed: int = 0, workers: int = 1, limit: int | None = None,
                   jpeg: int | None = None, reals_mode: str = "none",
                   detect_landmarks: bool = False) -> dict[str, Any]:
    """Synthesise ``per_image`` fakes of each real in ``samples`` into ``out``; the summary.

    Writes ``out/fake/KIND/*.png``, ``out/masks/KIND/*.png``, ``out/landmarks/KIND/*.npy``,
    ``out/manifest.csv`` (label 1, method = kind; with the reals when ``reals_mode`` is
    ``ref`` or ``copy``), ``out/meta.jsonl`` and ``out/synth.json``.
    Raises :class:`~lorefd.errors.OptionError` for bad arguments and
    :class:`~lorefd.data.manifest.ManifestError` when no real has landmarks.
    """
    kinds = list(kinds or KINDS)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise OptionError(f"unknown kind(s) {bad}; choose from {', '.join(KINDS)}")
    if per_image < 1:
        raise OptionError("per_image must be >= 1")
    if jpeg is not None and not 1 <= jpeg <= 100:
        raise OptionError("jpeg quality must be in 1..100")
    if reals_mode not in ("none", "ref", "copy"):
        raise OptionError(f"reals_mode {reals_mode!r} is not none, ref or copy")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = [s for s in samples if s.label == REAL]
    if detect_landmarks:
        detect_missing_landmarks(samples, out)
    usable, _ = usable_reals(samples)
    if not usable:
        raise ManifestError(f"none of the {len(samples)} reals has landmarks "
                            "(compute them with dlib: --detect-landmarks)")
    dataset = SynthDataset(usable[:limit], kinds=kinds, seed=seed)
    n, per = len(dataset.samples), per_image
    jobs = [(i, k, dataset.kinds[(i * per + k) % len(dataset.kinds)], seed, str(out), jpeg)
            for i in range(n) for k in range(per)]
    log.debug("synth: %d fakes (%s) from %d reals -> %s", len(jobs), ",".join(dataset.kinds),
             n, out)
    t0 = time.perf_counter()
    if workers > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(dataset,)) as pool:
            results = list(pool.imap_unordered(make_one, jobs, chunksize=4))
    else:
        _init_worker(dataset)
        results = [make_one(job) for job in jobs]
    elapsed = time.perf_counter() - t0
    results.sort(key=lambda r: (r["i"], r["k"]))
    done = [r for r in results if "sample" in r]
    errors = [r for r in results if "error" in r]
    for r in errors[:5]:
        log.warning("synth: skipped real %d fake %d: %s", r["i"], r["k"], r["error"])
    rows = [r["sample"] for r in done]
    if reals_mode == "ref":
        rows = list(dataset.samples) + rows
    elif reals_mode == "copy":
        rows = copy_reals(dataset.samples, out) + rows
    write_manifest(out / "manifest.csv", rows)
    with atomic_path(out / "meta.jsonl") as tmp, open(tmp, "w") as fh:
        for r in done:
            fh.write(json.dumps(r["meta"], default=float) + "\n")
    ms = {k: [r["ms"] for r in done if r["sample"].method == k] for k in dataset.kinds}
    summary = {
        "reals": n, "fakes": len(done), "skipped": len(errors), "kinds": dataset.kinds,
        "per_image": per, "seed": seed, "jpeg": jpeg, "reals_mode": reals_mode,
        "seconds": round(elapsed, 2),
        "ms_per_fake": {k: round(float(np.mean(v)), 2) for k, v in ms.items() if v},
    }
    atomic_write_json(out / "synth.json", summary)
    log.info("synth: wrote %d fakes (%d skipped) in %.1fs; ms/fake %s; manifest %s",
             len(done), len(errors), elapsed, summary["ms_per_fake"], out / "manifest.csv")
    return summary
