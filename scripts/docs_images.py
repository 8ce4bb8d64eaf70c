"""Regenerate the pictures in docs/ that show the shipped model, and record what they show.

    python scripts/docs_images.py            # or: make docs-images

Writes, from the model shipped in the package (``src/lorefd/assets/model/default.lorefd``):

- ``docs/img/heatmap.png``: ``lorefd detect FACE --heatmap`` on the first bundled real face;
- ``docs/serve.png``: the ``lorefd serve`` page in headless Chromium after uploading that face
  and a face swap made from two bundled faces (``lorefd synth``'s swap, the first donor of
  ``DONORS`` the model calls fake; how many of them it calls fake is recorded too);
- ``docs/img/shown.json``: the model's manifest digest and threshold, each picture's sha256, and
  every input a picture shows with the P(fake) and verdict on it.

``tests/test_docs_images.py`` checks that record against the shipped model: a new model (or a
picture edited by hand) without this script run again fails the suite. Needs Debian's
``chromium`` and ``chromium-driver`` and the training extra (the swap is synthesised).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from serve_helpers import bundled_fake, bundled_real  # noqa: E402  (the tests' swap, reused)

TARGET = 0  # the bundled real face shown, and the target of the swap
DONORS = range(5, 16)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def detect(paths: list[Path], heatmaps: Path | None = None) -> list[dict]:
    cmd = [sys.executable, "-m", "lorefd.cli", "detect", *map(str, paths), "-q",
           "--json", str(heatmaps.parent / "report.json" if heatmaps else
                         Path(tempfile.mkdtemp()) / "report.json")]
    if heatmaps is not None:
        cmd += ["--heatmap", str(heatmaps)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    report = json.loads(Path(cmd[cmd.index("--json") + 1]).read_text())
    return report["results"]


def screenshot(bundle: Path, uploads: list[Path], out: Path) -> list[dict]:
    """The serve page after ``uploads``: saved to ``out``; the cards' names and verdict lines."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "lorefd.cli", "serve", "--model",
                               str(bundle), "--port", str(port), "--threads", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1000,1250"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts,
                              service=Service(shutil.which("chromedriver") or "chromedriver"))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("lorefd serve did not start") from None
                time.sleep(0.3)
        wait = WebDriverWait(driver, 90, poll_frequency=0.2)
        driver.get(url + "/")
        wait.until(lambda d: d.find_element(By.ID, "model").text.startswith("Model:"))
        driver.find_element(By.ID, "files").send_keys("\n".join(map(str, uploads)))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card .verdict"))
                   == len(uploads))
        wait.until(lambda d: d.execute_script(
            "const imgs = [...document.querySelectorAll('img.heatmap')];"
            f"return imgs.length === {len(uploads)} && "
            "imgs.every(i => i.complete && i.naturalWidth > 0);"))
        cards = [{"name": c.get_attribute("data-name"),
                  "text": c.find_element(By.CSS_SELECTOR, ".verdict").text}
                 for c in driver.find_elements(By.CSS_SELECTOR, ".card")]
        driver.execute_script("window.scrollTo(0, 0)")
        if not driver.save_screenshot(str(out)):
            raise RuntimeError("no screenshot")
        return cards
    finally:
        driver.quit()
        server.terminate()
        server.wait(20)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from lorefd.models.bundle import SHIPPED_MANIFEST_SHA256, read_bundle_header, shipped_bundle

    bundle = shipped_bundle()
    manifest = read_bundle_header(bundle)  # refused unless its digest is the pinned one
    work = Path(tempfile.mkdtemp(prefix="lorefd-docs-"))
    real = work / "real_face.jpg"
    shutil.copyfile(bundled_real(TARGET), real)
    swaps = [bundled_fake(work / f"swap_{TARGET}_{d}.jpg", TARGET, d) for d in DONORS]
    scored = {Path(r["path"]).name: r for r in detect([real, *swaps])}
    caught = [p for p in swaps if scored[p.name]["verdict"] == "fake"]
    fake = caught[0] if caught else swaps[0]

    heat = ROOT / "docs" / "img" / "heatmap.png"
    (r,) = detect([real], work / "heat")
    shutil.copyfile(r["heatmap"], heat)
    serve_png = ROOT / "docs" / "serve.png"
    cards = screenshot(bundle, [real, fake], serve_png)

    def shown(path: Path, **extra: object) -> dict:
        s = scored[path.name]
        return {"name": path.name, "p_fake": round(s["p_fake"], 6), "verdict": s["verdict"],
                **extra}

    swap_of = {"swap": {"target": TARGET, "donor": int(fake.stem.rsplit("_", 1)[1])}}
    record = {
        "model_sha256": SHIPPED_MANIFEST_SHA256,
        "threshold": manifest["threshold"]["value"],
        "made_by": "scripts/docs_images.py",
        "swaps_called_fake": f"{len(caught)} of {len(swaps)} (donors {DONORS.start}-"
                             f"{DONORS.stop - 1} on bundled face {TARGET})",
        "images": {
            "docs/img/heatmap.png": {"sha256": sha256(heat),
                                     "shows": [shown(real, bundled=TARGET)]},
            "docs/serve.png": {"sha256": sha256(serve_png), "cards": cards,
                               "shows": [shown(real, bundled=TARGET), shown(fake, **swap_of)]},
        },
    }
    (ROOT / "docs" / "img" / "shown.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
