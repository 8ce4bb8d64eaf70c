"""Score trained models on the real-deepfake dev set and the synthetic held-out test, for the
levers table in the README (docs/levers.md).

    python scripts/dev_levers.py --dev CROPS_ROOT --test TEST_MANIFEST \
        [--reals-held HELD_REAL_VIDEO_MANIFEST] --out levers.json NAME=MODEL [NAME=MODEL ...]

CROPS_ROOT holds one crop folder per dev subset, made at the models' crop parameters (all
models here share them): ``lorefd preprocess folder DEV/SUBSET --out CROPS_ROOT/SUBSET
--size 128 --margin 0.1 --frames 32``. Per
model: video- and frame-level AUC with bootstrap intervals per subset, the video AUC under
each frame aggregation, the synthetic test AUC, and the share of held-out real video frames
called fake (false positives at the model's threshold).

With ``--reals-held``, also the **false-positive rule** (``--fpr``, default 0.10): the
threshold that calls at most that share of the held-out real clips' frames fake (their
quantile), its false positives estimated honestly by two-fold cross-validation over *people*
(the threshold chosen on one half of the people, counted on the other), and the share of the
dev fakes' frames it calls fake (detection rate) per subset.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--reals-held", default=None)
    ap.add_argument("--subsets", default="celebdf,celebdf_c23,dfdc")
    ap.add_argument("--fpr", type=float, default=0.10)
    ap.add_argument("--out", required=True)
    ap.add_argument("models", nargs="+", metavar="NAME=MODEL")
    args = ap.parse_args()

    from lorefd.apps.common import clip_person
    from lorefd.data.manifest import FAKE, load_samples
    from lorefd.evaluation.evaluate import evaluate, score_samples
    from lorefd.models.bundle import load_bundle

    out = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for spec in args.models:
        name, model = spec.split("=", 1)
        t0 = time.perf_counter()
        row: dict = {"model": model}
        loaded = load_bundle(model)
        fake_scores = {}
        for sub in args.subsets.split(","):
            samples = load_samples(Path(args.dev) / sub)
            m = evaluate(loaded.detector, samples)
            p, _ = score_samples(loaded.detector, samples)
            fake_scores[sub] = p[[s.label == FAKE for s in samples]]
            o = m["overall"]
            row[sub] = {"video_auc": o["video"]["auc"], "video_ci": o["video"]["auc_ci"],
                        "frame_auc": o["frame"]["auc"], "frame_ci": o["frame"]["auc_ci"],
                        "aggregations": {k: v["auc"] for k, v in m["aggregations"].items()}}
        t = evaluate(loaded.detector, load_samples(args.test))["overall"]["frame"]
        row["synthetic_test"] = {"auc": t["auc"], "ci": t["auc_ci"]}
        if args.reals_held:
            held = load_samples(args.reals_held)
            p, _ = score_samples(loaded.detector, held)
            row["real_video_fp"] = float(np.nanmean(p >= loaded.threshold))
            row["fp_rule"] = fp_rule(p, [clip_person(s.video_id) for s in held], fake_scores,
                                     args.fpr)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        out[name] = row
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(name, json.dumps({k: v for k, v in row.items() if k != "model"}))


def fp_rule(real: np.ndarray, people: list[str], fakes: dict[str, np.ndarray], fpr: float
            ) -> dict:
    """The threshold calling ``fpr`` of the real frames fake; two-fold (by person) estimate
    of its false positives on people it was not chosen on; detection rate per dev subset."""
    import hashlib

    ok = np.isfinite(real)
    real, people = real[ok], [q for q, k in zip(people, ok, strict=True) if k]
    fold = np.array([int(hashlib.sha1(q.encode()).hexdigest(), 16) % 2 for q in people])
    thr = float(np.quantile(real, 1 - fpr))
    folds = []
    for k in (0, 1):
        t_k = float(np.quantile(real[fold == k], 1 - fpr))
        folds.append(float(np.mean(real[fold != k] >= t_k)))
    return {"fpr": fpr, "threshold": thr, "fp_cv": float(np.mean(folds)), "fp_folds": folds,
            "people": len(set(people)),
            "detection": {sub: float(np.nanmean(f >= thr)) for sub, f in fakes.items()}}


if __name__ == "__main__":
    main()
