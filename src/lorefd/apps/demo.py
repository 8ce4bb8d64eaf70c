"""``lorefd demo``: the whole method end to end on the bundled real faces, no deepfake data.

1. align the bundled FFHQ faces like ``lorefd preprocess`` (dlib landmarks, 5-point template);
2. split them by identity into train / validation / test;
3. stage 1: the key-region MAE on the training reals (Section III-B);
4. stage 2: the reconstruction-guided detector and the plain Xception baseline (Section III-C,
   Table V), both trained on fakes synthesised on the fly from the training reals;
5. evaluate both on the held-out identities: their reals and fixed synthesised fakes;
6. export the method as a ``.lorefd`` bundle and run ``detect`` with heatmaps on test faces;
7. write ``report.md`` and a self-contained ``report.html``.

Every number in the report is measured in this run; nothing is copied from the paper.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lorefd.apps.common import (
    BUNDLED_FACES,
    DETECTORS,
    MARGIN,
    Stopwatch,
    held_out_set,
    split_by_identity,
)
from lorefd.config import Config, load_config
from lorefd.data.manifest import REAL, read_manifest, write_manifest
from lorefd.data.preprocess.runner import PreprocessOptions, run_preprocess
from lorefd.engines.detect import DetectOptions, detect_paths
from lorefd.engines.pretrain import pretrain
from lorefd.engines.train import train
from lorefd.evaluation.evaluate import evaluate
from lorefd.evaluation.explain import explain_figure
from lorefd.evaluation.figures import reconstruct_figure, roc_figure, training_curves
from lorefd.evaluation.report import Report
from lorefd.metrics import at_chance
from lorefd.models.bundle import shipped_bundle
from lorefd.models.export import export_bundle
from lorefd.utils import atomic_write_json
from lorefd.version import __version__

log = logging.getLogger("lorefd")

SHIPPED = "shipped"
LABELS = {"lre": "LRE (ours, Eq. 2 attention), trained here",
          "baseline": "Xception baseline, trained here",
          SHIPPED: "the model shipped with lorefd (MODEL.md)"}

# --quick: the same pipeline, small enough for the test suite (well under 2 minutes).
QUICK_OVERRIDES = [
    "mae.encoder_depth=2", "mae.decoder_depth=1", "pretrain.max_steps=15",
    "pretrain.batch_size=16", "train.epochs=1", "train.iters_per_epoch=4",
    "train.batch_size=8",
]


def demo_config(quick: bool, overrides: list[str] | None = None) -> Config:
    return load_config("demo", (QUICK_OVERRIDES if quick else []) + list(overrides or []))


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False,
             overrides: list[str] | None = None, faces: str | Path = BUNDLED_FACES,
             device: str | None = None) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns the summary (also ``summary.json``)."""
    out = Path(out_dir)
    if (out / "summary.json").exists() or (out / "stage1").exists():
        raise FileExistsError(f"{out} already holds a demo run; choose another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(quick, overrides)
    clock = Stopwatch("demo")
    t_start = time.perf_counter()

    # 1. align like `lorefd preprocess` (crops stored at 2x the model size for the figures).
    # The bundled faces are tight FFHQ crops: a 0.1 margin keeps the aligned crop inside them
    # (the default 0.25 would pad black borders). The bundle records both for `detect`.
    opts = PreprocessOptions(size=2 * cfg.data.image_size, margin=MARGIN, progress=False)
    clock.run("preprocess (dlib landmarks + alignment)",
              lambda: run_preprocess("folder", faces, out / "faces", opts))
    crops = [s for s in read_manifest(out / "faces" / "manifest.csv") if s.label == REAL]
    if quick:
        crops = crops[:48]
    splits = split_by_identity(crops, val=0.125, test=0.25, seed=cfg.train.seed)
    for name, rows in splits.items():
        write_manifest(out / f"{name}_reals.csv", rows)
    log.info("identities: %s", {k: len(v) for k, v in splits.items()})

    # 2. held-out evaluation sets (fixed fakes), made before training sees anything
    val = clock.run("synthesise validation fakes",
                    lambda: held_out_set(splits["val"], out / "val", seed=1))
    test = clock.run("synthesise test fakes",
                     lambda: held_out_set(splits["test"], out / "test", seed=2))

    # 3. stage 1 on the training reals
    stage1 = clock.run("stage 1: key-region MAE", lambda: pretrain(
        cfg, splits["train"], out / "stage1", device=device))

    # 4. stage 2: method and baseline, fakes synthesised on the fly
    runs, metrics = {}, {}
    for name in DETECTORS:
        extra = [f"detector.name={name}", "train.fakes=synth"]
        if name == "lre":
            extra.append(f"detector.extractor_weights={out / 'baseline' / 'best'}")
        dcfg = demo_config(quick, list(overrides or []) + extra)
        runs[name] = clock.run(f"stage 2: train {name}", lambda dcfg=dcfg, name=name: train(
            dcfg, splits["train"], val, out / "stage1", out / name, device=device))
        metrics[name] = clock.run(f"evaluate {name}", lambda name=name: evaluate(
            out / name / "best", test, out / name / "eval", device=device))
    # the trained model shipped in the package, on the same held-out faces (the recipe that
    # made it kept every bundled face out of its training and model selection)
    shipped = shipped_bundle()
    if shipped is not None:
        metrics[SHIPPED] = clock.run("evaluate the shipped model", lambda: evaluate(
            shipped, test, out / SHIPPED / "eval", device=device))

    # 5. figures, bundle, detect
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    test_reals = [s.path for s in test if s.label == REAL][:3]
    test_fakes = [s.path for s in test if s.label != REAL][:3]
    clock.run("figures", lambda: (
        reconstruct_figure(out / "stage1", test_reals + test_fakes, fig_dir / "reconstruction.png",
                           device=device),
        explain_figure(out / "lre" / "best", test_reals + test_fakes, fig_dir / "attention.png",
                       device=device or "cpu"),
        detectors_roc({n: out / n / "eval" for n in (*DETECTORS, SHIPPED)
                    if (out / n / "eval").exists()}, fig_dir / "roc.png")))
    bundle = out / "model.lorefd"
    clock.run("export bundle", lambda: export_bundle(  # float16: half the size, same verdicts
        out / "lre", bundle, preprocess={"size": opts.size, "margin": opts.margin}, half=True))
    detections = clock.run("detect with heatmaps", lambda: detect_paths(
        [test_reals[0], test_fakes[0]], bundle,
        DetectOptions(heatmap_dir=fig_dir / "heatmaps", device=device)))
    shipped_detections = None
    if shipped is not None:
        shipped_detections = clock.run("detect with the shipped model", lambda: detect_paths(
            [*test_reals[:2], *test_fakes[:2]], shipped,
            DetectOptions(heatmap_dir=fig_dir / "heatmaps_shipped", device=device)))

    total = time.perf_counter() - t_start
    disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    summary = {"quick": quick, "seconds": total, "stages": clock.times, "disk_bytes": disk,
               "identities": {k: len(v) for k, v in splits.items()},
               "stage1": stage1, "train": runs, "metrics": metrics, "detect": detections,
               "detect_shipped": shipped_detections,
               "truth": {str(p): "real" for p in test_reals} | {str(p): "fake" for p in test_fakes},
               "config": cfg.to_dict(), "lorefd_version": __version__,
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    atomic_write_json(out / "summary.json", summary)
    training_curves({n: out / n for n in DETECTORS}, fig_dir / "training.png",
                    stage1=out / "stage1")
    write_report(out, summary, fig_dir)
    print(f"[demo] total: {total:.1f} s -> {out / 'report.html'}; {out} holds "
          f"{disk / 2**20:.0f} MiB (checkpoints with resume state; delete it when done)",
          flush=True)
    return summary


def detectors_roc(eval_dirs: dict[str, Path], out: Path) -> Path:
    """Frame-level ROC curves of several evaluated detectors on one plot."""
    import csv

    curves = []
    for name, d in eval_dirs.items():
        with open(d / "predictions.csv") as fh:
            rows = list(csv.DictReader(fh))
        curves.append((LABELS.get(name, name), np.array([int(r["label"]) for r in rows]),
                       np.array([float(r["prob_fake"]) for r in rows])))
    return roc_figure(curves, out, size=4.5, dpi=120)


def _metric(m: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(m, dict) or k not in m:
            return None
        m = m[k]
    return m


def _detect_examples(rep: Report, summary: dict[str, Any]) -> None:
    """``lorefd detect --heatmap`` on held-out faces, each caption with the ground truth and
    whether the verdict was right."""
    truth = summary.get("truth") or {}
    items = [(who, item) for who, key in (("the shipped model", "detect_shipped"),
                                          ("the method trained here", "detect"))
             for item in (summary.get(key) or {}).get("results", []) if item.get("heatmap")]
    if not items:
        return
    rep.heading("What lorefd detect shows (held-out test faces)")
    rep.text("Each face's heatmap from `lorefd detect --heatmap`: the map on the face, the verdict "
             "and what the colours mean in the strip below it.")
    for who, item in items:
        actual = truth.get(str(item["path"]))
        verdict, p = item.get("verdict"), item.get("p_fake")
        score = f"P(fake) {p:.2f} → {verdict}" if isinstance(p, float) else str(item["status"])
        right = "" if actual is None or verdict is None else (
            " (**right**)" if verdict == actual else " (**wrong**)")
        rep.figure(Path(item["heatmap"]), f"{actual or 'unlabelled'} face, {who}: {score}{right}",
                   width=256)


def write_report(out: Path, summary: dict[str, Any], fig_dir: Path) -> None:
    rep = Report("lorefd demo: trained without deepfake data")
    ids = summary["identities"]
    rep.text(f"Real FFHQ faces bundled with lorefd, split by identity: {ids['train']} train, "
             f"{ids['val']} validation, {ids['test']} test. Fakes are synthesised from the reals "
             "(self-blending, landmark face swaps, eye/nose/mouth blends); the test fakes are "
             "made from test identities only. Total time "
             f"{summary['seconds'] / 60:.1f} min{' (--quick)' if summary['quick'] else ''}.")
    rep.heading("Held-out test set (frame level)")
    header = ["detector", "AUC [95 % interval]", "verdict", "Acc (its threshold)",
              "best Acc (its threshold)", "EER", "AP"]
    names = [n for n in (SHIPPED, *reversed(DETECTORS)) if n in summary["metrics"]]
    rows = []
    for name in names:
        m = _metric(summary["metrics"][name], "overall", "frame") or {}
        ci = m.get("auc_ci")
        auc = (f"{m['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
               if isinstance(ci, list) and isinstance(m.get("auc"), float) else "n/a")
        chance = at_chance(m)
        verdict = ("n/a" if chance is None else "**at chance** (interval contains 0.5)"
                   if chance else "detects (interval above 0.5)" if ci[0] > 0.5
                   else "worse than chance")
        best = (f"{m['best_acc']:.3f} ({m['best_threshold']:.3f})"
                if isinstance(m.get("best_acc"), float) else "n/a")
        acc = (f"{m['acc']:.3f} ({m['threshold']:.3f})"
               if isinstance(m.get("acc"), float) and isinstance(m.get("threshold"), float)
               else _metric(m, "acc"))
        rows.append([LABELS[name], auc, verdict, acc, best, _metric(m, "eer"),
                     _metric(m, "ap")])
    rep.text("A result is at chance when the bootstrap 95 % interval of its AUC contains 0.5. "
             "Acc uses the model's own threshold (chosen on validation data); best Acc picks the "
             "threshold on the test set "
             "itself (an upper bound). The detectors trained here see 64-px faces for a few "
             "minutes; the shipped model was trained for hours by `lorefd recipe` (MODEL.md), "
             "with every face of this demo kept out of its training.")
    rep.table(header, rows)
    _detect_examples(rep, summary)
    methods = sorted({k for n in names
                      for k in (_metric(summary["metrics"][n], "per_method") or {})})
    if methods:
        rep.heading("AUC per kind of synthesised forgery (each vs the test reals)")
        rep.table(["detector", *methods], [
            [LABELS[n], *[_metric(summary["metrics"][n], "per_method", k, "frame", "auc")
                          for k in methods]]
            for n in names])
    if (fig_dir / "training.png").exists():
        rep.heading("Training curves")
        rep.figure(fig_dir / "training.png", "From each run's metrics.jsonl: stage-1 loss, "
                   "stage-2 training loss and validation AUC against the step (dashed: chance)")
    rep.heading("Time per stage (this machine)")
    rep.table(["stage", "seconds"], [[k, v] for k, v in summary["stages"].items()])
    for name, caption in [
        ("roc.png", "ROC curves on the held-out test set"),
        ("reconstruction.png", "Stage 1 (Fig. 4): test reals (top) and fakes, masked, "
                               "reconstructed, |difference|"),
        ("attention.png", "Stage 2 (Fig. 3): reconstruction and the Eq. 2 attention of each layer"),
    ]:
        if (fig_dir / name).exists():
            rep.figure(fig_dir / name, caption)
    rep.heading("This run")
    if summary.get("disk_bytes"):
        rep.text(f"The run's folder holds {summary['disk_bytes'] / 2**20:.0f} MiB, most of it the "
                 "training checkpoints (`best/` and `last/` with optimiser state, for `--resume`) "
                 "and `model.lorefd` (float16); delete the folder when done.")
    rep.text(f"lorefd {summary.get('lorefd_version', __version__)}, run on "
             f"{summary.get('date', 'unknown date')}; the configuration (configs/demo.yaml with "
             "the run's overrides; each detector adds detector.name and train.fakes=synth, "
             "the method also detector.extractor_weights, the baseline the demo trained):")
    if summary.get("config"):
        import yaml

        rep.code(yaml.safe_dump(summary["config"], sort_keys=False))
    rep.write(out)
