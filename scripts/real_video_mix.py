"""Make the "real video frames" training mix of docs/levers.md from preprocessed real clips.

    python scripts/real_video_mix.py --clips RV_CROPS/manifest.csv \
        --train RECIPE/splits/train_reals.csv --out MIX_DIR

The people of a ``--held`` share (by hash) are held out whole for the false-positive check
(``MIX_DIR/heldout_rv.csv``); every ``--every``-th frame of the others' clips joins the still
training reals (``MIX_DIR/train_reals_rv.csv``): :func:`lorefd.apps.common.split_clips`, what
``lorefd recipe --videos`` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorefd.apps.common import split_clips
from lorefd.data.manifest import read_manifest, write_manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--held", type=float, default=0.2)
    ap.add_argument("--every", type=int, default=2)
    args = ap.parse_args()

    train, held = split_clips(read_manifest(args.clips), args.held, args.every)
    stills = read_manifest(args.train)
    args.out.mkdir(parents=True, exist_ok=True)
    write_manifest(args.out / "heldout_rv.csv", held)
    write_manifest(args.out / "train_reals_rv.csv", stills + train)
    print(f"held out {len({s.video_id for s in held})} clips ({len(held)} frames); "
          f"{len({s.video_id for s in train})} clips give {len(train)} training frames beside "
          f"{len(stills)} stills")


if __name__ == "__main__":
    main()
