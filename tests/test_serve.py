"""`lorefd serve` API through an in-process client: results, bad inputs, limits, token, expiry."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from media import make_image, make_video, stills
from PIL import Image
from serve_helpers import bundled_real, serve_bundle

from lorefd.apps.serve import ResultStore, ServeOptions, Service, create_app, sniff
from lorefd.cli import main
from lorefd.engines import report_schema as schema
from lorefd.engines.detect import DetectOptions, detect_paths


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return serve_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def service(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One loaded model for every test here (variants share it, see :func:`variant`)."""
    svc = Service.load(bundle, ServeOptions(workers=1, queue=2, frames=4,
                                            workdir=str(tmp_path_factory.mktemp("serve"))))
    yield svc
    svc.close()
    assert not svc.root.exists()


def variant(service: Service, **opts: object) -> Service:
    """The same loaded model and worker pool with other options (token, limits, queue)."""
    return dataclasses.replace(service, opts=dataclasses.replace(service.opts, **opts), active=0,
                               per_client={})


@pytest.fixture(scope="module")
def client(service: Service) -> TestClient:
    return TestClient(create_app(service))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("serve-media")
    face = make_image(d / "face.png", face=stills(1, 1)[0], size=(320, 288))
    gradient = d / "gradient.png"
    ramp = np.linspace(0, 255, 240, dtype=np.uint8)
    cv2.imwrite(str(gradient), np.repeat(np.tile(ramp, (180, 1))[..., None], 3, axis=2))
    truncated = d / "truncated.jpg"
    truncated.write_bytes(bundled_real(2).read_bytes()[:600])
    clip = make_video(d / "clip.mp4", faces=stills(1, 2), seconds=0.5, fps=12, size=(320, 240))
    text = d / "notes.jpg"  # an image extension, text inside: decided by content
    text.write_text("just some text, not a picture\n" * 4)
    return {"face": face, "gradient": gradient, "truncated": truncated, "clip": clip,
            "text": text}


def upload(*paths: Path, names: list[str] | None = None) -> list[tuple]:
    names = names or [p.name for p in paths]
    return [("files", (n, p.read_bytes(), "application/octet-stream"))
            for p, n in zip(paths, names, strict=True)]


def check_report(report: dict, threshold: float) -> None:
    """The schema of report_schema.py, field by field (the same as `detect --json`)."""
    assert set(report) == {"lorefd_version", "model", "threshold", "heatmap_dir", "summary",
                           "results"}
    assert report["threshold"] == threshold and report["heatmap_dir"] is None
    assert set(report["summary"]) == {"inputs", "seconds", *schema.STATUSES}
    assert "/" not in report["model"]["path"]  # the bundle's name, not a server path
    for r in report["results"]:
        assert set(r) == set(schema.RESULT_KEYS)
        assert r["status"] in schema.STATUSES
        if r["status"] == "ok":
            assert 0.0 <= r["p_fake"] <= 1.0 and r["faces"]
            assert r["verdict"] == ("fake" if r["p_fake"] >= threshold else "real")
        else:
            assert r["p_fake"] is None and r["verdict"] is None and r["message"]
        for f in r["faces"]:
            assert set(f) == {"box", "p_fake", "frame_index"}


def strict_json(text: str) -> dict:
    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


@pytest.fixture()
def loaded(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """`detect_paths` reuses the service's loaded model (loading it again costs seconds)."""
    monkeypatch.setattr("lorefd.engines.detect.load_runtime_model", lambda *a, **k: service.bundle)


def test_image_same_scores_as_detect_with_heatmap(client: TestClient, service: Service,
                                                  bundle: Path, media: dict,
                                                  loaded: None) -> None:
    r = client.post("/v1/detect?heatmap=true", files=upload(media["face"]))
    assert r.status_code == 200, r.text
    report = strict_json(r.text)
    check_report(report, service.threshold)
    (res,) = report["results"]
    assert (res["path"], res["type"], res["status"]) == ("face.png", "image", "ok")
    expected = detect_paths([media["face"]], bundle, DetectOptions(device="cpu"))["results"][0]
    assert res["p_fake"] == expected["p_fake"] and res["faces"] == expected["faces"]
    assert re.fullmatch(r"/v1/results/[A-Za-z0-9_-]{22}/heatmap/0\.png", res["heatmap"])
    png = client.get(res["heatmap"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    w, h = Image.open(io.BytesIO(png.content)).size
    assert w == 320 and h > 288  # over the original picture, its strip below
    assert not any((service.root / "uploads").iterdir())  # the upload is gone


def test_video_frames_and_heatmap(client: TestClient, media: dict) -> None:
    r = client.post("/v1/detect", params={"heatmap": "true"}, files=upload(media["clip"]))
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert (res["type"], res["status"]) == ("video", "ok")
    assert res["frames"]["sampled"] == 4 and res["frames"]["count"] == len(res["faces"]) > 0
    assert all(isinstance(f["frame_index"], int) for f in res["faces"])
    mp4 = client.get(res["heatmap"])
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    assert mp4.content[4:8] == b"ftyp"


def test_mixed_batch_statuses_and_no_server_paths(client: TestClient, service: Service,
                                                  media: dict) -> None:
    r = client.post("/v1/detect?heatmap=true", files=upload(
        media["face"], media["gradient"], media["truncated"],
        names=["a/b/../face.png", "C:\\Users\\x\\gradient.png", "broken.jpg"]))
    assert r.status_code == 200, r.text
    report = r.json()
    check_report(report, service.threshold)
    got = [(x["path"], x["status"]) for x in report["results"]]
    assert got == [("face.png", "ok"), ("gradient.png", "no face"), ("broken.jpg", "unreadable")]
    assert report["summary"]["inputs"] == 3 and report["summary"]["ok"] == 1
    assert [x["heatmap"] is not None for x in report["results"]] == [True, False, False]
    assert str(service.root) not in r.text and "/tmp" not in r.text


def test_too_large_is_refused_before_the_body_is_read(service: Service) -> None:
    app = create_app(variant(service, max_upload_mb=1))
    pulled = []

    head = b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.jpg"\r\n\r\n'

    async def body(n_chunks: int) -> AsyncIterator[bytes]:
        for i in range(n_chunks):
            pulled.append(i)
            yield (head if i == 0 else b"") + b"\xff" * 65536

    async def go() -> tuple[httpx.Response, httpx.Response, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            ctype = {"content-type": "multipart/form-data; boundary=b"}
            declared = await c.post("/v1/detect", content=body(64), headers={
                **ctype, "content-length": str(64 * 65536 + len(head))})
            n_declared = len(pulled)
            pulled.clear()
            streamed = await c.post("/v1/detect", content=body(64), headers=ctype)
            return declared, streamed, n_declared

    declared, streamed, n_declared = asyncio.run(go())
    assert declared.status_code == 413 and n_declared == 0
    assert declared.json()["detail"] == "file too large (max 1 MB)"
    assert streamed.status_code == 413 and 16 <= len(pulled) <= 18  # stopped just past 1 MB
    assert not any((service.root / "uploads").iterdir())


def test_types_are_decided_by_content(client: TestClient, media: dict, tmp_path: Path) -> None:
    r = client.post("/v1/detect", files=upload(media["face"], media["text"]))
    assert r.status_code == 415 and r.json()["files"] == ["notes.jpg"]
    gif = tmp_path / "anim.gif"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(gif)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for bad in (gif, empty):
        assert client.post("/v1/detect", files=upload(bad)).status_code == 415
    renamed = client.post("/v1/detect", files=upload(media["face"], names=["photo.txt"]))
    assert renamed.status_code == 200 and renamed.json()["results"][0]["status"] == "ok"
    assert sniff(media["clip"].read_bytes()[:32]) == ("video", ".mp4")
    assert client.post("/v1/detect", content=b"abc",
                       headers={"content-type": "text/plain"}).status_code == 400


def test_token(service: Service, media: dict) -> None:
    c = TestClient(create_app(variant(service, token="s3cret")))
    assert c.get("/health").json()["auth"] is True
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        assert c.get("/v1/model", headers=headers).status_code == 401
        r = c.post("/v1/detect?heatmap=true", files=upload(media["face"]), headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    ok = {"Authorization": "Bearer s3cret"}
    assert c.get("/v1/model", headers=ok).json()["model"]["detector"] == "lre"
    r = c.post("/v1/detect?heatmap=true", files=upload(media["face"]), headers=ok)
    assert r.status_code == 200
    url = r.json()["results"][0]["heatmap"]
    assert c.get(url).status_code == 401 and c.get(url, headers=ok).status_code == 200


def test_public_address_needs_a_token_and_a_model_is_needed(
        bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("LOREFD_SERVE_TOKEN", raising=False)
    assert main(["serve", "--model", str(bundle), "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err
    monkeypatch.setattr("lorefd.models.bundle.shipped_bundle", lambda: None)
    assert main(["serve"]) == 2
    assert "--model is required" in capsys.readouterr().err


def test_queue_full_gets_503_with_retry_after(service: Service, media: dict,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    svc = variant(service, workers=1, queue=1)
    release = threading.Event()
    real_run = Service.run

    def slow_run(self: Service, uploads: list, heat: Path | None) -> list:
        assert release.wait(30)
        return real_run(self, uploads, heat)

    monkeypatch.setattr(Service, "run", slow_run)
    app = create_app(svc)
    files = upload(media["face"])

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                     timeout=60) as c:
            first = [asyncio.create_task(c.post("/v1/detect", files=files)) for _ in range(2)]
            while svc.active < 2:  # one running, one queued
                await asyncio.sleep(0.01)
            refused = await c.post("/v1/detect", files=files)
            release.set()
            return [refused, *await asyncio.gather(*first)]

    refused, *served = asyncio.run(go())
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert [r.status_code for r in served] == [200, 200]
    assert svc.active == 0


def test_heatmaps_expire_and_are_deleted(service: Service, media: dict) -> None:
    now = [1000.0]
    svc = variant(service, keep_minutes=1)
    svc.store = ResultStore(service.root / "results-expiry", 60.0, clock=lambda: now[0])
    c = TestClient(create_app(svc))
    url = c.post("/v1/detect?heatmap=true", files=upload(media["face"])).json()[
        "results"][0]["heatmap"]
    rid = url.split("/")[3]
    assert c.get(url).status_code == 200 and (svc.store.root / rid).is_dir()
    now[0] += 59
    assert c.get(url).status_code == 200
    now[0] += 2
    assert c.get(url).status_code == 404
    assert not (svc.store.root / rid).exists() and len(svc.store) == 0


def test_no_path_traversal(client: TestClient, service: Service, media: dict) -> None:
    r = client.post("/v1/detect?heatmap=true",
                    files=upload(media["face"], names=["../../../../tmp/evil.png"]))
    res = r.json()["results"][0]
    assert res["path"] == "evil.png"
    assert not list(Path(service.root).rglob("*evil*")) and not Path("/tmp/evil.png").exists()
    base = res["heatmap"].rsplit("/", 1)[0]
    secret = service.root.parent / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    for url in (f"{base}/..%2F..%2F..%2Fsecret.png", f"{base}/../../secret.png",
                f"{base}/0.png%00.png", "/v1/results/..%2F..%2F/heatmap/0.png",
                "/v1/results/AAAAAAAAAAAAAAAAAAAAAA/heatmap/0.png", f"{base}/1.png",
                f"{base}/%2Fetc%2Fpasswd"):
        got = client.get(url)
        assert got.status_code == 404 and b"secret" not in got.content, url


def test_nonfinite_score_is_an_error(client: TestClient, service: Service, media: dict,
                                     bundle: Path, tmp_path: Path, loaded: None,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    det = type(service.bundle.detector)
    explain, proba = det.explain, det.predict_proba

    def nan_explain(self, images):  # noqa: ANN001
        out = explain(self, images)
        return {**out, "prob": out["prob"] * float("nan")}

    monkeypatch.setattr(det, "explain", nan_explain)
    monkeypatch.setattr(det, "predict_proba", lambda self, x: proba(self, x) * float("nan"))
    r = client.post("/v1/detect?heatmap=true", files=upload(media["face"], media["clip"]))
    assert r.status_code == 200
    for res in strict_json(r.text)["results"]:
        assert (res["status"], res["p_fake"], res["verdict"]) == ("error", None, None)
        assert "non-finite" in res["message"]
    out = tmp_path / "report.json"
    detect_paths([media["face"]], bundle, DetectOptions(json_path=out))
    assert strict_json(out.read_text())["results"][0]["status"] == "error"


def test_huge_image_heatmap_memory_is_bounded(client: TestClient, tmp_path: Path) -> None:
    """A 7800x7800 JPEG (61 MP, under the 64-MP limit): the heatmap is drawn on a 2048-px copy
    (traced numpy memory)."""
    side = 7800
    face = cv2.imread(str(bundled_real(3)))
    canvas = cv2.resize(face, (side, side), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 70])
    del canvas
    assert ok
    tracemalloc.start()
    try:
        r = client.post("/v1/detect?heatmap=true",
                        files=[("files", ("huge.jpg", buf.tobytes(), "image/jpeg"))])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    res = r.json()["results"][0]
    assert res["status"] == "ok", res
    assert peak < 1.2e9, f"{peak / 1e9:.2f} GB"  # drawing at full size traced > 3 GB
    png = Image.open(io.BytesIO(client.get(res["heatmap"]).content))
    assert png.size[0] == 2048  # the picture at 2048 px, the strip below it


def test_model_page_docs(client: TestClient) -> None:
    m = client.get("/v1/model").json()
    assert m["threshold"] == 0.5 and m["frames"] == 4 and m["limits"]["max_upload_mb"] == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page.text)  # offline: no CDN
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/detect", "/v1/model", "/health"} <= set(spec["paths"])


def test_two_requests_never_overwrite_each_others_heatmaps(client: TestClient,
                                                           media: dict, tmp_path: Path) -> None:
    from lorefd.apps.serve.service import _HeatmapSink
    from lorefd.engines.inputs import InputFile

    urls, pngs = [], []
    for _ in range(2):  # the same upload twice: the same name inside each request
        r = client.post("/v1/detect?heatmap=true", files=upload(media["face"]))
        assert r.status_code == 200, r.text
        urls.append(r.json()["results"][0]["heatmap"])
    assert urls[0] != urls[1] and urls[0].endswith("/0.png") and urls[1].endswith("/0.png")
    for url in urls:  # both still there, each its own file
        got = client.get(url)
        assert got.status_code == 200
        pngs.append(got.content)
    sink = _HeatmapSink(tmp_path)  # within one folder a name is never handed out twice
    item = InputFile(tmp_path / "0.png", Path("0.png"))
    assert sink(item, ".png").is_file()
    with pytest.raises(FileExistsError):
        sink(item, ".png")


def test_slow_clients_are_dropped_and_one_client_cannot_fill_the_service(
        service: Service, media: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow-loris upload (headers, then a byte now and then) gets 408 instead of holding a
    place forever; a third request of one client while two are in gets 429."""
    svc = variant(service, workers=1, queue=8, upload_idle_s=0.3, min_upload_kbps=1000.0,
                  per_client=2)
    app = create_app(svc)
    head = b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.jpg"\r\n\r\n'

    async def trickle(pause: float, n: int) -> AsyncIterator[bytes]:
        yield head
        for _ in range(n):
            await asyncio.sleep(pause)
            yield b"\xff"

    release = threading.Event()
    real_run = Service.run

    def slow_run(self: Service, uploads: list, heat: Path | None) -> list:
        assert release.wait(30)
        return real_run(self, uploads, heat)

    async def go() -> tuple[httpx.Response, ...]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
            ctype = {"content-type": "multipart/form-data; boundary=b"}
            stalled = await c.post("/v1/detect", content=trickle(1.0, 3), headers=ctype)
            trickled = await c.post("/v1/detect", content=trickle(0.05, 200), headers=ctype)
            monkeypatch.setattr(Service, "run", slow_run)
            files = upload(media["face"])
            held = [asyncio.create_task(c.post("/v1/detect", files=files)) for _ in range(2)]
            while svc.active < 2:
                await asyncio.sleep(0.01)
            third = await c.post("/v1/detect", files=files)
            release.set()
            return stalled, trickled, third, *await asyncio.gather(*held)

    stalled, trickled, third, *held = asyncio.run(go())
    assert stalled.status_code == 408 and "no data for 0.3 s" in stalled.json()["detail"]
    assert trickled.status_code == 408 and "below" in trickled.json()["detail"]
    assert third.status_code == 429 and "per client" in third.json()["detail"]
    assert [r.status_code for r in held] == [200, 200]
    assert svc.active == 0 and svc.per_client == {}


@pytest.mark.parametrize("bad", [{"frames": 0}, {"threshold": 2.0}, {"runtime": "evil"}])
def test_bad_detection_options_are_refused_before_the_model_loads(bad, tmp_path: Path) -> None:
    from lorefd.errors import OptionError

    with pytest.raises(OptionError):  # not the missing model's error: nothing was loaded
        Service.load(tmp_path / "missing.lorefd", ServeOptions(**bad))
