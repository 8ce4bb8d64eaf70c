"""dlib's HOG face detector (lorefd's) against OpenCV's Haar cascade (weights in the wheel).

    python benchmarks/bench_face_detectors.py [--videos DIR] [--json OUT]

On the 160 bundled faces upscaled to 1024 px, and on frames of the videos in ``--videos``
(default ``../shared/data/real_videos`` when present): time to find the faces on the 640-px
copy both use (1 thread), the share of dlib's face (the largest) that the cascade finds (box
IoU >= 0.5), and what replacing dlib's box would do downstream. The 68-point predictor is
trained on dlib's boxes, so the cascade's box is first mapped onto dlib's convention (a
scale and shift per coordinate, fitted on the first half of the faces), then the points, the
aligned crop and the shipped model's P(fake) are compared with dlib's own on the second half.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media import stills  # noqa: E402

SIDE = 640


def iou(a, b) -> float:  # noqa: ANN001
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


def images(videos: Path | None, per_video: int = 4) -> list[tuple[str, np.ndarray]]:
    out = [(f"face{i}", cv2.cvtColor(cv2.resize(cv2.imread(str(p)), (1024, 1024),
                                                interpolation=cv2.INTER_CUBIC),
                                     cv2.COLOR_BGR2RGB))
           for i, p in enumerate(stills(160))]
    if videos is not None and videos.is_dir():
        from lorefd.data.preprocess.frames import probe_video, read_frames, sample_indices

        for v in sorted(videos.iterdir()):
            try:
                wanted = sample_indices(probe_video(v).frames, per_video)
                for idx, frame in read_frames(v, wanted):
                    out.append((f"{v.name}#{idx}", frame))
            except Exception as exc:  # noqa: BLE001 - a video that will not decode is skipped
                print(f"skipped {v.name}: {exc}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_videos"
    ap.add_argument("--videos", type=Path, default=default if default.is_dir() else None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cv2.setNumThreads(1)

    import lorefd
    from lorefd.data.landmarks import Face
    from lorefd.data.preprocess.crops import FacePipeline

    model = lorefd.Model(None, runtime="onnx", threads=1)
    pipe = FacePipeline.from_bundle(model.bundle)
    dlib_det = pipe.backend
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    rows = []
    for name, rgb in images(args.videos):
        h, w = rgb.shape[:2]
        scale = min(1.0, SIDE / max(h, w))
        t0 = time.perf_counter()
        faces = dlib_det.detect(rgb, max_side=SIDE)
        t_dlib = time.perf_counter() - t0
        t0 = time.perf_counter()
        small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        found = cascade.detectMultiScale(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), 1.1, 5,
                                         minSize=(40, 40))
        t_haar = time.perf_counter() - t0
        boxes = [(x / scale, y / scale, (x + bw) / scale, (y + bh) / scale)
                 for x, y, bw, bh in (found if len(found) else [])]
        row = {"name": name, "dlib_ms": t_dlib * 1000, "haar_ms": t_haar * 1000,
               "dlib_faces": len(faces), "haar_faces": len(boxes)}
        if faces:
            ref = faces[0]
            best = max(boxes, key=lambda b: iou(b, ref.box), default=None)
            row["matched"] = best is not None and iou(best, ref.box) >= 0.5
            if row["matched"]:
                row["dlib_box"], row["haar_box"] = list(ref.box), list(best)
                row["rgb"], row["landmarks"] = rgb, ref.landmarks
        rows.append(row)

    matched = [r for r in rows if r.get("matched")]
    half = len(matched) // 2
    fit, test = matched[:half], matched[half:]
    # per coordinate: dlib = a * haar + b * haar_side + c (least squares on the first half)
    def features(r: dict, k: int) -> list[float]:
        hb = r["haar_box"]
        return [hb[k], hb[2] - hb[0], 1.0]

    coefs = [np.linalg.lstsq(np.array([features(r, k) for r in fit]),
                             np.array([r["dlib_box"][k] for r in fit]), rcond=None)[0]
             for k in range(4)]
    errs, dscore = [], []
    for r in test:
        mapped = tuple(float(coefs[k] @ features(r, k)) for k in range(4))
        pts = dlib_det.landmarks_in_box(r["rgb"], mapped)
        iod = np.linalg.norm(r["landmarks"][36:42].mean(0) - r["landmarks"][42:48].mean(0))
        errs.append(float(np.linalg.norm(pts - r["landmarks"], axis=1).mean() / iod))
        crops = [pipe.crop(r["rgb"], Face(box=b, score=1.0, landmarks=lm))
                 for b, lm in ((tuple(r["dlib_box"]), r["landmarks"]), (mapped, pts))]
        p = model.bundle.detector.predict_proba(np.stack([c.image for c in crops]))
        dscore.append(abs(float(p[0] - p[1])))
    faces = [r for r in rows if r["name"].startswith("face")]
    frames = [r for r in rows if not r["name"].startswith("face")]
    summary = {
        "images": {"faces_1024": len(faces), "video_frames": len(frames)},
        "ms_per_image": {k: {"dlib": float(np.median([r["dlib_ms"] for r in s])),
                             "haar": float(np.median([r["haar_ms"] for r in s]))}
                         for k, s in (("faces_1024", faces), ("video_frames", frames)) if s},
        "dlib_found": sum(r["dlib_faces"] > 0 for r in rows),
        "haar_finds_dlibs_face": len(matched),
        "haar_extra_boxes": sum(max(0, r["haar_faces"] - r["dlib_faces"]) for r in rows),
        "held_out": len(test),
        "landmark_error_over_eye_distance": {"median": float(np.median(errs)),
                                             "p95": float(np.percentile(errs, 95))},
        "p_fake_change": {"median": float(np.median(dscore)),
                          "p95": float(np.percentile(dscore, 95))},
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
