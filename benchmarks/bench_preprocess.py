"""Sampled frames per second of ``lorefd preprocess`` vs the naive way, on 720p and 1080p h264.

Ours: PyAV decode-and-skip, dlib HOG on a downscaled frame (first frame) then on a small region
around the tracked face, 68 landmarks on full resolution, 5-point alignment, PNG crops.
Naive (DeepfakeBench-style): OpenCV reads every frame, dlib HOG + landmarks on the
full-resolution frame of each sampled frame, same alignment and crop writing.
Both use the same number of worker processes (one video per task).

    python benchmarks/bench_preprocess.py [--workers 2] [--videos 2] [--seconds 8]
        [--frames 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

# This checkout's src/ and tests/ first, also for the worker processes (forkserver).
_HERE = Path(__file__).resolve().parents[1]
_PATHS = [str(_HERE / "src"), str(_HERE / "tests")]
sys.path[:0] = _PATHS
os.environ["PYTHONPATH"] = os.pathsep.join(_PATHS + [os.environ.get("PYTHONPATH", "")])

from media import make_video, stills  # noqa: E402

from lorefd.data.landmarks import LandmarkDetector  # noqa: E402
from lorefd.data.preprocess.align import align_face  # noqa: E402
from lorefd.data.preprocess.frames import sample_indices  # noqa: E402
from lorefd.data.preprocess.runner import (  # noqa: E402
    PreprocessOptions,
    pool_context,
    run_preprocess,
    write_image_atomic,
    write_npy_atomic,
)

RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}
_NAIVE: LandmarkDetector | None = None


def make_videos(root: Path, size: tuple[int, int], n: int, seconds: float, fps: int,
                distinct: int = 2) -> None:
    """``n`` moving-face h264 videos under ``root/real`` (face about 45% of the height):
    ``distinct`` encoded ones, copied to reach ``n`` (encoding 1080p is slow)."""
    made = []
    for k in range(min(n, distinct)):
        made.append(make_video(root / "real" / f"v{k}.mp4", stills(1, 20 + k), seconds=seconds,
                               fps=fps, size=size, seed=k, face_frac=0.45))
    for k in range(len(made), n):
        shutil.copyfile(made[k % len(made)], root / "real" / f"v{k}.mp4")


def _naive_init() -> None:
    global _NAIVE
    cv2.setNumThreads(1)
    _NAIVE = LandmarkDetector(max_side=0)


def naive_video(path: str, out: str, frames: int) -> int:
    """DeepfakeBench-style: read all frames with OpenCV, full-resolution HOG on sampled ones."""
    cap = cv2.VideoCapture(path)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    keep = set(sample_indices(total, frames))
    done, index = 0, -1
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        index += 1
        if index not in keep:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = _NAIVE.detect(rgb, max_side=0)
        done += 1
        if faces:
            crop, pts, _ = align_face(rgb, faces[0].landmarks, 224)
            stem = Path(out) / f"{Path(path).stem}_{index:06d}"
            write_image_atomic(stem.with_suffix(".png"), crop)
            write_npy_atomic(stem.with_suffix(".npy"), pts)
    cap.release()
    return done


def run_naive(root: Path, out: Path, workers: int, frames: int) -> tuple[int, float]:
    videos = sorted(str(p) for p in (root / "real").glob("*.mp4"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=pool_context(),
                             initializer=_naive_init) as pool:
        n = sum(pool.map(naive_video, videos, [str(out)] * len(videos), [frames] * len(videos)))
    return n, time.perf_counter() - t0


def run_ours(root: Path, out: Path, workers: int, frames: int) -> tuple[int, float]:
    opts = PreprocessOptions(frames=frames, workers=workers, progress=False)
    t0 = time.perf_counter()
    summary = run_preprocess("folder", root, out, opts)
    return summary.frames_sampled, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--videos", type=int, default=8,
                    help="videos per resolution (fixed costs such as starting the worker "
                         "processes are included, so few videos understate throughput)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--resolutions", default="720p,1080p")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    import logging

    logging.getLogger("lorefd").setLevel(logging.ERROR)
    # Start the worker server (it imports lorefd once) before timing anything, so neither
    # pipeline pays for it; each run still pays for its own pool and detector loading.
    with ProcessPoolExecutor(1, mp_context=pool_context()) as pool:
        pool.submit(os.getpid).result()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        for name in args.resolutions.split(","):
            root = Path(tmp) / name
            make_videos(root, RESOLUTIONS[name], args.videos, args.seconds, args.fps)
            n_ours, t_ours = run_ours(root, Path(tmp) / f"{name}_ours", args.workers, args.frames)
            n_naive, t_naive = run_naive(root, Path(tmp) / f"{name}_naive", args.workers,
                                         args.frames)
            results.append({
                "resolution": name, "videos": args.videos,
                "video_frames": round(args.seconds * args.fps), "sampled_frames": n_ours,
                "ours_s": round(t_ours, 2), "ours_fps": round(n_ours / t_ours, 1),
                "naive_s": round(t_naive, 2), "naive_fps": round(n_naive / t_naive, 1),
                "speedup": round((n_ours / t_ours) / (n_naive / t_naive), 2),
            })
    print(f"\nworkers={args.workers}, {args.videos} videos x {args.seconds:g} s @ {args.fps} fps, "
          f"{args.frames} sampled frames per video, cpu_count={os.cpu_count()}\n")
    print("| resolution | sampled frames | ours (frames/s) | naive full-res HOG (frames/s) "
          "| speedup |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['resolution']} | {r['sampled_frames']} | {r['ours_fps']} | "
              f"{r['naive_fps']} | {r['speedup']}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results},
                                              indent=2))


if __name__ == "__main__":
    main()
