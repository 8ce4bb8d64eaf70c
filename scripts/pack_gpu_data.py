"""Pack recipe manifests into one small folder to copy to a machine with a GPU (no dlib needed
there).

    python scripts/pack_gpu_data.py runs/cpu224 runs/gpu_data      # 27 MiB at 224 px
    # then, on a machine with a GPU, with runs/gpu_data copied there: bash benchmarks/run_gpu.sh

Reads ``RECIPE/splits/train_reals.csv`` and ``RECIPE/val/manifest.csv`` (a ``lorefd recipe``
run at the GPU's image size, stages ``faces,split,heldout``), re-encodes every crop as JPEG
(``--quality``: the held-out fakes and reals alike, so no label leaks through compression),
copies each landmark file, and writes ``train.csv`` and ``val.csv`` with paths relative to
``OUT``. The test set is not carried: the model comes back and is evaluated here.
The folder's total size is printed (it travels with the working tree: keep it small).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

from lorefd.data.images import load_rgb
from lorefd.data.manifest import Sample, read_manifest, write_manifest


def pack(samples: list[Sample], out: Path, name: str, quality: int) -> int:
    """Write the samples' crops and landmarks under ``out/name``; return the bytes written."""
    total = 0
    for i, s in enumerate(samples):
        img = out / name / f"{i:05d}.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(load_rgb(s.path)).save(img, quality=quality)
        s.path = str(img)
        total += img.stat().st_size
        if s.landmarks:
            lm = img.with_suffix(".npy")
            shutil.copyfile(s.landmarks, lm)
            s.landmarks = str(lm)
            total += lm.stat().st_size
    write_manifest(out / f"{name}.csv", samples)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", type=Path, help="a `lorefd recipe` run folder")
    ap.add_argument("out", type=Path, help="the folder to carry (replaced)")
    ap.add_argument("--quality", type=int, default=75,
                    help="JPEG quality of the packed crops (75: 3,130 crops at 224 px in 27 MiB)")
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    sizes = {
        "train": pack(read_manifest(args.recipe / "splits" / "train_reals.csv"), args.out,
                      "train", args.quality),
        "val": pack(read_manifest(args.recipe / "val" / "manifest.csv"), args.out, "val",
                    args.quality),
    }
    for name, size in sizes.items():
        print(f"{name}: {size / 2**20:.1f} MiB")
    print(f"total: {sum(sizes.values()) / 2**20:.1f} MiB (the call's limit: 64 MiB with the tree)")


if __name__ == "__main__":
    main()
