"""Real-world perturbations of face images: the DeeperForensics-1.0 set, plus real JPEG.

DeeperForensics-1.0 (Jiang et al., CVPR 2020, Section 4 and its released
``perturbation/`` code) defines 7 distortion types at 5 levels each; LipForensics and later
work report detectors under all 35. The parameters here are the original's exactly:

============  ====================  ==============================  =========================
type          original code name    parameter, levels 1 -> 5        meaning
============  ====================  ==============================  =========================
saturation    CS  color_saturation  0.4, 0.3, 0.2, 0.1, 0.0         YCbCr chroma scale
contrast      CC  color_contrast    0.85, 0.725, 0.6, 0.475, 0.35   pixel values scaled
block         BW  block_wise        16, 32, 48, 64, 80              grey 8x8 blocks
noise         GNC gaussian_noise    0.001, 0.002, 0.005, 0.01, 0.05 variance, YCbCr in [0, 1]
blur          GB  gaussian_blur     7, 9, 13, 17, 21                kernel, sigma = kernel / 6
pixelate      JPEG jpeg_compression 2, 3, 4, 5, 6                   down-up scaling factor
h264          VC  video_compression 30, 32, 35, 38, 40              H.264 CRF, whole video
============  ====================  ==============================  =========================

The original's "JPEG" is down-up scaling (pixelation), not JPEG; real JPEG recompression at
quality 90, 75, 60, 45, 30 is added here as ``jpeg``. Every function is pure: HxWx3 uint8 RGB
in, a new array out; randomness (block positions, noise) comes only from the ``rng`` passed
in. :class:`PerturbationError` means the perturbation cannot apply to that input.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from lorefd.errors import OptionError, UserError

# DeeperForensics-1.0 parameters (levels 1..5), in the order the paper lists the types.
DEEPERFORENSICS: dict[str, tuple[float, ...]] = {
    "saturation": (0.4, 0.3, 0.2, 0.1, 0.0),
    "contrast": (0.85, 0.725, 0.6, 0.475, 0.35),
    "block": (16, 32, 48, 64, 80),
    "noise": (0.001, 0.002, 0.005, 0.01, 0.05),
    "blur": (7, 9, 13, 17, 21),
    "pixelate": (2, 3, 4, 5, 6),
    "h264": (30, 32, 35, 38, 40),
}
JPEG_QUALITY: tuple[int, ...] = (90, 75, 60, 45, 30)
TYPES: tuple[str, ...] = (*DEEPERFORENSICS, "jpeg")
LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
VIDEO_TYPES = frozenset({"h264"})  # applied to a video's frames together, not per image
PARAMETER_NAMES = {"saturation": "chroma scale", "contrast": "factor", "block": "blocks",
                   "noise": "variance", "blur": "kernel", "pixelate": "factor", "h264": "CRF",
                   "jpeg": "quality"}
BLOCK = 8  # side of an occluding block (DeeperForensics: 8 px, grey 128)
H264_FPS = 25  # nominal frame rate of the re-encoded frame sequence
# BT.601 luma weights (the Y of YCbCr)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class PerturbationError(UserError, ValueError):
    """The perturbation cannot apply to this input (too small, a one-frame video, ...)."""


def parameter(kind: str, level: int) -> float:
    """The parameter of ``kind`` at ``level`` (1..5)."""
    if level not in LEVELS:
        raise OptionError(f"level must be 1..5, got {level}")
    table = JPEG_QUALITY if kind == "jpeg" else DEEPERFORENSICS.get(kind)
    if table is None:
        raise OptionError(f"unknown perturbation {kind!r} (known: {', '.join(TYPES)})")
    return table[level - 1]


def _rgb(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise PerturbationError(f"expected HxWx3 uint8, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


def saturation(img: np.ndarray, scale: float) -> np.ndarray:
    """Scale the YCbCr chroma (Cb, Cr about their neutral value) by ``scale``; 0 gives grey.

    Scaling the chroma in YCbCr keeps Y and moves RGB towards it: ``Y + scale * (RGB - Y)``.
    """
    x = _rgb(img).astype(np.float32)
    y = x @ _LUMA
    return np.clip(np.rint(y[..., None] + scale * (x - y[..., None])), 0, 255).astype(np.uint8)


def contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """Pixel values times ``factor``, truncated as the original does (it also darkens)."""
    return np.clip(_rgb(img).astype(np.float32) * factor, 0, 255).astype(np.uint8)


def block_occlusion(img: np.ndarray, blocks: int, rng: np.random.Generator) -> np.ndarray:
    """``blocks`` grey (128) 8x8 blocks at random positions.

    The original multiplies the count by ``min(h, w) // 256`` (4 on 1080p frames); that is
    0 below 256 px, so aligned crops take at least the level's count (factor >= 1).
    """
    img = _rgb(img)
    h, w = img.shape[:2]
    if h <= BLOCK or w <= BLOCK:
        raise PerturbationError(f"image too small for {BLOCK}x{BLOCK} blocks")
    n = int(blocks) * max(1, min(h, w) // 256)
    out = img.copy()
    ys = rng.integers(0, h - BLOCK, size=n, endpoint=True) if n else []
    xs = rng.integers(0, w - BLOCK, size=n, endpoint=True) if n else []
    for y, x in zip(ys, xs, strict=True):
        out[y:y + BLOCK, x:x + BLOCK] = 128
    return out


def gaussian_noise(img: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise of ``variance`` added to Y, Cb and Cr (values in [0, 1])."""
    x = _rgb(img).astype(np.float32) / 255.0
    ycrcb = cv2.cvtColor(x, cv2.COLOR_RGB2YCrCb)
    ycrcb += np.sqrt(variance) * rng.standard_normal(ycrcb.shape, dtype=np.float32)
    rgb = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def gaussian_blur(img: np.ndarray, kernel: int) -> np.ndarray:
    """Gaussian blur with a ``kernel`` x ``kernel`` window (odd) and sigma ``kernel / 6``."""
    k = int(kernel)
    if k < 1 or k % 2 == 0:
        raise OptionError(f"blur kernel must be odd and positive, got {kernel}")
    return cv2.GaussianBlur(_rgb(img), (k, k), k / 6.0)


def pixelate(img: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by ``factor`` and enlarge back (bilinear both ways): DeeperForensics' "JPEG"."""
    img = _rgb(img)
    h, w = img.shape[:2]
    sw, sh = int(w / factor), int(h / factor)
    if sw < 1 or sh < 1:
        raise PerturbationError("image too small to pixelate")
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG recompression at ``quality`` (1-100; OpenCV's libjpeg, 4:2:0)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(_rgb(img), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise PerturbationError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def encode_h264(frames: Sequence[np.ndarray], crf: int, fps: int = H264_FPS) -> bytes:
    """The frames as one H.264 stream (libx264, yuv420p, ``crf``, preset medium) in MP4.

    Odd sides are padded by one edge row/column (4:2:0 needs even sides).
    """
    import av

    if not frames:
        raise PerturbationError("no frames to encode")
    h, w = _rgb(frames[0]).shape[:2]
    if any(f.shape != frames[0].shape for f in frames):
        raise PerturbationError("frames of different sizes cannot form one video")
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(int(crf)), "preset": "medium"}
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.pad(f, pad, mode="edge")),
                                               format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def decode_video(data: bytes, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """All frames of an encoded video as HxWx3 uint8 RGB, cropped to ``size`` (w, h)."""
    import av

    with av.open(io.BytesIO(data)) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    if size is not None:
        frames = [np.ascontiguousarray(f[:size[1], :size[0]]) for f in frames]
    return frames


def h264(frames: Sequence[np.ndarray], crf: int, fps: int = H264_FPS) -> list[np.ndarray]:
    """Video compression: the frames encoded together as H.264 at ``crf`` and decoded back.

    DeeperForensics re-encodes whole videos with ``ffmpeg -crf``; the frames here are what a
    video's rows hold, in order. One frame works (intra-coded only); the robustness sweep
    requires two or more so that the setting is video compression.
    """
    import av

    try:
        data = encode_h264(frames, crf, fps)
        h, w = frames[0].shape[:2]
        out = decode_video(data, (w, h))
    except av.FFmpegError as exc:  # e.g. a frame too small for the encoder
        raise PerturbationError(f"H.264 round trip failed: {exc}") from exc
    if len(out) != len(frames):
        raise PerturbationError(f"H.264 round trip gave {len(out)} of {len(frames)} frames")
    return out


def degrade_video(src: str | Path, dst: str | Path, crf: int | None = None,
                  scale: float = 1.0, preset: str = "veryfast") -> Path:
    """Re-encode a whole video as H.264 at ``crf`` (None: CRF 18, near-lossless, so that
    ``scale`` alone is measured), each frame first resized by ``scale`` (area averaging), at
    the source's frame rate. Written atomically to ``dst`` (MP4); returns it.

    What a re-upload does to a video: lower bitrate and lower resolution, the identity and
    the forgery (if any) unchanged -- the quality-invariance check's variants.
    """
    import av

    src, dst = Path(src), Path(dst)
    if not 0 < scale <= 1:
        raise PerturbationError(f"scale must be in (0, 1], got {scale}")
    tmp = dst.with_name(f".{dst.name}.part")
    try:
        with av.open(str(src)) as inp, av.open(str(tmp), "w", format="mp4") as out:
            vin = inp.streams.video[0]
            rate = vin.average_rate or vin.guessed_rate or 25
            stream = None
            for frame in inp.decode(vin):
                img = frame.to_ndarray(format="rgb24")
                if scale != 1.0:
                    h, w = img.shape[:2]
                    img = cv2.resize(img, (max(2, round(w * scale)), max(2, round(h * scale))),
                                     interpolation=cv2.INTER_AREA)
                h, w = img.shape[:2]
                img = np.ascontiguousarray(np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)),
                                                  mode="edge"))
                if stream is None:
                    stream = out.add_stream("libx264", rate=rate)
                    stream.width, stream.height = img.shape[1], img.shape[0]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(18 if crf is None else int(crf)),
                                      "preset": preset}
                out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            if stream is None:
                raise PerturbationError(f"{src}: no frames")
            out.mux(stream.encode())
        tmp.replace(dst)
    except av.FFmpegError as exc:
        raise PerturbationError(f"{src}: re-encoding failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def apply(kind: str, img: np.ndarray, param: float, rng: np.random.Generator) -> np.ndarray:
    """One image perturbation by name (``h264``: the image as a one-frame video)."""
    if kind == "saturation":
        return saturation(img, param)
    if kind == "contrast":
        return contrast(img, param)
    if kind == "block":
        return block_occlusion(img, int(param), rng)
    if kind == "noise":
        return gaussian_noise(img, param, rng)
    if kind == "blur":
        return gaussian_blur(img, int(param))
    if kind == "pixelate":
        return pixelate(img, param)
    if kind == "jpeg":
        return jpeg(img, int(param))
    if kind == "h264":
        return h264([img], int(param))[0]
    raise OptionError(f"unknown perturbation {kind!r} (known: {', '.join(TYPES)})")


# ---- robust training (data.augment: robust) ---------------------------------------------------
ROBUST_P = 0.5  # share of training items that get one perturbation


def draw_perturbation(rng: np.random.Generator, p: float = ROBUST_P) -> tuple[str, float] | None:
    """A random ``(kind, parameter)`` for training, or None (probability ``1 - p``).

    Kinds are drawn uniformly from :data:`TYPES`; parameters continuously from mild up to
    DeeperForensics level 5 rather than its five values only, so training does not see just
    the evaluation settings. ``h264`` on a single face is intra-coded (CRF 23-40).
    """
    if rng.random() >= p:
        return None
    kind = TYPES[int(rng.integers(len(TYPES)))]
    if kind == "saturation":
        param: float = rng.uniform(0.0, 0.8)
    elif kind == "contrast":
        param = rng.uniform(0.35, 0.95)
    elif kind == "block":
        param = int(rng.integers(4, 81))
    elif kind == "noise":
        param = float(np.exp(rng.uniform(np.log(1e-4), np.log(0.05))))
    elif kind == "blur":
        param = int(rng.integers(1, 11)) * 2 + 1  # 3..21
    elif kind == "pixelate":
        param = rng.uniform(1.5, 6.0)
    elif kind == "jpeg":
        param = int(rng.integers(30, 96))
    else:  # h264
        param = int(rng.integers(23, 41))
    return kind, param


def random_perturbation(img: np.ndarray, rng: np.random.Generator, p: float = ROBUST_P
                        ) -> np.ndarray:
    """``img`` with one perturbation drawn by :func:`draw_perturbation` (or unchanged).

    Photometric, occlusion or compression only: no pixel moves, so a blend mask or landmarks
    of the image stay valid. An input the drawn kind cannot handle is returned unchanged.
    """
    drawn = draw_perturbation(rng, p)
    if drawn is None:
        return img
    try:
        return apply(drawn[0], img, drawn[1], rng)
    except PerturbationError:
        return img


__all__ = ["DEEPERFORENSICS", "JPEG_QUALITY", "LEVELS", "PARAMETER_NAMES", "ROBUST_P", "TYPES",
           "VIDEO_TYPES", "PerturbationError", "apply", "block_occlusion", "contrast",
           "decode_video", "degrade_video", "draw_perturbation", "encode_h264", "gaussian_blur", "gaussian_noise",
           "h264", "jpeg", "parameter", "pixelate", "random_perturbation", "saturation"]
