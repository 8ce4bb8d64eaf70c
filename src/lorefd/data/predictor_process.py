"""dlib's 68-point shape predictor in a child process, for a fast cold start.

Loading the predictor takes about 0.9 s on a 2-core Xeon, and dlib holds the GIL while it parses
the 95 MB model, so loading it in a thread gains nothing (benchmarks/RESULTS.md). A child
process loads it on another core while ``lorefd detect`` loads the face detector, the network
and the image; the parent then sends each face's neighbourhood and gets the 68 points back.
The points are the in-process predictor's, bit for bit (tests/test_predictor_process.py).

Run as ``python -m lorefd.data.predictor_process MODEL.dat [PARENT_PID]``: this module imports
only numpy and dlib, so the child starts in about 0.1 s.

The child dies with its parent, however the parent ends: it reads its requests from a pipe
and exits when the pipe closes, and on Linux it also asks the kernel to kill it when the
parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), so a parent killed by SIGTERM, SIGINT or
SIGKILL while the child still loads its model (~1 s, deaf to the pipe) leaves no process
behind. (The kernel counts the parent *thread* that started the child: the signal is asked
for only when the main thread starts it; children started by another thread rely on the pipe.)
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

# request: image height, width, then the face box (left, top, right, bottom) in that image
_REQUEST = struct.Struct("<6q")
_POINTS = 68 * 2 * 4  # float32
_OK, _ERROR = b"\x00", b"\x01"
# the predictor's pixel features stay near the face: it is sent the box widened by this much
# of its size on every side, not the whole frame (a 720p frame is 2.7 MB)
CONTEXT = 1.0


class PredictorProcessError(RuntimeError):
    """The child process failed to start, died, or could not run the predictor."""


class PredictorProcess:
    """The predictor, loading in a child process from construction on; call it as
    ``points = process(rgb, (left, top, right, bottom))``. Thread-safe (one request at a time).
    """

    def __init__(self, model: str | Path) -> None:
        self.model = str(model)
        self._lock = threading.Lock()
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", __name__, self.model,
                 str(os.getpid()) if threading.current_thread() is threading.main_thread()
                 else "0"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise PredictorProcessError(f"cannot start the landmark process: {exc}") from exc

    def __call__(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The ``(68, 2)`` float32 points of the face in ``box`` of ``rgb`` (HxWx3 uint8)."""
        left, top, right, bottom = (int(v) for v in box)
        h, w = rgb.shape[:2]
        pad_x, pad_y = int(CONTEXT * (right - left + 1)), int(CONTEXT * (bottom - top + 1))
        x0, y0 = min(max(0, left - pad_x), w), min(max(0, top - pad_y), h)
        x1, y1 = max(min(w, right + pad_x + 1), x0), max(min(h, bottom + pad_y + 1), y0)
        region = np.ascontiguousarray(rgb[y0:y1, x0:x1], dtype=np.uint8)
        header = _REQUEST.pack(y1 - y0, x1 - x0, left - x0, top - y0, right - x0, bottom - y0)
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None or proc.stdout is None:
                raise PredictorProcessError("the landmark process is closed")
            try:
                proc.stdin.write(header)
                proc.stdin.write(region.data)
                proc.stdin.flush()
                status = proc.stdout.read(1)
                if status == _OK:
                    payload = _read_exactly(proc.stdout, _POINTS)
                    points = np.frombuffer(payload, np.float32).reshape(68, 2).copy()
                    return points + np.array([x0, y0], np.float32)
                if status == _ERROR:
                    size = struct.unpack("<q", _read_exactly(proc.stdout, 8))[0]
                    raise PredictorProcessError(_read_exactly(proc.stdout, size).decode())
            except (OSError, EOFError):
                pass  # it died: say why below
            err = self._stderr_tail()
            self.close()
            raise PredictorProcessError(f"the landmark process exited{': ' + err if err else ''}")

    def _stderr_tail(self) -> str:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return ""
        try:
            proc.wait(timeout=2)
            return proc.stderr.read().decode(errors="replace").strip().splitlines()[-1]
        except (subprocess.TimeoutExpired, OSError, IndexError):
            return ""

    def close(self) -> None:
        """End the child (it also ends by itself when this process exits: its input closes)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


def _read_exactly(stream, n: int) -> bytes:  # type: ignore[no-untyped-def]
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> bool:
    """In the child: be killed (SIGKILL) when the parent ``parent`` dies (Linux); exit now if it
    is already gone. False where the platform has no such signal (the pipe still ends us)."""
    if not parent:
        return False
    armed = False
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # it died before the signal was asked for
        os._exit(0)
    return armed


def main(model: str, parent: int = 0) -> int:
    """The child: load the predictor, then answer requests until the input closes."""
    die_with_parent(parent)
    import dlib

    predictor = dlib.shape_predictor(model)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = stdin.read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            return 0
        h, w, left, top, right, bottom = _REQUEST.unpack(head)
        try:
            rgb = np.frombuffer(_read_exactly(stdin, h * w * 3), np.uint8).reshape(h, w, 3)
        except EOFError:
            return 0
        try:
            shape = predictor(rgb, dlib.rectangle(left, top, right, bottom))
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            stdout.write(_OK + points.tobytes())
        except Exception as exc:  # noqa: BLE001 - report it to the parent, keep serving
            text = f"{type(exc).__name__}: {exc}".encode()
            stdout.write(_ERROR + struct.pack("<q", len(text)) + text)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0))
