"""`lorefd preprocess {ffpp,dfd,celebdf,folder} ROOT --out OUT`: aligned face crops + manifest.

Section IV-B: frames sampled at fixed intervals, one face per frame found, aligned and cropped
to 224x224; the manifest (``OUT/manifest.csv``) feeds stage 1 and stage 2 directly.
"""

from __future__ import annotations

import argparse
import os

from lorefd.cli.common import (
    add_alias,
    check_output_dir,
    check_writes_spare_inputs,
    out_files,
    positive_int,
)
from lorefd.utils import log

# as in lorefd.data.preprocess.adapters (not imported here: it loads OpenCV; a test keeps
# them equal), so that `lorefd --help` starts fast
LAYOUTS = ["celebdf", "dfd", "ffpp", "folder"]
COMPRESSIONS = ["c0", "c23", "c40"]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess", help="sample frames, detect/align/crop faces, write a manifest",
        description="Sample video frames, find and align one face per frame, write crops, "
                    "68-point landmarks in crop coordinates and OUT/manifest.csv. Resumable.")
    p.add_argument("layout", choices=LAYOUTS,
                   help="dataset layout: ffpp (FaceForensics++), dfd (DeepFakeDetection), "
                        "celebdf (Celeb-DF-v2), folder (real/ and fake/ sub-folders)")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--out", required=True, help="output folder (crops, manifest.csv, ...)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--frames", type=positive_int, default=32,
                   help="frames evenly spaced per video (default 32; shorter videos: all)")
    g.add_argument("--every", type=positive_int, default=None, help="every K-th frame instead")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="all",
                   help="keep one split (official FF++ / Celeb-DF lists); default all")
    p.add_argument("--compression", type=_csv, default=None, metavar="C[,C]",
                   help=f"FF++/DFD compressions among {','.join(COMPRESSIONS)} (c0 = raw); "
                        "default: every one present")
    p.add_argument("--methods", type=_csv, default=None, metavar="M[,M]",
                   help="FF++ manipulation methods (default Deepfakes,Face2Face,FaceSwap,"
                        "NeuralTextures,FaceShifter, those present); folder: fake sub-folders")
    p.add_argument("--size", type=positive_int, default=224, help="crop side in pixels (224)")
    p.add_argument("--margin", type=float, default=0.25,
                   help="context around the face, fraction per side (0.25): of the 5-point "
                        "template, or with --crop box of the landmarks' box (twice above)")
    p.add_argument("--crop", choices=["template", "box"], default="template",
                   help="template: similarity-aligned to a 5-point template (default); box: "
                        "the 68 landmarks' axis-aligned box, unrotated, stretched to square "
                        "(Face X-ray / SBI style)")
    p.add_argument("--format", dest="image_format", choices=["png", "jpg"], default="png",
                   help="crop format (png)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (95)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes (default: CPU count, at most 4)")
    p.add_argument("--face-detector", dest="detector", choices=["dlib", "retinaface"],
                   default="dlib",
                   help="dlib HOG (offline default) or RetinaFace (needs facexlib + weights)")
    add_alias(p, "--detector", "--face-detector", "detector", choices=["dlib", "retinaface"])
    p.add_argument("--retinaface-weights", default=None, metavar="PATH",
                   help="local detection_Resnet50_Final.pth (or $LOREFD_RETINAFACE_WEIGHTS)")
    p.add_argument("--detect-side", type=int, default=640,
                   help="longer side of the downscaled frame the detector sees (640; 0 = full)")
    p.add_argument("--track-face-side", type=int, default=100,
                   help="after the first frame, detect only near the previous face, scaled so "
                        "the face is this many pixels (100; 0 = full-frame detection always)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="only the first N videos (a quick look)")
    p.add_argument("--overwrite", action="store_true", help="redo finished videos")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true",
                   help="exit non-zero if any video/image was skipped")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build options from ``args``, run, and pick the exit code (0 at least one crop; 1 none,
    or ``--strict`` and a skip; 2 a user error: missing root, detector backend, ...)."""
    from lorefd.data.preprocess.runner import PreprocessOptions, run_preprocess

    check_output_dir(args.out, "--out")
    # a folder layout is read recursively: crops written inside it would join the input
    check_writes_spare_inputs(
        out_files(args.out, "--out", ("manifest.csv", "summary.json", "failures.jsonl")),
        data=[args.root] if args.layout == "folder" else [], models=[args.root])
    opts = PreprocessOptions(
        frames=args.frames, every=args.every, size=args.size, margin=args.margin,
        crop=args.crop,
        image_format=args.image_format, quality=args.quality, detector=args.detector,
        retinaface_weights=args.retinaface_weights, detect_side=args.detect_side,
        track_face_side=args.track_face_side, workers=max(1, args.workers),
        progress=False if args.no_progress else None)
    summary = run_preprocess(args.layout, args.root, args.out, opts, split=args.split,
                             compressions=args.compression, methods=args.methods,
                             overwrite=args.overwrite, limit=args.limit)
    if summary.crops == 0:
        log.error("nothing produced: no face crop in %d videos/images (see %s/failures.jsonl)",
                  summary.videos, args.out)
        return 1
    if args.strict and (summary.failed or summary.no_face):
        log.error("--strict: %d failed, %d without a face (see %s/failures.jsonl)",
                  summary.failed, summary.no_face, args.out)
        return 1
    return 0
