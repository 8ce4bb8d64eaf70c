"""Uploads for ``lorefd serve``: file types from their first bytes, client-side names, and a
streaming multipart reader with size and speed limits."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import python_multipart
from fastapi import Request
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

MB = 1024 * 1024
ACCEPTED = "JPEG, PNG, BMP, WebP, TIFF images; MP4/MOV, MKV/WebM, AVI, MPEG videos"
# ISO base media brands of HEIF (HEIC) and AVIF stills and sequences: not read by detect (415)
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs",
               b"mif1", b"msf1", b"avif", b"avis"}


def sniff(head: bytes) -> tuple[str, str] | None:
    """``(kind, extension)`` of a file from its first bytes (>= 16), or None when it is not an
    image or video that ``lorefd detect`` reads. The extension only routes the file."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image", ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", ".png"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in (
            12, 16, 40, 52, 56, 64, 108, 124):
        return "image", ".bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", ".webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", ".tif"
    if head[4:8] == b"ftyp":  # ISO media: a video, unless its brand says HEIF/AVIF images
        return None if head[8:12] in HEIF_BRANDS else ("video", ".mp4")
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):  # old QuickTime
        return "video", ".mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska, WebM
        return "video", ".mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", ".avi"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "video", ".mpg"
    return None


def client_name(raw: str, index: int) -> str:
    """A file name to show (never used on disk): the last path component, printable, short."""
    name = re.split(r"[/\\]", raw or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:200]
    return name or f"file{index + 1}"


@dataclass
class Upload:
    """One uploaded file: its name as sent, where it was written, its size and sniffed type."""

    name: str
    path: Path
    size: int = 0
    head: bytes = b""
    kind: str | None = None


class UploadTooLarge(Exception):
    """The body passed the size limit while it was read."""


class UploadTooSlow(Exception):
    """A body that stalls or trickles: it would hold one of the service's places forever."""


class BadUpload(Exception):
    """A malformed multipart body."""


class UploadAborted(Exception):
    """The client closed the connection before the body was complete."""


async def receive_files(request: Request, folder: Path, limit: int,
                        max_files: int, idle_s: float = 10.0, min_rate: float = 16384.0,
                        grace_s: float = 5.0) -> list[Upload]:
    """Stream a multipart body into ``folder/<n>.part`` files (names chosen here), counting
    bytes: :class:`UploadTooLarge` as soon as the body passes ``limit``;
    :class:`UploadTooSlow` when no byte comes for ``idle_s`` or, after ``grace_s``, the body
    arrives slower than ``min_rate`` bytes/s on average (a slow-loris client)."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise BadUpload("send the files as multipart/form-data")
    uploads: list[Upload] = []
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "fh": None, "skip": False}

    def on_part_begin() -> None:
        state.update(headers={}, fh=None, skip=False)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state.update(field=b"", value=b"")

    def on_headers_finished() -> None:
        _, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        if b"filename" not in opts:  # a plain form field: ignored
            state["skip"] = True
            return
        if len(uploads) >= max_files:
            raise BadUpload(f"too many files (at most {max_files} per request)")
        n = len(uploads)
        raw = opts[b"filename"].decode("utf-8", "replace")
        up = Upload(name=client_name(raw, n), path=folder / f"{n}.part")
        uploads.append(up)
        state["fh"] = open(up.path, "wb")  # noqa: SIM115 - closed in on_part_end / finally

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["skip"] or state["fh"] is None:
            return
        up = uploads[-1]
        chunk = data[start:end]
        if len(up.head) < 32:
            up.head += chunk[:32 - len(up.head)]
        up.size += len(chunk)
        state["fh"].write(chunk)

    def on_part_end() -> None:
        if state["fh"] is not None:
            state["fh"].close()
            state["fh"] = None

    parser = python_multipart.MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    total, start, chunks = 0, time.monotonic(), request.stream().__aiter__()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), idle_s)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise UploadTooSlow(f"no data for {idle_s:g} s") from None
            except ClientDisconnect:
                raise UploadAborted from None
            total += len(chunk)
            if total > limit:
                raise UploadTooLarge
            elapsed = time.monotonic() - start
            if elapsed > grace_s and total < min_rate * elapsed:
                raise UploadTooSlow(f"{total / elapsed / 1024:.1f} KB/s, below "
                                    f"{min_rate / 1024:g} KB/s")
            parser.write(chunk)
        parser.finalize()
    except python_multipart.exceptions.FormParserError as exc:
        raise BadUpload(f"malformed multipart body: {exc}") from exc
    finally:
        if state["fh"] is not None:
            state["fh"].close()
    return uploads
