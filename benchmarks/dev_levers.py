"""Score trained models on the real-deepfake dev set and the synthetic held-out test, for the
levers table in the README (docs/levers.md).

    python benchmarks/dev_levers.py --dev CROPS_ROOT --test TEST_MANIFEST \
        [--reals-held HELD_REAL_VIDEO_MANIFEST] --out levers.json NAME=MODEL [NAME=MODEL ...]

CROPS_ROOT holds one crop folder per dev subset, made at the models' crop parameters (all
models here share them): ``lorefd preprocess folder DEV/SUBSET --out CROPS_ROOT/SUBSET
--size 128 --margin 0.1 --frames 32``. Per
model: video- and frame-level AUC with bootstrap intervals per subset, the video AUC under
each frame aggregation, the synthetic test AUC, and the share of held-out real video frames
called fake (false positives at the model's threshold).
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
    ap.add_argument("--subsets", default="celebdf,celebdf_c23")
    ap.add_argument("--out", required=True)
    ap.add_argument("models", nargs="+", metavar="NAME=MODEL")
    args = ap.parse_args()

    from lorefd.data.manifest import load_samples
    from lorefd.evaluation.evaluate import evaluate, score_samples
    from lorefd.models.bundle import load_model

    out = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for spec in args.models:
        name, model = spec.split("=", 1)
        t0 = time.perf_counter()
        row: dict = {"model": model}
        for sub in args.subsets.split(","):
            m = evaluate(model, load_samples(Path(args.dev) / sub))
            o = m["overall"]
            row[sub] = {"video_auc": o["video"]["auc"], "video_ci": o["video"]["auc_ci"],
                        "frame_auc": o["frame"]["auc"], "frame_ci": o["frame"]["auc_ci"],
                        "aggregations": {k: v["auc"] for k, v in m["aggregations"].items()}}
        t = evaluate(model, load_samples(args.test))["overall"]["frame"]
        row["synthetic_test"] = {"auc": t["auc"], "ci": t["auc_ci"]}
        if args.reals_held:
            loaded = load_model(model)
            p, _ = score_samples(loaded.detector, load_samples(args.reals_held))
            row["real_video_fp"] = float(np.nanmean(p >= loaded.threshold))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        out[name] = row
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(name, json.dumps({k: v for k, v in row.items() if k != "model"}))


if __name__ == "__main__":
    main()
