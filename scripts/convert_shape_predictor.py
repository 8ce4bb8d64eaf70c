"""Convert dlib's 68-point shape predictor into lorefd's landmark model file.

    python scripts/convert_shape_predictor.py [DLIB.dat] [--out FILE]

DLIB.dat defaults to the copy in ``face-recognition-models`` (the dev extra). The output
(default: the bundled ``src/lorefd/assets/landmarks/shape_predictor_68.safetensors``) records
the source file's name and sha256. tests/test_shape_predictor.py checks it against dlib.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
from pathlib import Path

from safetensors.numpy import save_file

from lorefd.data.landmarks import PREDICTOR_PATH
from lorefd.data.shape_predictor import read_dlib_predictor
from lorefd.utils import atomic_path

DLIB_FILE = "shape_predictor_68_face_landmarks.dat"


def dlib_model() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face-recognition-models is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / DLIB_FILE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=PREDICTOR_PATH)
    args = parser.parse_args()
    source = args.source or dlib_model()
    tensors = read_dlib_predictor(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with atomic_path(args.out, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"source": source.name, "source_sha256": digest})
    print(f"{args.out}: {args.out.stat().st_size / 2**20:.1f} MB from {source} ({digest[:12]})")


if __name__ == "__main__":
    main()
