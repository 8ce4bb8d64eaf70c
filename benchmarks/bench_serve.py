"""Load benchmark of ``lorefd serve`` on 127.0.0.1: C concurrent clients, a fixed number of
requests (bounded in count and in time), one bundled real face (256x256 JPEG) per request.

Starts its own ``lorefd serve`` (loopback only), warms it up, then runs the requests in two
equal rounds and reports requests/s, p50/p95 latency, errors (any non-200; 503s counted
apart), and the server's resident memory (VmRSS) and peak (VmHWM) after the warm-up and after
each round: with a bounded queue and per-request cleanup it must not grow round to round.

    python benchmarks/bench_serve.py [--model model.lorefd] [--clients 4] [--requests 200]
        [--max-seconds 60] [--workers 1] [--queue 8] [--heatmap] [--json out.json]

Without ``--model``: the model shipped in the package, else the tiny random-weight test bundle
(the same network shapes at 64 px as the test suite; its scores mean nothing, its cost is real).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

_HERE = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_HERE / "src"), str(_HERE / "tests")]

from lorefd.models.bundle import shipped_bundle  # noqa: E402

FACE = sorted((_HERE / "src" / "lorefd" / "assets" / "faces" / "real").glob("*.jpg"))[0]


def tiny_bundle(folder: Path) -> Path:
    from conftest import make_detector_checkpoint

    from lorefd.models.export import export_bundle

    out = folder / "model.lorefd"
    export_bundle(make_detector_checkpoint(folder), out, verify=False)
    return out


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB (Linux /proc)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def start_server(model: Path, args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen,
                                                                            str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "lorefd.cli", "serve", "--model", str(model), "--host",
           "127.0.0.1", "--port", str(port), "--workers", str(args.workers), "--queue",
           str(args.queue), "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(_HERE / "src")}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lorefd serve exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("lorefd serve did not answer in 180 s")


def run_round(url: str, clients: int, n: int, max_seconds: float,
              heatmap: bool) -> dict[str, object]:
    """``n`` requests from ``clients`` threads (stops early after ``max_seconds``)."""
    data = FACE.read_bytes()
    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    codes: dict[int, int] = {}
    stop_at = time.monotonic() + max_seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while True:
                with lock:
                    if issued[0] >= n or time.monotonic() > stop_at:
                        return
                    issued[0] += 1
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/detect", params={"heatmap": str(heatmap).lower()},
                               files=[("files", (FACE.name, data, "image/jpeg"))])
                    code = r.status_code
                    if code == 200 and r.json()["results"][0]["status"] != "ok":
                        code = -1  # answered, but the face was not scored
                except httpx.HTTPError:
                    code = 0
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    codes[code] = codes.get(code, 0) + 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "seconds": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "errors": sum(v for k, v in codes.items() if k != 200),
            "http_503": codes.get(503, 0), "codes": {str(k): v for k, v in codes.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=200, help="in all, over two rounds")
    p.add_argument("--max-seconds", type=float, default=60.0, help="for both rounds")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--queue", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    p.add_argument("--heatmap", action="store_true", help="ask for heatmaps too")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        if args.model:
            model, label = Path(args.model), Path(args.model).name
        elif shipped_bundle() is not None:
            model, label = shipped_bundle(), "the shipped model"
        else:
            model, label = tiny_bundle(Path(tmp)), "tiny random-weight test bundle (lre, 64 px)"
        proc, url = start_server(model, args, Path(tmp) / "serve.log")
        try:
            warm = run_round(url, 1, 5, 60, args.heatmap)
            mem = {"after warm-up": memory_mb(proc.pid)}
            rounds = []
            for k in (1, 2):
                rounds.append(run_round(url, args.clients, args.requests // 2,
                                        args.max_seconds / 2, args.heatmap))
                mem[f"after round {k}"] = memory_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    result = {"model": label,
              "clients": args.clients, "workers": args.workers, "queue": args.queue,
              "threads": args.threads, "heatmap": args.heatmap, "warm_up": warm,
              "rounds": rounds, "memory_mb": mem, "cpu": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()}
    total = sum(r["requests"] for r in rounds)
    secs = sum(r["seconds"] for r in rounds)
    print(f"lorefd serve on 127.0.0.1, {args.clients} clients, {args.workers} worker(s), "
          f"queue {args.queue}, heatmap {args.heatmap}: {total} requests in {secs:.1f} s")
    for k, r in enumerate(rounds, 1):
        print(f"  round {k}: {r['requests_per_s']} req/s, p50 {r['p50_ms']} ms, "
              f"p95 {r['p95_ms']} ms, errors {r['errors']} (503: {r['http_503']})")
    for k, m in mem.items():
        print(f"  server memory {k}: RSS {m['VmRSS']} MB, peak {m['VmHWM']} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
