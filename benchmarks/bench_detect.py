"""``lorefd detect`` speed with both runtimes side by side (ONNX Runtime and PyTorch).

    python benchmarks/bench_detect.py [--model BUNDLE] [--n 40] [--threads 1] [--json F]

In one run, for each runtime: the cold start of ``lorefd detect photo.jpg`` (a fresh process:
wall time and peak RSS from ``/usr/bin/time``, and of all its processes together), warm photos/s on single-face photos at 256 and
1024 px (bundled real faces, upscaled, JPEG q 90; model loaded once, as ``lorefd serve``
does), a 720p video with ``--frames 32`` (warm, end to end), and ``serve`` latency p50/p95 for
one photo (in-process HTTP client). The model: a bundle with an ONNX graph (default: the
shipped model). Warm means loaded once, as :class:`lorefd.Model` and ``serve`` keep it: the
network *and* the face detector (about 0.5 s to load); photos/s is also measured
with ``--workers`` files at once (``detect --workers``, each worker one runtime thread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media import make_video, stills  # noqa: E402

import lorefd  # noqa: E402

RUNTIMES = ("onnx", "torch")


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants now (Linux /proc), in kB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(ln.split()[1] for ln in status.splitlines()
                              if ln.startswith("VmRSS:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def cold_start(photo: Path, runtime: str, model: str | None, threads: int) -> dict[str, float]:
    """``lorefd detect photo --runtime R`` in a fresh process: wall seconds; peak RSS MB of
    its largest process (``/usr/bin/time``) and of all its processes together (the landmark
    model loads in a child process; sampled every 5 ms)."""
    cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "lorefd.cli", "detect",
           str(photo), "--runtime", runtime, "--threads", str(threads), "-q"]
    if model:
        cmd += ["--model", model]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kb(proc.pid))
        time.sleep(0.005)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-2000:]}")
    wall, rss = err.strip().splitlines()[-1].split()
    return {"cold_s": float(wall), "cold_rss_mb": round(int(rss) / 1024, 1),
            "cold_rss_all_mb": round(peak / 1024, 1)}


def photos(tmp: Path, side: int, n: int) -> list[Path]:
    files = []
    for i, p in enumerate(stills(n)):
        img = cv2.resize(cv2.imread(str(p)), (side, side), interpolation=cv2.INTER_CUBIC)
        files.append(tmp / f"{side}_{i:03d}.jpg")
        cv2.imwrite(str(files[-1]), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return files


def serve_latency(bundle: object, photo: Path, runtime: str, threads: int,
                  n: int = 20) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from lorefd.apps.serve import ServeOptions, Service, create_app

    t0 = time.perf_counter()
    opts = ServeOptions(runtime=runtime, threads=threads)
    service = Service.load(bundle.path, opts)  # type: ignore[attr-defined]
    ready = time.perf_counter() - t0
    try:
        client = TestClient(create_app(service))
        files = {"files": (photo.name, photo.read_bytes(), "image/jpeg")}
        client.post("/v1/detect", files=files)  # warm-up
        times = []
        for _ in range(n):
            t = time.perf_counter()
            assert client.post("/v1/detect", files=files).status_code == 200
            times.append(time.perf_counter() - t)
    finally:
        service.close()
    return {"serve_load_s": round(ready, 2),
            "serve_p50_ms": round(float(np.percentile(times, 50)) * 1000, 1),
            "serve_p95_ms": round(float(np.percentile(times, 95)) * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle with a graph (default: shipped)")
    ap.add_argument("--n", type=int, default=40, help="photos per size")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of the runtime")
    ap.add_argument("--workers", type=int, default=2,
                    help="files at once for the photos/s rows with workers (1 thread each)")
    ap.add_argument("--json", default=None, help="append the results as JSON lines")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES),
                    help="comma-separated runtimes to measure (default onnx,torch)")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sets = {side: photos(tmp, side, args.n) for side in (256, 1024)}
        video = make_video(tmp / "clip720.mp4", stills(1), seconds=10.0, fps=12,
                           size=(1280, 720))
        for runtime in args.runtimes.split(","):
            row: dict[str, object] = {"runtime": runtime, "threads": args.threads,
                                      "workers": args.workers}
            row.update(cold_start(sets[256][0], runtime, args.model, args.threads))
            model = lorefd.Model(args.model, runtime=runtime, threads=args.threads)
            pooled = lorefd.Model(args.model, runtime=runtime, threads=1)
            assert getattr(model.bundle.detector, "runtime", "torch") == runtime
            for side, files in sets.items():
                for name, m, workers in (("", model, 1), ("_workers", pooled, args.workers)):
                    m.detect(files[:4], workers=workers)  # warm-up: imports, face detectors
                    t0 = time.perf_counter()
                    report = m.detect(files, workers=workers)
                    dt = time.perf_counter() - t0
                    assert all(r["status"] == "ok" for r in report["results"])
                    row[f"photos_per_s_{side}{name}"] = round(len(files) / dt, 2)
            model.detect([video], frames=32)
            t0 = time.perf_counter()
            rep = model.detect([video], frames=32)
            dt = time.perf_counter() - t0
            row["video720_32fr_s"] = round(dt, 2)
            row["video_frames_per_s"] = round(rep["results"][0]["frames"]["count"] / dt, 1)
            row.update(serve_latency(model.bundle, sets[256][0], runtime, args.threads))
            results.append(row)
            print(json.dumps(row), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(json.dumps({"machine": machine, "python": platform.python_version()}))
    if args.json:
        with open(args.json, "a") as fh:
            for r in results:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
