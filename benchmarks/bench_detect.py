"""End-to-end speed of ``lorefd detect`` on single-face photos: decode, face, model.

    python benchmarks/bench_detect.py [--model BUNDLE] [--n 40] [--side 256 --side 1024]

Photos are bundled real faces (256 px FFHQ crops), also upscaled to each ``--side`` and
written as JPEG (q 90), so the decoder and the face detector see realistic sizes. One torch
thread (``--threads``): the goal is >= 10 photos/s on one core. The model is loaded once, before
timing (as ``lorefd serve`` does); the time covers everything else.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media import stills  # noqa: E402

from lorefd.engines.detect import detect_paths  # noqa: E402
from lorefd.models.bundle import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle (default: the shipped model)")
    ap.add_argument("--n", type=int, default=40, help="photos per size")
    ap.add_argument("--side", type=int, action="append", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="append the result as a JSON line")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    bundle = load_model(args.model)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in args.side or [256, 1024]:
            files = []
            for i, p in enumerate(stills(args.n)):
                img = cv2.imread(str(p))
                img = cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC)
                files.append(Path(tmp) / f"{side}_{i:03d}.jpg")
                cv2.imwrite(str(files[-1]), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            detect_paths(files[:2], bundle, device="cpu")  # warm-up (lazy imports, dlib load)
            t0 = time.perf_counter()
            report = detect_paths(files, bundle, device="cpu")
            dt = time.perf_counter() - t0
            ok = sum(r["status"] == "ok" for r in report["results"])
            results.append({"side": side, "photos": len(files), "ok": ok, "seconds": round(dt, 2),
                            "photos_per_s": round(len(files) / dt, 2),
                            "threads": args.threads, "detector": bundle.detector.name})
            print(json.dumps(results[-1]))
    if args.json:
        with open(args.json, "a") as fh:
            for r in results:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
