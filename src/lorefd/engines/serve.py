"""``lorefd serve``: the detector as an HTTP API and a self-contained web page.

:func:`create_app` builds the FastAPI application around one :class:`Service`:

* ``POST /v1/detect`` (multipart, one or more files; ``?heatmap=true``): the report of
  :mod:`lorefd.engines.report_schema` (the ``detect --json`` schema) with ``path`` = the
  uploaded file's name and ``heatmap`` = a URL under ``/v1/results/{id}/heatmap/``;
* ``GET /v1/results/{id}/heatmap/{n}.png|mp4``: kept ``keep_minutes``, then deleted;
* ``GET /v1/model``, ``GET /health``, ``GET /`` (the page), OpenAPI docs at ``/docs``.

Limits: a body above ``max_upload_mb`` is refused with 413 from its ``Content-Length`` before
anything is read, or as soon as the streamed bytes pass the limit; file types are decided by
their first bytes (415 for anything that is not an image or video detect can read); the model
is loaded once and runs in a pool of ``workers`` threads (at most that many inferences at
once); ``workers + queue`` requests are admitted at a time, the next gets 503 with
``Retry-After``. Uploads are written under a random name in a private temporary folder and
deleted when their request ends; no name or path from a request reaches the filesystem.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import python_multipart
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from python_multipart.multipart import parse_options_header

from lorefd.data.preprocess.crops import FacePipeline
from lorefd.engines import report_schema as schema
from lorefd.engines.detect import Context, InputFile, claim, detect_file
from lorefd.models.bundle import Bundle, shipped_bundle
from lorefd.models.graph import OnnxDetector, load_runtime_model
from lorefd.version import __version__

log = logging.getLogger("lorefd")

MB = 1024 * 1024
PAGE = Path(__file__).resolve().parents[1] / "assets" / "serve" / "index.html"
ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
NAME_RE = re.compile(r"^[0-9]{1,4}\.(png|mp4)$")
ACCEPTED = "JPEG, PNG, BMP, WebP, TIFF images; MP4/MOV, MKV/WebM, AVI, MPEG videos"


# ------------------------------------------------------------------------------ content types
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
    if head[4:8] == b"ftyp":
        return "video", ".mp4"
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


# ------------------------------------------------------------------------------ results
@dataclass
class _Entry:
    folder: Path
    files: dict[str, Path]
    expires: float


class ResultStore:
    """Heatmaps of past requests under random ids; deleted ``keep_seconds`` after creation."""

    def __init__(self, root: Path, keep_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.keep_seconds = keep_seconds
        self.clock = clock
        self.entries: dict[str, _Entry] = {}
        self.lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def new_folder(self) -> tuple[str, Path]:
        """A fresh random id (128 bits) and its (empty) folder; published by :meth:`publish`."""
        rid = secrets.token_urlsafe(16)
        folder = self.root / rid
        folder.mkdir(mode=0o700)
        return rid, folder

    def publish(self, rid: str, folder: Path, files: dict[str, Path]) -> None:
        with self.lock:
            self.entries[rid] = _Entry(folder, files, self.clock() + self.keep_seconds)

    def get(self, rid: str, name: str) -> Path | None:
        """The file ``name`` of result ``rid`` if it exists and has not expired."""
        self.sweep()
        if not ID_RE.match(rid) or not NAME_RE.match(name):
            return None
        with self.lock:
            entry = self.entries.get(rid)
            return None if entry is None else entry.files.get(name)

    def sweep(self) -> int:
        """Delete expired results; returns how many."""
        now = self.clock()
        with self.lock:
            gone = [rid for rid, e in self.entries.items() if e.expires <= now]
            folders = [self.entries.pop(rid).folder for rid in gone]
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        return len(gone)

    def __len__(self) -> int:
        return len(self.entries)


# ------------------------------------------------------------------------------ the service
@dataclass
class ServeOptions:
    """Limits and behaviour of the service (the ``lorefd serve`` options)."""

    max_upload_mb: float = 200.0
    workers: int = 1
    queue: int = 8
    keep_minutes: float = 10.0
    token: str | None = None
    frames: int | None = None
    threshold: float | None = None
    batch_size: int | None = None
    device: str | None = None
    runtime: str | None = None  # "onnx" | "torch"; default onnx when the bundle has a graph
    threads: int | None = None
    max_files: int = 32
    per_client: int = 2  # requests one client address may have in the service at a time
    upload_idle_s: float = 10.0  # an upload that sends nothing this long is dropped (408)
    min_upload_kbps: float = 16.0  # ... or, after 5 s, one slower than this on average
    retinaface_weights: str | None = None
    workdir: str | None = None  # parent of the private temporary folder (default: system's)


class _HeatmapSink:
    """Heatmap paths for one request: ``<folder>/<n>.png|mp4`` (``n`` = the upload's index).

    Each request has its own fresh random folder; the name is still claimed on disk
    (:func:`~lorefd.engines.detect.claim`), so nothing is ever overwritten silently."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, item: InputFile, ext: str) -> Path:
        path = self.folder / f"{item.rel.stem}{ext}"
        if not claim(path):
            raise FileExistsError(f"heatmap {path.name} exists already")
        return path


@dataclass
class Service:
    """The loaded model, the worker pool, admission control and the result store."""

    bundle: Bundle
    opts: ServeOptions
    device: Any
    threshold: float
    root: Path
    store: ResultStore
    pool: concurrent.futures.ThreadPoolExecutor
    started: float = field(default_factory=time.time)
    active: int = 0
    per_client: dict[str, int] = field(default_factory=dict)  # requests in, per address
    recent: deque = field(default_factory=lambda: deque(maxlen=20))
    local: threading.local = field(default_factory=threading.local)

    @classmethod
    def load(cls, bundle_path: str | Path, opts: ServeOptions) -> Service:
        """Load the model once (a bundle, run or checkpoint folder; BundleError if unusable)
        and make the private work folder."""
        bundle = load_runtime_model(bundle_path, opts.device, opts.runtime, opts.threads)
        dev = ("cpu" if isinstance(bundle.detector, OnnxDetector)
               else next(bundle.detector.parameters()).device)
        thr = bundle.threshold if opts.threshold is None else float(opts.threshold)
        root = Path(tempfile.mkdtemp(prefix="lorefd-serve-", dir=opts.workdir))
        (root / "uploads").mkdir(mode=0o700)
        store = ResultStore(root / "results", opts.keep_minutes * 60.0)
        pool = concurrent.futures.ThreadPoolExecutor(max(1, opts.workers),
                                                     thread_name_prefix="lorefd-infer")
        svc = cls(bundle=bundle, opts=opts, device=dev, threshold=thr, root=root, store=store,
                  pool=pool)
        svc.pipeline()  # the face detector loads now, not with the first request
        return svc

    @property
    def capacity(self) -> int:
        return max(1, self.opts.workers) + max(0, self.opts.queue)

    def pipeline(self) -> FacePipeline:
        """This thread's face pipeline (face detectors are not shared between threads)."""
        if getattr(self.local, "faces", None) is None:
            self.local.faces = FacePipeline.from_bundle(self.bundle, self.opts.retinaface_weights,
                                                        str(self.device))
        return self.local.faces

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue ahead at the recent job time."""
        per_job = sum(self.recent) / len(self.recent) if self.recent else 2.0
        ahead = self.active - max(1, self.opts.workers) + 1
        return int(min(120, max(1, math.ceil(per_job * ahead / max(1, self.opts.workers)))))

    def model_card(self) -> str | None:
        """The first paragraph of the bundle's model card (``MODEL.md`` beside the shipped
        bundle, or ``<bundle>.md``), if there is one."""
        path = self.bundle.path
        cards = [path.with_suffix(".md")]
        if path == shipped_bundle():
            cards.append(path.parent / "MODEL.md")
        for card in cards:
            if card.is_file():
                paras = [p.strip() for p in card.read_text(errors="replace").split("\n\n")]
                text = [p for p in paras if p and not p.startswith("#")]
                return text[0][:2000] if text else None
        return None

    def model_info(self) -> dict[str, Any]:
        """The report's ``model`` block (the bundle's file name; the runtime that runs it)."""
        return schema.model_info(self.bundle.manifest, self.bundle.path.name,
                                 getattr(self.bundle.detector, "runtime", "torch"))

    def model_json(self) -> dict[str, Any]:
        info = self.model_info()
        return {"model": info, "threshold": self.threshold, "card": self.model_card(),
                "frames": int(self.opts.frames or self.bundle.preprocess["frames"]),
                "limits": {"max_upload_mb": self.opts.max_upload_mb,
                           "workers": self.opts.workers, "queue": self.opts.queue,
                           "keep_minutes": self.opts.keep_minutes,
                           "max_files": self.opts.max_files},
                "accepted": ACCEPTED}

    def run(self, uploads: list[Upload], heat_folder: Path | None) -> list[dict[str, Any]]:
        """Score the uploads (in a worker thread); results with client names, no server path."""
        faces = self.pipeline()
        batch = self.opts.batch_size or (32 if getattr(self.device, "type", "") == "cuda" else 4)
        ctx = Context(bundle=self.bundle, faces=faces, device=self.device,
                      threshold=self.threshold,
                      frames=int(self.opts.frames or faces.frames), batch_size=batch,
                      heatmaps=_HeatmapSink(heat_folder) if heat_folder is not None else None)
        results = []
        for up in uploads:
            res = detect_file(InputFile(up.path, Path(up.path.name)), ctx)
            res["path"] = up.name
            res["message"] = res["message"].replace(str(up.path), up.name).replace(
                str(self.root), "")
            results.append(res)
        return results

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------------------ the app
def create_app(service: Service, sweep_seconds: float = 30.0) -> FastAPI:
    """The FastAPI application around a loaded :class:`Service`."""
    opts = service.opts
    limit = int(opts.max_upload_mb * MB)
    too_large = f"file too large (max {opts.max_upload_mb:g} MB)"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async def sweeper() -> None:
            while True:
                await asyncio.sleep(sweep_seconds)
                service.store.sweep()

        task = asyncio.create_task(sweeper())
        try:
            yield
        finally:
            task.cancel()
            service.close()

    app = FastAPI(title="lorefd", version=__version__, lifespan=lifespan,
                  description="Face forgery detection: P(fake), verdicts and heatmaps.")
    app.state.service = service

    def auth(request: Request) -> None:
        if opts.token is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, cred = got.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
                cred.strip().encode(), opts.token.encode()):
            raise HTTPException(401, "missing or wrong token (Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    api = [Depends(auth)]

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"),
                            headers={"Cache-Control": "no-store"})

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness, and what the page needs before the first call."""
        return {"status": "ok", "auth": opts.token is not None,
                "max_upload_mb": opts.max_upload_mb, "busy": service.active,
                "capacity": service.capacity}

    @app.get("/v1/model", dependencies=api)
    def model() -> dict[str, Any]:
        """The bundle's metadata, threshold, model card summary and the service's limits."""
        return service.model_json()

    @app.post("/v1/detect", dependencies=api, openapi_extra={"requestBody": {
        "required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["files"], "properties": {"files": {
                "type": "array", "items": {"type": "string", "format": "binary"}}}}}}}})
    async def detect(request: Request, heatmap: bool = False) -> Response:
        """Score uploaded images and videos: the ``lorefd detect --json`` report."""
        t0 = time.perf_counter()
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return JSONResponse({"detail": too_large}, 413, headers={"Connection": "close"})
        if service.active >= service.capacity:
            return JSONResponse({"detail": "server busy: try again later"}, 503,
                                headers={"Retry-After": str(service.retry_after()),
                                         "Connection": "close"})
        host = request.client.host if request.client else "unknown"
        if service.per_client.get(host, 0) >= opts.per_client:  # one client cannot fill it
            return JSONResponse({"detail": f"at most {opts.per_client} requests at a time per "
                                           "client: wait for one to finish"}, 429,
                                headers={"Retry-After": str(service.retry_after())})
        service.active += 1
        service.per_client[host] = service.per_client.get(host, 0) + 1
        folder = service.root / "uploads" / secrets.token_urlsafe(16)
        folder.mkdir(mode=0o700)
        job: concurrent.futures.Future | None = None
        try:
            try:
                uploads = await receive_files(request, folder, limit, opts.max_files,
                                              opts.upload_idle_s, opts.min_upload_kbps * 1024)
            except UploadTooSlow as exc:
                log.info("serve: dropped a slow upload from %s (%s; 408)", host, exc)
                return JSONResponse({"detail": f"upload too slow ({exc})"}, 408,
                                    headers={"Connection": "close"})
            except UploadTooLarge:
                log.info("serve: refused upload over %s MB (413)", opts.max_upload_mb)
                return JSONResponse({"detail": too_large}, 413, headers={"Connection": "close"})
            except BadUpload as exc:
                return JSONResponse({"detail": str(exc)}, 400)
            if not uploads:
                return JSONResponse({"detail": "no file in the request (field 'files')"}, 400)
            bad = []
            for up in uploads:
                found = sniff(up.head)
                if found is None:
                    bad.append(up.name)
                    continue
                up.kind, ext = found
                up.path = up.path.rename(up.path.with_suffix(ext))
            if bad:
                log.info("serve: 415 for %s", ", ".join(bad))
                return JSONResponse({"detail": f"not an image or video: {', '.join(bad)} "
                                               f"(accepted: {ACCEPTED})", "files": bad}, 415)
            rid, heat_folder = service.store.new_folder() if heatmap else (None, None)
            job = service.pool.submit(service.run, uploads, heat_folder)
            try:
                results = await asyncio.wrap_future(job)
            except Exception:
                if heat_folder is not None:
                    shutil.rmtree(heat_folder, ignore_errors=True)
                raise
            if heat_folder is not None:
                files = {}
                for i, res in enumerate(results):
                    ext = ".png" if res["type"] == "image" else ".mp4"
                    path = heat_folder / f"{i}{ext}"
                    if res["heatmap"] and path.is_file():
                        files[path.name] = path
                        res["heatmap"] = f"/v1/results/{rid}/heatmap/{path.name}"
                    else:
                        res["heatmap"] = None
                if files:
                    service.store.publish(rid, heat_folder, files)
                else:
                    shutil.rmtree(heat_folder, ignore_errors=True)
            seconds = time.perf_counter() - t0
            service.recent.append(seconds)
            report = schema.build_report(results, service.model_info(), service.threshold,
                                         seconds)
            for up, res in zip(uploads, results, strict=True):
                log.info("serve: %s (%d bytes): %s in %.2f s", up.name, up.size, res["status"],
                         res["seconds"])
            return Response(schema.dumps(report, indent=None), media_type="application/json")
        finally:
            service.active -= 1
            service.per_client[host] -= 1
            if not service.per_client[host]:
                del service.per_client[host]
            if job is None or job.done():
                shutil.rmtree(folder, ignore_errors=True)
            else:  # the client went away: delete the uploads when the worker is done with them
                job.add_done_callback(lambda _: shutil.rmtree(folder, ignore_errors=True))

    @app.get("/v1/results/{rid}/heatmap/{name}", dependencies=api,
             response_class=FileResponse)
    def heatmap_file(rid: str, name: str) -> FileResponse:
        """A heatmap of an earlier request (PNG for an image, MP4 for a video) until it
        expires."""
        path = service.store.get(rid, name)
        if path is None or not path.is_file():
            raise HTTPException(404, "no such heatmap (expired, or never made)")
        media = "image/png" if path.suffix == ".png" else "video/mp4"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private"})

    return app


__all__ = ["ResultStore", "ServeOptions", "Service", "create_app", "sniff"]
