"""The `lorefd serve` page in a real browser: Debian's chromium + chromium-driver (installed by
.ci/run) drive the page against a live `lorefd serve` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from media import make_video, stills
from serve_helpers import bundled_fake, bundled_real, serve_bundle

from lorefd.models.bundle import shipped_bundle

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
           "chromium-driver; .ci/run installs them)")
# Set to a path to keep the desktop screenshot (docs/serve.png is made by scripts/docs_images.py).
SCREENSHOT_ENV = "LOREFD_SERVE_SCREENSHOT"
MODEL_ENV = "LOREFD_SERVE_MODEL"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url: str, paths: list[Path]) -> dict:
    import httpx

    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    r = httpx.post(f"{url}/v1/detect", files=files, timeout=60)
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """`lorefd serve` as a user starts it, on a free port of 127.0.0.1 (not yet ready:
    see :func:`live`)."""
    # LOREFD_SERVE_MODEL=shipped: the model shipped in the package
    bundle = (serve_bundle(tmp_path_factory) if os.environ.get(MODEL_ENV) != "shipped"
              else shipped_bundle())
    port = _free_port()
    log = tmp_path_factory.mktemp("serve-live") / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lorefd.cli", "serve", "--model",
                                 str(bundle), "--port", str(port), "--threads", "1"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield f"http://127.0.0.1:{port}", proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "Traceback" not in log.read_text()


@pytest.fixture(scope="module")
def browser(server: tuple, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Headless Chromium (started while the server loads its model)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1000,1250",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=DriverService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def live(server: tuple, browser: object) -> str:
    """The server's URL once it answers /health."""
    url, proc, log = server
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"lorefd serve exited: {log.read_text()}"
        try:
            assert _get(f"{url}/health")["status"] == "ok"
            return url
        except OSError:
            assert time.monotonic() < deadline, f"no answer: {log.read_text()}"
            time.sleep(0.3)


def test_page_scores_a_real_and_a_fake(live: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    real, fake = bundled_real(0), bundled_fake(tmp_path / "fake_swap.jpg")
    driver, wait = browser, WebDriverWait(browser, 90, poll_frequency=0.2)
    driver.get(live + "/")
    wait.until(lambda d: d.find_element(By.ID, "model").text.startswith("Model:"))
    driver.find_element(By.ID, "files").send_keys(f"{real}\n{fake}")

    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card .verdict")) == 2)
    wait.until(lambda d: d.execute_script(
        "const imgs = [...document.querySelectorAll('img.heatmap')];"
        "return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0);"))
    api = {r["path"]: r for r in _post(live, [real, fake])["results"]}
    cards = driver.find_elements(By.CSS_SELECTOR, ".card")
    assert sorted(c.get_attribute("data-name") for c in cards) == sorted(api)
    for card in cards:
        r = api[card.get_attribute("data-name")]
        verdict = card.find_element(By.CSS_SELECTOR, ".verdict").text
        assert f"probably {r['verdict'].upper()}" in verdict, verdict
        assert f"P(fake) {r['p_fake']:.3f}" in verdict, (verdict, r["p_fake"])
        img = card.find_element(By.CSS_SELECTOR, "img.heatmap")
        assert img.is_displayed() and img.size["width"] > 100
        legend = card.find_element(By.CSS_SELECTOR, ".legend")
        assert legend.is_displayed() and "Red" in legend.text
        assert card.find_element(By.CSS_SELECTOR, ".bar .thr").is_displayed()
        assert "done in" in card.find_element(By.CSS_SELECTOR, ".state").text
    # what a person would notice: raw Markdown, broken or unlabelled pictures, a favicon 404
    page = driver.find_element(By.TAG_NAME, "body").text
    assert "**" not in page and "`" not in page, page
    assert driver.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0 && i.alt.trim())")
    assert driver.execute_script("return !!document.querySelector('link[rel=icon]')")
    shot = tmp_path / "serve.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])

    # a video: its verdict, the per-frame plot and a heatmap video the browser can decode
    clip = make_video(tmp_path / "clip.mp4", faces=stills(1, 2), seconds=0.5, fps=12,
                      size=(320, 240))
    driver.find_element(By.ID, "files").send_keys(str(clip))
    card = wait.until(lambda d: next((c for c in d.find_elements(By.CSS_SELECTOR, ".card")
                                      if c.get_attribute("data-name") == "clip.mp4"
                                      and c.find_elements(By.CSS_SELECTOR, ".verdict")), None))
    assert card.find_element(By.CSS_SELECTOR, ".verdict").text.startswith("This video is")
    assert len(card.find_elements(By.CSS_SELECTOR, "svg.plot circle")) >= 1
    video = card.find_element(By.CSS_SELECTOR, "video.heatmap")
    wait.until(lambda d: d.execute_script("return arguments[0].readyState >= 1", video))
    assert driver.execute_script("return arguments[0].videoWidth", video) > 0
    assert not driver.execute_script("return arguments[0].controls", video)  # none over the map
    assert card.find_element(By.CSS_SELECTOR, "button.play").is_displayed()

    # plain-word errors, and a phone-sized window without sideways scrolling
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture\n")
    driver.find_element(By.ID, "files").send_keys(str(text))
    wait.until(lambda d: "Not an image or video." in d.find_element(By.ID, "results").text)
    driver.set_window_size(360, 800)
    assert driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(tmp_path / "serve-360.png"))
    if os.environ.get(SCREENSHOT_ENV):
        target = Path(os.environ[SCREENSHOT_ENV])
        shutil.copyfile(tmp_path / "serve-360.png", target.with_name(f"{target.stem}-360.png"))
