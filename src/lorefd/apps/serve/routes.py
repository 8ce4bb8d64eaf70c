"""The FastAPI application of ``lorefd serve`` around one loaded service."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from lorefd.apps.serve.service import Service
from lorefd.apps.serve.uploads import (
    ACCEPTED,
    MB,
    BadUpload,
    UploadAborted,
    UploadTooLarge,
    UploadTooSlow,
    receive_files,
    sniff,
)
from lorefd.engines import report_schema as schema
from lorefd.version import __version__

log = logging.getLogger("lorefd")

PAGE = Path(__file__).resolve().parents[2] / "assets" / "serve" / "index.html"


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
            except UploadAborted:
                log.info("serve: %s closed the connection mid-upload", host)
                return JSONResponse({"detail": "the upload was cut short"}, 400,
                                    headers={"Connection": "close"})
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
