"""`lorefd detect PATH... [--model MODEL]`: is this face real or fake, and where does it look?

PATHs are images, videos or folders (searched recursively). Faces are found, aligned and
cropped exactly as `lorefd preprocess` did for training (parameters from the bundle), each face
or video frame is scored, videos are summarised by the median score and the share of frames at or
above the threshold. A file that cannot be used gets a status line; the others still run.

    lorefd detect photo.jpg clips/ --heatmap heat/ --json report.json   # the shipped model
    lorefd detect photo.jpg --model model.lorefd                       # your own

The table's P(fake) is the model's probability that the file is fake (an image: its highest
face; a video: the median over its frames with a face). FACES/FRAMES is, for a video,
"scored/decoded fr": of the --frames frames *sampled* evenly, those *decoded* (fewer when the
file is truncated) and of those, the ones with a face, each *scored*. --csv writes one row per
file (path, type, status, p_fake, verdict, faces, frames_sampled, frames_decoded,
frames_scored, heatmap, message); --json the full report. A progress bar with ETA (stderr)
runs over several files and long videos when stderr is a terminal (not with --quiet).
Heatmap names never overwrite existing files: a taken name gets a _2, _3... suffix.

MODEL is a bundle, a training run folder or a checkpoint folder (default: the shipped model).
A bundle with an ONNX graph (`lorefd export` adds one) runs with ONNX Runtime, without
loading PyTorch (--runtime torch: with PyTorch; the scores agree to 1e-4).
Exit status: 0 when at least one input was processed (scored, or searched for a face), 1 when
none was, 2 for a user error (unusable model, bad output path).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lorefd.cli.common import (
    add_device_arg,
    add_model_arg,
    add_runtime_arg,
    cap_threads,
    check_output_dir,
    check_output_file,
    check_outputs_spare_inputs,
    cpu_cores,
    positive_int,
    probability,
)

AUTO_MIN_IMAGES = 128  # --workers by default: several from this many images (auto_workers)
AUTO_MAX_WORKERS = 4


def format_table(report: dict[str, Any], width: int | None = None, own_threshold: bool = True
                 ) -> str:
    """The printed table: path, type, faces/frames, P(fake), verdict, status (and message).

    FACES/FRAMES: for an image the faces scored; for a video ``scored/decoded fr``: frames
    with a face (each scored) out of the sampled frames that could be decoded (``--frames``
    are sampled evenly; a truncated file decodes fewer, and the message says so)."""
    import shutil

    from lorefd.engines.report_schema import NO_FACE, OK, SCORE, STATUSES

    rows = [("PATH", "TYPE", "FACES/FRAMES", "P(fake)", "VERDICT", "STATUS")]
    for r in report["results"]:
        if r["type"] == "video" and r["frames"] is not None:
            ff = f"{r['frames']['count']}/{r['frames']['decoded']} fr"
        elif r["type"] == "image" and r["status"] in (OK, NO_FACE):
            ff = f"{len(r['faces'])} face" + ("s" if len(r["faces"]) != 1 else "")
        else:
            ff = "-"
        status = r["status"] + (f": {r['message']}" if r["message"] else "")
        rows.append((r["path"], r["type"] or "-", ff,
                     "-" if r[SCORE] is None else f"{r[SCORE]:.3f}", r["verdict"] or "-",
                     status))
    width = width or shutil.get_terminal_size((200, 24)).columns
    pw = min(max(len(r[0]) for r in rows), max(20, width - 60))
    lines = []
    for r in rows:
        path = r[0] if len(r[0]) <= pw else "..." + r[0][-(pw - 3):]
        lines.append(f"{path:<{pw}}  {r[1]:<5}  {r[2]:>12}  {r[3]:>7}  {r[4]:<7}  {r[5]}")
    s = report["summary"]
    lines.append(f"{s['inputs']} input(s): " + ", ".join(
        f"{s[k]} {k}" for k in STATUSES if s[k]) + f"; threshold {report['threshold']:.3f}"
        f"{_rule(report) if own_threshold else ''}; {s['seconds']:.1f} s")
    return "\n".join(lines)


def _rule(report: dict[str, Any]) -> str:
    """`` (RULE)`` when the bundle records how its threshold was chosen."""
    source = str((report.get("model") or {}).get("threshold_source") or "")
    if source.startswith("given at export: "):
        return f" ({source.split(': ', 1)[1]})"
    return ""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="real/fake scores and heatmaps for images and videos",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="images, videos or folders")
    add_model_arg(p)
    p.add_argument("--heatmap", metavar="OUT_DIR", default=None,
                   help="write heatmaps of where the model looks (the baseline: its blend mask; the method: its reconstruction attention): PNG per image, MP4 per video")
    p.add_argument("--json", metavar="FILE", default=None, help="write the full report as JSON")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="write one row per file as CSV (path, type, status, p_fake, verdict, "
                        "faces, frames sampled/decoded/scored, heatmap, message)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (it is also off when stderr is not a terminal)")
    add_device_arg(p)
    p.add_argument("--frames", type=positive_int, default=None,
                   help="frames sampled evenly per video (default: the bundle's, 32)")
    p.add_argument("--threshold", type=probability, default=None,
                   help="decision threshold (default: the bundle's)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="faces per forward pass (default 4 on CPU, 32 on CUDA)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads of the runtime (default: its own; 1 is faster on a busy "
                        "machine)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="files scored at once, in threads, each with a face detector of its "
                        "own (each loaded anew) and one runtime thread unless --threads "
                        f"says otherwise (default: one per core, at most {AUTO_MAX_WORKERS}, "
                        f"for {AUTO_MIN_IMAGES} images or more; else 1)")
    add_runtime_arg(p)
    p.add_argument("--retinaface-weights", default=None, metavar="PATH",
                   help="for bundles preprocessed with RetinaFace")
    p.set_defaults(func=run)


def auto_workers(paths: list[str]) -> int:
    """``--workers`` by default: one per core (at most :data:`AUTO_MAX_WORKERS`) when the
    inputs hold :data:`AUTO_MIN_IMAGES` images or more, else 1: a second face detector costs
    its loading time, holding the interpreter, which only many images repay (measured in
    benchmarks/RESULTS.md, "``lorefd detect`` picks its workers")."""
    from pathlib import Path

    from lorefd.data.images import is_image, walk_files

    cores = cpu_cores()
    if cores < 2:
        return 1
    n = 0
    for p in map(Path, paths):
        n += sum(map(is_image, walk_files(p)[0])) if p.is_dir() else is_image(p)
        if n >= AUTO_MIN_IMAGES:
            return min(cores, AUTO_MAX_WORKERS)
    return 1


def count_inputs(paths: list[str], limit: int) -> int:
    """The files the arguments name (a folder's recursively, as detect walks them), counted up
    to ``limit``."""
    from pathlib import Path

    from lorefd.data.images import walk_files

    n = 0
    for p in map(Path, paths):
        if p.is_dir():
            files, broken = walk_files(p)
            n += len(files) + len(broken)
        else:
            n += 1
        if n >= limit:
            return limit
    return n


def cap_workers(workers: int, paths: list[str]) -> int:
    """``--workers`` at most the inputs and the cores: each worker starts a landmark process
    (~85 MB) and a face detector, which a worker without a file or a core only wastes (1000
    asked for one photo started 238 processes)."""
    import logging

    n, cores = count_inputs(paths, workers), cpu_cores()
    capped = max(1, min(workers, n, cores))
    if capped < workers:
        logging.getLogger("lorefd").warning(
            "--workers %d: using %d (%s)", workers, capped,
            f"{n} input file(s)" if n <= cores else f"{cores} cores")
    return capped


def run(args: argparse.Namespace) -> int:
    import logging

    if args.workers is None:
        args.workers = auto_workers(args.paths)
        if args.workers > 1:
            logging.getLogger("lorefd").info(
                "%d workers, one runtime thread each (--workers 1: one)", args.workers)
    else:
        args.workers = cap_workers(args.workers, args.paths)
    args.threads = cap_threads(args.threads)
    if args.workers > 1 and args.threads is None:
        args.threads = 1
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from lorefd.engines.detect import DetectOptions, detect_paths, processed_any
    from lorefd.models.bundle import resolve_model

    check_output_file(args.json, "--json")  # before the work, not after it
    check_output_file(args.csv, "--csv")
    check_output_dir(args.heatmap, "--heatmap")
    check_outputs_spare_inputs({"--json": args.json, "--csv": args.csv},
                               [*args.paths, *([args.model] if args.model else [])])
    options = DetectOptions(heatmap_dir=args.heatmap, json_path=args.json, csv_path=args.csv,
                            frames=args.frames, threshold=args.threshold,
                            batch_size=args.batch_size, device=args.device,
                            runtime=args.runtime, threads=args.threads, workers=args.workers,
                            progress=not args.quiet and sys.stderr.isatty(),
                            retinaface_weights=args.retinaface_weights)
    report = detect_paths(args.paths, resolve_model(args.model), options)
    print(format_table(report, own_threshold=args.threshold is None))
    for path in (args.json, args.csv):
        if path:
            print(f"wrote {path}")
    if args.heatmap:
        print(f"heatmaps in {args.heatmap}")
    if not processed_any(report):
        print("lorefd detect: no input could be processed", file=sys.stderr)
        return 1
    return 0
