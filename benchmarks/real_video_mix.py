"""Make the "real video frames" training mix of docs/levers.md from preprocessed real clips.

    python benchmarks/real_video_mix.py --clips RV_CROPS/manifest.csv \
        --train RECIPE/splits/train_reals.csv --out MIX_DIR

Clips whose person's ``sha1`` falls below ``--held`` (a fraction) are held out whole for the
false-positive check (a person is a clip, but for the clips :func:`person` knows to show one
person: MEAD's speaker codes and the two Alexandria Ocasio-Cortez clips) (``MIX_DIR/heldout_rv.csv``); every ``--every``-th frame of the other
clips joins the still training reals (``MIX_DIR/train_reals_rv.csv``). Paths are written
absolute, so the manifests work from any folder.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path


def _rows(manifest: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A manifest's rows with absolute crop and landmark paths."""
    root = manifest.resolve().parent
    with open(manifest, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    for r in rows:
        for col in ("path", "landmarks"):
            if r.get(col):
                r[col] = str((root / r[col]).resolve())
    return list(reader.fieldnames or []), rows


def _write(path: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def person(video_id: str) -> str:
    """Who a clip shows (:func:`lorefd.apps.common.clip_person`)."""
    from lorefd.apps.common import clip_person

    return clip_person(video_id)


def _unit(video_id: str) -> float:
    key = person(video_id)
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--held", type=float, default=0.2)
    ap.add_argument("--every", type=int, default=2)
    args = ap.parse_args()

    fields, clips = _rows(args.clips)
    _, train = _rows(args.train)
    held = [r for r in clips if _unit(r["video_id"]) < args.held]
    seen: dict[str, int] = {}
    rest = []
    for r in clips:
        if _unit(r["video_id"]) >= args.held:
            k = seen[r["video_id"]] = seen.get(r["video_id"], -1) + 1
            if k % args.every == 0:
                rest.append({**r, "split": "train"})
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "heldout_rv.csv", fields, held)
    _write(args.out / "train_reals_rv.csv", fields, train + rest)
    n_held = len({r["video_id"] for r in held})
    n_rest = len({r["video_id"] for r in rest})
    print(f"held out {n_held} clips ({len(held)} frames); {n_rest} clips give {len(rest)} "
          f"training frames beside {len(train)} stills")


if __name__ == "__main__":
    main()
