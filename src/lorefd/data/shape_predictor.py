"""dlib's 68-point shape predictor in NumPy, read from a flat safetensors file.

The predictor is dlib's ensemble of regression trees (Kazemi & Sullivan, CVPR 2014) trained on
iBUG 300-W (``shape_predictor_68_face_landmarks.dat``). dlib stores it in a 95 MB serialised
format that takes ~0.9 s to parse; here the same numbers lie in fixed-size arrays (65 MB,
memory-mapped, loaded in milliseconds), and :class:`ShapePredictor` runs the cascade the way
dlib does -- same pixel sampling, same similarity transform, leaves added in dlib's order in
float32 -- so its points equal dlib's bit for bit (tests/test_shape_predictor.py).

:func:`read_dlib_predictor` converts a dlib file (``scripts/convert_shape_predictor.py``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from lorefd.errors import UserError

# arrays of the file: name -> (dtype, number of dimensions)
LAYOUT = {
    "initial_shape": (np.float32, 2),  # (P, 2), normalised to the face box
    "split_index": (np.uint16, 4),     # (cascades, trees, splits, 2): the two pixels compared
    "split_threshold": (np.float32, 3),  # (cascades, trees, splits)
    "leaf_values": (np.float32, 4),    # (cascades, trees, leaves, 2 P)
    "anchor": (np.uint16, 2),          # (cascades, pixels): the landmark each pixel follows
    "delta": (np.float32, 3),          # (cascades, pixels, 2): its offset in the mean shape
}


class ShapePredictorError(UserError, ValueError):
    """A landmark model file that is missing, damaged or not laid out as :data:`LAYOUT`."""


class _Reader:
    """dlib's portable serialisation: integers as a length/sign byte then little-endian bytes;
    floats as an integer mantissa and exponent (dlib/serialize.h, dlib/float_details.h)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def int(self) -> int:
        head = self.data[self.pos]
        size = head & 0x0F
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # dlib's codes for inf, -inf and nan
            raise ShapePredictorError("non-finite number in the shape predictor")
        return mantissa * 2.0 ** exponent

    def column(self) -> list[float]:
        rows, cols = -self.int(), -self.int()  # dlib writes matrix sizes negated
        if cols != 1 or rows <= 0:
            raise ShapePredictorError(f"expected a column vector, got {rows}x{cols}")
        return [self.float() for _ in range(rows)]


def read_dlib_predictor(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of :data:`LAYOUT` from a dlib ``shape_predictor`` file (version 1, full trees
    of one depth). Raises :class:`ShapePredictorError` for anything else."""
    r = _Reader(Path(path).read_bytes())
    try:
        if r.int() != 1:
            raise ShapePredictorError(f"{path}: not a version-1 dlib shape predictor")
        initial = r.column()
        forests = []
        for _ in range(r.int()):
            trees = []
            for _ in range(r.int()):
                splits = [(r.int(), r.int(), r.float()) for _ in range(r.int())]
                trees.append((splits, [r.column() for _ in range(r.int())]))
            forests.append(trees)
        anchors = [[r.int() for _ in range(r.int())] for _ in range(r.int())]
        deltas = [[(r.float(), r.float()) for _ in range(r.int())] for _ in range(r.int())]
    except IndexError as exc:
        raise ShapePredictorError(f"{path}: truncated dlib shape predictor") from exc
    if r.pos != len(r.data):
        raise ShapePredictorError(f"{path}: {len(r.data) - r.pos} bytes after the predictor")
    shapes = {(len(s), len(v)) for f in forests for s, v in f}
    if len(shapes) != 1 or len({len(f) for f in forests}) != 1:
        raise ShapePredictorError(f"{path}: trees of different sizes ({sorted(shapes)})")
    tensors = {
        "initial_shape": np.array(initial).reshape(-1, 2),
        "split_index": np.array([[[s[:2] for s in t[0]] for t in f] for f in forests]),
        "split_threshold": np.array([[[s[2] for s in t[0]] for t in f] for f in forests]),
        "leaf_values": np.array([[t[1] for t in f] for f in forests]),
        "anchor": np.array(anchors),
        "delta": np.array(deltas),
    }
    out = {}
    for name, (dtype, _) in LAYOUT.items():
        out[name] = tensors[name].astype(dtype)
        if not np.array_equal(out[name], tensors[name]):  # every dlib float is a float32
            raise ShapePredictorError(f"{path}: {name} does not fit {np.dtype(dtype).name}")
    return out


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x2 scale-rotation of the least-squares similarity from ``src`` to ``dst`` (dlib's
    ``find_similarity_transform``, Umeyama 1991), in float64: for points in the plane it is
    ``[[a, -b], [b, a]]`` with ``a + ib`` the least-squares complex ratio of the centred points."""
    s = src - src.mean(0)
    d = dst - dst.mean(0)
    norm = (s * s).sum()
    if not norm:
        return np.eye(2)
    a = (s * d).sum() / norm
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / norm
    return np.array([[a, -b], [b, a]])


class ShapePredictor:
    """``points = predictor(image, (left, top, right, bottom))``: ``(P, 2)`` float32 pixel
    coordinates (whole numbers, as dlib's) of the face in the inclusive box of ``image``
    (HxW gray or HxWx3 RGB, uint8)."""

    def __init__(self, path: str | Path) -> None:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise ShapePredictorError(f"landmark model missing: {path}")
        try:
            arrays = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ShapePredictorError(f"{path}: unreadable landmark model ({exc})") from exc
        for name, (dtype, ndim) in LAYOUT.items():
            a = arrays.get(name)
            if a is None or a.dtype != dtype or a.ndim != ndim:
                raise ShapePredictorError(f"{path}: no {ndim}-D {np.dtype(dtype).name} {name!r}")
        self.initial = arrays["initial_shape"]
        cascades, trees, splits, _ = arrays["split_index"].shape
        self.num_points = len(self.initial)
        if (arrays["leaf_values"].shape != (cascades, trees, splits + 1, 2 * self.num_points)
                or arrays["anchor"].shape[0] != cascades
                or arrays["delta"].shape != (*arrays["anchor"].shape, 2)
                or int(arrays["anchor"].max()) >= self.num_points
                or int(arrays["split_index"].max()) >= arrays["anchor"].shape[1]):
            raise ShapePredictorError(f"{path}: inconsistent array sizes")
        self.depth = int(np.log2(splits + 1))
        # per cascade, flat over trees: node n of tree t at t * splits + n, leaf l at t * leaves + l
        index = arrays["split_index"].astype(np.intp)
        self._first = index[..., 0].reshape(cascades, -1)
        self._second = index[..., 1].reshape(cascades, -1)
        self._threshold = arrays["split_threshold"].reshape(cascades, -1)
        self._leaves = arrays["leaf_values"].reshape(cascades, trees * (splits + 1), -1)
        self._node_base = np.arange(trees) * splits
        self._leaf_base = np.arange(trees) * (splits + 1) - splits
        self.anchor = arrays["anchor"].astype(np.intp)
        self.delta = arrays["delta"]
        self._initial64 = self.initial.astype(np.float64)

    def __call__(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or 0 in image.shape[:2]:
            raise ShapePredictorError(f"expected an HxW or HxWx3 uint8 image, got "
                                      f"{image.dtype} {image.shape}")
        h, w = image.shape[:2]
        left, top, right, bottom = (int(v) for v in box)
        # (0, 0) -> top-left corner, (1, 1) -> bottom-right corner (dlib's unnormalizing_tform)
        origin = np.array([left, top], np.float64)
        extent = np.array([right - left, bottom - top], np.float64)
        shape = self.initial.reshape(-1).copy()
        flat = shape.reshape(-1, 2)
        for c in range(len(self.anchor)):
            tform = _similarity(self._initial64, flat.astype(np.float64)).astype(np.float32)
            # float32 like dlib: tform * delta + anchor point, then to pixels in float64
            d = self.delta[c]
            local = np.stack([tform[0, 0] * d[:, 0] + tform[0, 1] * d[:, 1],
                              tform[1, 0] * d[:, 0] + tform[1, 1] * d[:, 1]], 1)
            pixel = np.floor((local + flat[self.anchor[c]]) * extent + origin + 0.5)
            x, y = pixel[:, 0].astype(np.intp), pixel[:, 1].astype(np.intp)
            inside = (x >= 0) & (y >= 0) & (x < w) & (y < h)
            values = np.zeros(len(x), np.float32)
            sampled = image[y[inside], x[inside]]
            # dlib's intensity of an RGB pixel: the integer mean of its channels
            values[inside] = sampled if image.ndim == 2 else sampled.sum(1, dtype=np.uint16) // 3
            first, second, threshold = self._first[c], self._second[c], self._threshold[c]
            node = np.zeros(len(self._node_base), np.intp)
            for _ in range(self.depth):
                at = self._node_base + node
                go_left = (values[first[at]] - values[second[at]] > threshold[at])
                node = 2 * node + 2 - go_left
            # dlib adds the trees' leaves to the shape one after another in float32; numpy's
            # reduction over the rows of a C-ordered array runs in that order
            rows = np.concatenate([shape[None], self._leaves[c].take(self._leaf_base + node, 0)])
            shape = rows.sum(0, dtype=np.float32)
            flat = shape.reshape(-1, 2)
        return np.floor(flat.astype(np.float64) * extent + origin + 0.5).astype(np.float32)


@functools.lru_cache(maxsize=4)
def shared_predictor(path: Path) -> ShapePredictor:
    """One loaded predictor per file and process, shared by every detector (it keeps no state
    between calls, so threads may call it at once)."""
    return ShapePredictor(path)
