"""How much a model's score moves when the same photo is found and cropped again at another size.

    python scripts/crop_jitter.py [--sizes 1024 1000] NAME=MODEL [NAME=MODEL ...]

Each of the 160 bundled real faces (256 px) is upscaled to every ``--sizes`` side (bicubic) and
scored as ``lorefd detect`` scores a photo (face found on the 640-px copy, 68 landmarks on the
full image, the model's own alignment and crop). The face is the same; only the face detector's
box and the landmarks move a little with the resolution. Reports, per model, the median, 95th
percentile and largest ``|P(fake) difference|`` between the first size and each other one: a
model whose score moves by more than its decisions can bear is reading the crop, not the face.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

FACES = Path(__file__).resolve().parents[1] / "src" / "lorefd" / "assets" / "faces" / "real"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 1000])
    ap.add_argument("--json", default=None, help="append the results as JSON lines")
    ap.add_argument("models", nargs="+", metavar="NAME=MODEL")
    args = ap.parse_args()

    from lorefd.data.images import load_rgb
    from lorefd.data.preprocess.crops import FacePipeline
    from lorefd.models.graph import load_runtime_model

    files = sorted(FACES.glob("*.jpg"))
    for spec in args.models:
        name, path = spec.split("=", 1)
        bundle = load_runtime_model(path, runtime="onnx", threads=1)
        faces = FacePipeline.from_bundle(bundle)
        probs = np.full((len(files), len(args.sizes)), np.nan)
        for i, f in enumerate(files):
            rgb = load_rgb(f)
            for j, side in enumerate(args.sizes):
                big = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
                found, _ = faces.faces(big)
                if found:
                    crop = faces.crop(big, found[0]).image
                    probs[i, j] = float(bundle.detector.predict_proba(crop[None])[0])
        row = {"model": name, "path": path, "sizes": args.sizes, "faces": len(files)}
        for j, side in enumerate(args.sizes[1:], 1):
            d = np.abs(probs[:, j] - probs[:, 0])
            d = d[np.isfinite(d)]
            row[f"{args.sizes[0]}_vs_{side}"] = {
                "n": int(d.size), "median": float(np.median(d)),
                "p95": float(np.percentile(d, 95)), "max": float(d.max())}
        print(json.dumps(row))
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
