"""Video decoding and frame sampling (Section IV-B: frames taken at fixed intervals).

PyAV decodes; frames we do not keep are decoded but never converted to RGB (decode-and-skip),
and decoding stops after the last frame we want. OpenCV is the fallback when PyAV is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorefd.utils import log


class VideoError(RuntimeError):
    """A video that cannot be decoded; ``str(exc)`` is the reason for the skip log."""


@dataclass
class VideoInfo:
    """What a container says about its first video stream."""

    frames: int
    fps: float
    width: int
    height: int
    codec: str


def sample_indices(total: int, frames: int | None = 32, every: int | None = None) -> list[int]:
    """Indices of the frames to keep: ``frames`` evenly spaced, or every ``every``-th frame.

    A video with ``total <= frames`` gives all its frames (the caller warns).
    """
    if total <= 0:
        return []
    if every:
        return list(range(0, total, max(1, int(every))))
    n = int(frames or 32)
    if total <= n:
        return list(range(total))
    # Centre of each of n equal bins: never the very first/last frame, never a repeat.
    return sorted({int((i + 0.5) * total / n) for i in range(n)})


def _import_av():  # noqa: ANN202 - module or None
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency; OpenCV is a fallback
        return None
    return av


def _count_packets(path: Path) -> int:
    """Frame count by demuxing only (no decoding), for containers without a frame index."""
    av = _import_av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size)


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, fps, size and codec of ``path``; raise :class:`VideoError` with a reason."""
    path = Path(path)
    if not path.is_file():
        raise VideoError("not a file")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    av = _import_av()
    if av is None:  # pragma: no cover
        return _probe_cv2(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if ctx is None:
                raise VideoError(f"unsupported codec: no decoder for the video stream "
                                 f"({container.format.name})")
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            frames = int(stream.frames or 0)
            width, height, codec = ctx.width, ctx.height, ctx.name
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise VideoError(f"unreadable container: {exc}") from exc
    if frames <= 0:
        try:
            frames = _count_packets(path)
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"unreadable container: {exc}") from exc
    if frames <= 0:
        raise VideoError("no frames")
    return VideoInfo(frames=frames, fps=fps, width=width, height=height, codec=codec)


def read_frames(path: str | Path, indices: list[int],
                threads: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, rgb)`` for each wanted frame index, in order.

    Decoding stops after the last wanted index. A stream that breaks part-way (truncated or
    corrupt data) ends the iteration early with a warning; the frames before it are kept.
    ``threads`` is PyAV's decoder thread count (0: let FFmpeg decide).
    """
    wanted = sorted(set(indices))
    if not wanted:
        return
    av = _import_av()
    if av is None:  # pragma: no cover
        yield from _read_cv2(Path(path), wanted)
        return
    last = wanted[-1]
    keep = set(wanted)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"unreadable container: {exc}") from exc
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                if index in keep:
                    yield index, frame.to_ndarray(format="rgb24")
                if index >= last:
                    break
        except (av.FFmpegError, OSError, ValueError) as exc:
            log.warning("%s: decoding stopped after frame %d: %s", path, index, exc)


def _probe_cv2(path: Path) -> VideoInfo:  # pragma: no cover - only without PyAV
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError("unreadable container (OpenCV)")
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if frames <= 0:
            raise VideoError("no frames")
        return VideoInfo(frames=frames, fps=cap.get(cv2.CAP_PROP_FPS) or 25.0,
                         width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), codec="")
    finally:
        cap.release()


def _read_cv2(path: Path, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:  # pragma: no cover
    import cv2

    cap = cv2.VideoCapture(str(path))
    keep, last, index = set(wanted), wanted[-1], -1
    try:
        while index < last:
            if not cap.grab():
                break
            index += 1
            if index in keep:
                ok, bgr = cap.retrieve()
                if ok:
                    yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
