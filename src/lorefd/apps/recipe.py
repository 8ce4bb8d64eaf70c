"""``lorefd recipe``: the shipped model, reproduced end to end from a folder of real faces.

Stages (each resumable: a finished stage is skipped, an interrupted training continues from
its last checkpoint, so a killed run re-run with the same arguments ends with the same model):

1. ``faces``    align the reals like ``lorefd preprocess`` (dlib landmarks, 5-point template);
2. ``split``    identity-disjoint train / validation / test; the faces bundled with lorefd (the
                demo set) always go to test, so nothing reported on them was trained on;
3. ``heldout``  validation and test sets: their reals and one fixed synthesised fake per real,
                both JPEG-recompressed alike (quality 90);
   ``videos``   with ``videos`` (a folder with ``real/`` clips): 32 frames of each clip cropped
                alike; a fifth of the *people* held out whole (false positives, the threshold
                rule), every second frame of the others' clips joins the training reals;
4. ``stage1``   the key-region MAE on the training reals (Section III-B);
5. ``baseline`` the plain detector on fakes synthesised on the fly (Table V);
6. ``lre``      the method (Section III-C), its frozen extractor = the trained baseline;
7. ``robust``   the detector with the better *validation* AUC, continued from its final
                weights with DeeperForensics-style degradations (``data.augment: robust``,
                :data:`ROBUST_STAGE`): a warm restart that trades little clean accuracy for
                scores that survive recompression, blur and noise;
8. ``evaluate`` each on the held-out test set (and ``--gan`` fakes if given);
9. ``export``   the ``robust`` detector if trained, else the better one, as fp16 ``model.lorefd``
                with its ONNX graph; with held-out clips its threshold is the rule's
                (:data:`FP_RULE`: at most 10 % of their frames called fake), else validation's.

``--stages`` runs a subset (the later stages need the earlier ones' outputs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lorefd.apps.common import (
    DETECTORS,
    MARGIN,
    Stopwatch,
    bundled_ids,
    held_out_set,
    split_by_identity,
    split_clips,
)
from lorefd.config import load_config
from lorefd.data.manifest import FAKE, REAL, Sample, read_manifest, write_manifest
from lorefd.errors import NothingProcessedError, OptionError
from lorefd.utils import atomic_write_json

log = logging.getLogger("lorefd")

STAGES = ("faces", "split", "heldout", "videos", "stage1", "baseline", "lre", "robust",
          "evaluate", "export")
FP_RULE = 0.10  # the exported threshold calls at most this share of held-out real frames fake
RUNS = (*DETECTORS, "robust")  # trained run folders, in training order
# the `robust` stage's overrides of the config (a fine-tune: new optimiser, lower peak lr)
ROBUST_STAGE = ("data.augment=robust", "train.lr=3e-4", "train.warmup_steps=100",
                "train.epochs=9")


def _gan_set(gan_dir: Path, reals: list[Sample], out: Path, size: int, margin: float = MARGIN,
             crop: str = "template", limit: int = 500) -> list[Sample]:
    """Whole-face GAN images (aligned like the reals) against as many held-out reals."""
    from lorefd.data.preprocess.runner import PreprocessOptions, run_preprocess

    root = out / "gan_src"
    (root / "fake").mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in Path(gan_dir).iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    for p in files:
        link = root / "fake" / p.name
        if not link.exists():
            link.symlink_to(p.resolve())
    opts = PreprocessOptions(size=size, margin=margin, crop=crop, progress=False)
    run_preprocess("folder", root, out / "gan_faces", opts)
    fakes = [s for s in read_manifest(out / "gan_faces" / "manifest.csv") if s.label == FAKE]
    for f in fakes:
        f.method = "stylegan"
    return reals[:len(fakes)] + fakes


def run_recipe(reals_root: str | Path, out_dir: str | Path, config: str = "cpu",
               overrides: list[str] | None = None, stages: list[str] | None = None,
               val_fraction: float = 0.08, test_fraction: float = 0.12,
               gan: str | Path | None = None, device: str | None = None,
               reserve_bundled: bool = True, margin: float = MARGIN, crop: str = "template",
               videos: str | Path | None = None) -> dict[str, Any]:
    """Run the recipe's ``stages`` (default all) into ``out_dir``; returns the summary.

    ``margin`` and ``crop``: how the faces are cropped (``lorefd preprocess --margin --crop``).

    ``reserve_bundled=False`` lets the bundled faces train (toy runs on the bundle only).
    ``videos``: a folder of real clips (``real/``) for the ``videos`` stage."""
    from lorefd.data.preprocess.runner import PreprocessOptions, run_preprocess
    from lorefd.engines.pretrain import pretrain
    from lorefd.engines.train import train
    from lorefd.evaluation.evaluate import evaluate
    from lorefd.models.export import export_bundle
    from lorefd.models.graph import add_graph

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = list(stages or STAGES)
    unknown = [s for s in todo if s not in STAGES]
    if unknown:
        raise OptionError(f"unknown recipe stage(s) {unknown}; stages: {', '.join(STAGES)}")
    cfg = load_config(config, overrides)
    size = cfg.data.image_size
    summary_path = out / "recipe.json"
    summary: dict[str, Any] = {}
    if summary_path.exists():
        import json

        summary = json.loads(summary_path.read_text())
    times = summary.setdefault("seconds", {})

    def save() -> None:
        summary["config"] = cfg.to_dict()
        atomic_write_json(summary_path, summary)

    timed = Stopwatch("recipe", times, after=save).run
    summary["crops"] = {"size": size, "margin": margin, "crop": crop}

    faces = out / "faces"
    if "faces" in todo:
        opts = PreprocessOptions(size=size, margin=margin, crop=crop, progress=False)
        res = timed("faces", lambda: run_preprocess("folder", reals_root, faces, opts))
        summary["faces"] = {k: getattr(res, k) for k in ("ok", "no_face", "failed")
                            if hasattr(res, k)}
    split_dir = out / "splits"
    if "split" in todo:
        reals = [s for s in read_manifest(faces / "manifest.csv") if s.label == REAL]
        parts = split_by_identity(reals, val_fraction, test_fraction, seed=cfg.train.seed,
                                  reserved=bundled_ids() if reserve_bundled else ())
        split_dir.mkdir(exist_ok=True)
        for name, rows in parts.items():
            write_manifest(split_dir / f"{name}_reals.csv", rows)
        summary["identities"] = {k: len(v) for k, v in parts.items()}
        atomic_write_json(summary_path, summary)
    if "heldout" in todo:
        for name, seed in (("val", 1), ("test", 2)):
            if not (out / name / "manifest.csv").exists():
                reals = read_manifest(split_dir / f"{name}_reals.csv")
                timed(f"heldout {name}", lambda r=reals, n=name, sd=seed: held_out_set(
                    r, out / n, seed=sd))
        if gan and not (out / "gan" / "manifest.csv").exists():
            reals = [s for s in read_manifest(out / "test" / "manifest.csv") if s.label == REAL]
            rows = timed("heldout gan", lambda: _gan_set(Path(gan), reals, out / "gan", size,
                                                           margin, crop))
            write_manifest(out / "gan" / "manifest.csv", rows)

    clips_held = out / "video_heldout.csv"
    if "videos" in todo and videos is not None:
        opts = PreprocessOptions(size=size, margin=margin, crop=crop, frames=32, progress=False)
        timed("videos", lambda: run_preprocess("folder", videos, out / "video_faces", opts))
        frames = [s for s in read_manifest(out / "video_faces" / "manifest.csv")
                  if s.label == REAL]
        train_frames, held = split_clips(frames)
        write_manifest(split_dir / "train_video_frames.csv", train_frames)
        write_manifest(clips_held, held)
        summary["videos"] = {"train_clips": len({s.video_id for s in train_frames}),
                             "train_frames": len(train_frames),
                             "heldout_clips": len({s.video_id for s in held}),
                             "heldout_frames": len(held)}
        atomic_write_json(summary_path, summary)
    train_reals = (read_manifest(split_dir / "train_reals.csv")
                   if (split_dir / "train_reals.csv").exists() else [])
    if (split_dir / "train_video_frames.csv").exists():
        train_reals += read_manifest(split_dir / "train_video_frames.csv")
    if "stage1" in todo and not (out / "stage1" / "summary.json").exists():
        summary["stage1"] = timed("stage1", lambda: pretrain(
            cfg, train_reals, out / "stage1", resume=True, device=device))
    for name in DETECTORS:
        if name not in todo or (out / name / "summary.json").exists():
            continue
        extra = [f"detector.name={name}", *_extractor(cfg, out, name)]
        dcfg = load_config(config, list(overrides or []) + extra)
        val = read_manifest(out / "val" / "manifest.csv")
        summary[name] = timed(name, lambda d=dcfg, n=name, v=val: train(
            d, train_reals, v, out / "stage1" if n == "lre" else None, out / n, resume=True,
            device=device))
    if "robust" in todo and not (out / "robust" / "summary.json").exists():
        start = choose_detector(out)
        rcfg = load_config(config, list(overrides or []) + [
            f"detector.name={start}", f"train.init={out / start / 'last'}", *ROBUST_STAGE,
            *_extractor(cfg, out, start)])
        val = read_manifest(out / "val" / "manifest.csv")
        summary["robust"] = timed("robust", lambda: train(
            rcfg, train_reals, val, out / "stage1" if start == "lre" else None, out / "robust",
            resume=True, device=device))
    if "evaluate" in todo:
        sets = {"test": out / "test" / "manifest.csv", "gan": out / "gan" / "manifest.csv"}
        metrics = summary.setdefault("metrics", {})
        for name in RUNS:
            if not (out / name / "best").exists():
                continue
            for set_name, manifest in sets.items():
                if manifest.exists():
                    metrics.setdefault(name, {})[set_name] = timed(
                        f"evaluate {name} {set_name}", lambda n=name, s=set_name, m=manifest:
                        evaluate(out / n / "best", read_manifest(m), out / n / f"eval_{s}",
                                 device=device))
    if "export" in todo:
        best = "robust" if (out / "robust" / "summary.json").exists() else choose_detector(out)
        summary["shipped"] = best
        bundle = out / "model.lorefd"
        timed("export", lambda: export_bundle(out / best, bundle, half=True))
        rule = (timed("threshold", lambda: fp_threshold(bundle, read_manifest(clips_held)))
                if clips_held.exists() else None)
        if rule:
            summary["threshold"] = rule
        timed("graph", lambda: add_graph(bundle, threshold=rule and rule["threshold"],
                                          threshold_rule=rule and rule["rule"]))
    atomic_write_json(summary_path, summary)
    return summary


def fp_threshold(bundle: Path, reals: list[Sample], fpr: float = FP_RULE) -> dict[str, Any]:
    """The threshold that calls at most ``fpr`` of these real frames fake (their quantile),
    scored as the bundle scores (its flip, its weights' precision)."""
    import numpy as np

    from lorefd.evaluation.evaluate import score_samples
    from lorefd.models.bundle import load_bundle

    p, _ = score_samples(load_bundle(bundle).detector, reals)
    p = p[np.isfinite(p)]
    if not p.size:
        raise NothingProcessedError("no held-out real video frame could be scored")
    thr = float(np.quantile(p, 1 - fpr))
    clips = len({s.video_id for s in reals})
    return {"threshold": thr, "fpr": fpr, "frames": int(p.size), "clips": clips,
            "rule": f"at most {fpr:.0%} of the frames of {clips} held-out real clips "
                    "called fake"}


def _extractor(cfg: Any, out: Path, name: str) -> list[str]:
    """The method's frozen feature extractor (Eq. 2): its ImageNet weights when the config
    starts from them (the paper's ImageNet Xception), else the trained baseline's weights (a
    from-scratch run has no better features)."""
    if name != "lre" or cfg.detector.pretrained:
        return []
    return [f"detector.extractor_weights={out / 'baseline' / 'best'}"]


def choose_detector(out: Path, names: tuple[str, ...] = DETECTORS) -> str:
    """The trained run among ``names`` with the higher validation AUC (never the test set's)."""
    import json

    aucs = {}
    for name in names:
        path = out / name / "summary.json"
        if path.exists():
            aucs[name] = json.loads(path.read_text()).get("best_auc") or 0.0
    if not aucs:
        raise FileNotFoundError(f"{out}: no trained detector to export (run the baseline stage)")
    return max(aucs, key=lambda n: (aucs[n], n == "lre"))


__all__ = ["FP_RULE", "ROBUST_STAGE", "RUNS", "STAGES", "choose_detector", "fp_threshold",
           "run_recipe"]
