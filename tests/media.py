"""Small synthetic media for tests and benchmarks, built from the bundled real face stills.

Everything here is generic (no lorefd imports besides the asset folder): videos are h264 made
with PyAV, faces move smoothly over a textured background so a tracker has work to do, and
``make_bad_files`` writes every kind of broken input a preprocessing run must survive.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

FACES_DIR = Path(__file__).resolve().parents[1] / "src" / "lorefd" / "assets" / "faces" / "real"


def stills(n: int = 4, start: int = 0) -> list[Path]:
    """``n`` bundled 256x256 real face stills (FFHQ), in a stable order."""
    paths = sorted(FACES_DIR.glob("*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no bundled faces in {FACES_DIR}")
    return [paths[(start + i) % len(paths)] for i in range(n)]


def _background(size: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth coloured background (no face-like structure) of ``size`` = (width, height)."""
    w, h = size
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, size=(6, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def render_frames(faces: Sequence[str | Path], n_frames: int, size: tuple[int, int],
                  motion: bool = True, face_frac: float = 0.75, seed: int = 0) -> list[np.ndarray]:
    """RGB frames with each still pasted (first one largest) and moving on a small orbit.

    ``face_frac`` is the pasted still's side relative to the frame height; further stills are
    pasted at 60% of that size on the other side of the frame (a several-faces video).
    """
    w, h = size
    bg = _background(size, seed)
    imgs = [np.asarray(Image.open(p).convert("RGB")) for p in faces]
    frames = []
    for t in range(n_frames):
        frame = bg.copy()
        phase = 2 * np.pi * t / max(n_frames, 1)
        for k, img in enumerate(imgs):
            side = int(h * face_frac * (1.0 if k == 0 else 0.6))
            side -= side % 2
            if motion:
                side = int(side * (1.0 + 0.05 * np.sin(phase)))
            tile = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
            cx = w * (0.5 if len(imgs) == 1 else (0.3 if k == 0 else 0.78))
            cy = h * 0.5
            if motion:
                cx += 0.05 * w * np.sin(phase)
                cy += 0.04 * h * np.cos(phase)
            x0 = int(np.clip(cx - side / 2, 0, w - side))
            y0 = int(np.clip(cy - side / 2, 0, h - side))
            frame[y0:y0 + side, x0:x0 + side] = tile
        frames.append(frame)
    return frames


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int = 12,
                codec: str = "libx264", crf: int = 23) -> Path:
    """Encode RGB ``frames`` to ``path`` (h264 yuv420p by default) with PyAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_video(path: str | Path, faces: Sequence[str | Path] | None = None,
               seconds: float = 2.0, fps: int = 12, size: tuple[int, int] = (320, 240),
               motion: bool = True, seed: int = 0, face_frac: float = 0.75) -> Path:
    """A short h264 video of moving faces (``faces=[]`` gives a video with no face)."""
    faces = stills(1, seed) if faces is None else faces
    n = max(1, round(seconds * fps))
    return write_video(path, render_frames(faces, n, size, motion, face_frac, seed), fps=fps)


def make_image(path: str | Path, face: str | Path | None = None, mode: str = "RGB",
               size: tuple[int, int] = (320, 320)) -> Path:
    """A face still pasted on a background, saved in PIL ``mode`` (L, RGBA, CMYK, I;16...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = render_frames([face or stills(1)[0]], 1, size, motion=False)[0]
    img = Image.fromarray(rgb)
    if mode == "I;16":
        gray = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(gray).convert("I;16")
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def write_audio(path: str | Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    """An mp4 with one silent AAC audio stream and no video stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for i in range(max(1, int(seconds * rate / 1024))):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = rate, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (a decompression-bomb style file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def make_bad_files(folder: str | Path, size: tuple[int, int] = (320, 240)) -> dict[str, Path]:
    """Every broken or awkward input a preprocessing run must skip (or handle) without crashing.

    Returns ``{case: path}`` for: ``empty`` (0-byte video), ``truncated`` (mp4 cut in half),
    ``corrupt`` (random bytes), ``unsupported_codec`` (h264 stream relabelled with an unknown
    codec tag), ``audio_only`` (an mp4 without a video stream), ``not_a_video`` (text file named .mp4), ``truncated_readable`` (an mkv cut at
    60%: its first frames decode), ``no_face`` (background only),
    ``several_faces``, ``odd_name`` (spaces, quotes, unicode), ``gray``, ``cmyk``, ``16bit``,
    ``alpha`` images, ``huge_image`` (header claims 30000x30000) and ``bad_image``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    good = make_video(folder / "_good.mp4", seconds=1.0, size=size)
    data = good.read_bytes()
    good.unlink()

    out["empty"] = folder / "empty.mp4"
    out["empty"].write_bytes(b"")
    out["truncated"] = folder / "truncated.mp4"
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["corrupt"] = folder / "corrupt.mp4"
    out["corrupt"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    out["unsupported_codec"] = folder / "unsupported_codec.mp4"
    out["unsupported_codec"].write_bytes(data.replace(b"avc1", b"zzz9").replace(b"avcC", b"zzzC"))
    out["audio_only"] = write_audio(folder / "audio_only.mp4")
    out["not_a_video"] = folder / "not_a_video.mp4"
    out["not_a_video"].write_text("this is not a video\n")
    mkv = make_video(folder / "_cut.mkv", seconds=2.0, size=size).read_bytes()
    (folder / "_cut.mkv").unlink()
    out["truncated_readable"] = folder / "truncated_readable.mkv"
    out["truncated_readable"].write_bytes(mkv[: int(len(mkv) * 0.6)])
    out["no_face"] = make_video(folder / "no_face.mp4", faces=[], seconds=1.0, size=size)
    out["several_faces"] = make_video(folder / "several_faces.mp4", faces=stills(2, 3),
                                      seconds=1.0, size=(480, 240), face_frac=0.7)
    out["odd_name"] = make_video(folder / "odd 'näme' #1 (copy).mp4", seconds=1.0, size=size)
    out["gray"] = make_image(folder / "gray.png", mode="L")
    out["cmyk"] = make_image(folder / "cmyk.jpg", mode="CMYK")
    out["16bit"] = make_image(folder / "sixteen.png", mode="I;16")
    out["alpha"] = make_image(folder / "alpha.png", mode="RGBA")
    out["huge_image"] = folder / "huge.png"
    _png_header_only(out["huge_image"], 30000, 30000)
    out["bad_image"] = folder / "bad.jpg"
    out["bad_image"].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return out
