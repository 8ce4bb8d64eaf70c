"""`lorefd quality VIDEO... --out DIR [--model MODEL]`: do worse copies of real videos look faker?

Each REAL video (files or folders) is re-encoded as H.264 at CRF 35, 40 and 45, and downscaled
x0.5 (at CRF 18 and at CRF 40), and every copy is scored like `lorefd detect` does. A variant
passes when, pooled over the frames, neither the share called fake nor the median P(fake) is
higher than for the videos as published. Writes DIR/quality.json, DIR/quality.md and the
copies (DIR/variants/ or --variants, reused when the command is run again: pass the same
--variants to compare models on the same copies).
Exit status: 0 every variant passes, 1 one does not (or nothing could be scored), 2 user error.
"""

from __future__ import annotations

import argparse

from lorefd.cli.common import add_model_arg, check_output_dir, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quality", help="quality invariance: do re-encoded / downscaled real "
                                       "videos look more fake?",
                       description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("videos", nargs="+", help="real videos or folders of them")
    p.add_argument("--out", required=True, help="output folder")
    add_model_arg(p)
    p.add_argument("--frames", type=positive_int, default=32,
                   help="frames sampled per video (32)")
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold (default: the model's)")
    p.add_argument("--variants", default=None, metavar="DIR",
                   help="where the re-encoded copies are kept (default OUT/variants)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lorefd.data.images import is_video
    from lorefd.errors import UserError
    from lorefd.evaluation.quality import format_markdown, quality_check

    check_output_dir(args.out, "--out")
    videos: list[Path] = []
    for v in map(Path, args.videos):
        if v.is_dir():
            videos += sorted(p for p in v.rglob("*") if p.is_file() and is_video(p))
        elif v.is_file():
            videos.append(v)
        else:
            raise FileNotFoundError(2, "no such file or folder", str(v))
    if not videos:
        raise UserError("no videos among the inputs")
    report = quality_check(args.model, videos, args.out, frames=args.frames,
                           threshold=args.threshold, threads=args.threads,
                           variants_dir=args.variants)
    print(format_markdown(report), end="")
    scored = report["variants"]["as published"]["frames"]
    return 0 if scored and report["passes"] else 1
