"""The ``lorefd serve`` service: the loaded model, the worker pool, admission control and the
result store."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorefd.apps.serve.store import ResultStore
from lorefd.apps.serve.uploads import ACCEPTED, Upload
from lorefd.data.preprocess.crops import FacePipeline
from lorefd.engines import report_schema as schema
from lorefd.engines.detect import DetectContext, DetectOptions, detect_file
from lorefd.engines.inputs import InputFile, claim
from lorefd.engines.scorer import Scorer, default_batch, scorer_for
from lorefd.models.bundle import Bundle, shipped_bundle
from lorefd.models.graph import load_runtime_model

log = logging.getLogger("lorefd")
PREFIX = "lorefd-serve-"  # the private work folders: <tmp>/lorefd-serve-XXXX/{uploads,results}
LOCK = ".lock"  # held (flock) by the server owning the folder, for as long as it runs


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def clean_stale_workdirs(parent: Path) -> list[Path]:
    """Remove the work folders of servers that are gone (killed, crashed: their uploads and
    heatmaps would stay on disk forever). A folder is stale when it is ours (same prefix, same
    user, not a link) and its lock is free; a running server holds its lock, an older lorefd's
    folder has none and is left alone. POSIX only (no ``fcntl``: nothing removed)."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - Windows
        return []
    removed = []
    for folder in sorted(parent.glob(f"{PREFIX}*")):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            fd = os.open(folder / LOCK, os.O_RDWR)
        except OSError:
            continue
        try:
            if _try_lock(fd):  # its server is gone
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        finally:
            os.close(fd)
    if removed:
        log.info("serve: removed %d work folder(s) left by servers that ended without cleaning "
                 "up: %s", len(removed), ", ".join(p.name for p in removed))
    return removed


def make_workdir(parent: str | Path | None = None) -> tuple[Path, int | None]:
    """A private work folder (``PREFIX*`` under ``parent``, default the system's temporary
    folder) and the descriptor of its lock, held until :meth:`Service.close` (or the process
    ends, however it ends); stale folders are removed first (:func:`clean_stale_workdirs`).
    The lock file is locked before it gets its name, so a server starting beside this one
    never sees it free."""
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    clean_stale_workdirs(base)
    root = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    fd = None
    with contextlib.suppress(ImportError, OSError):
        fd = os.open(root / f"{LOCK}.new", os.O_CREAT | os.O_RDWR, 0o600)
        if _try_lock(fd):
            os.replace(root / f"{LOCK}.new", root / LOCK)
    return root, fd


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

    def detect_options(self) -> DetectOptions:
        """The detection options among these, checked (:class:`~lorefd.errors.OptionError`)."""
        return DetectOptions(frames=self.frames, threshold=self.threshold,
                             batch_size=self.batch_size, device=self.device,
                             runtime=self.runtime, threads=self.threads,
                             retinaface_weights=self.retinaface_weights)


class _HeatmapSink:
    """Heatmap paths for one request: ``<folder>/<n>.png|mp4`` (``n`` = the upload's index).

    Each request has its own fresh random folder; the name is still claimed on disk
    (:func:`~lorefd.engines.inputs.claim`), so nothing is ever overwritten silently."""

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
    scorer: Scorer  # the bundle's detector, whichever runtime runs it
    threshold: float
    root: Path
    store: ResultStore
    pool: concurrent.futures.ThreadPoolExecutor
    started: float = field(default_factory=time.time)
    active: int = 0
    per_client: dict[str, int] = field(default_factory=dict)  # requests in, per address
    recent: deque = field(default_factory=lambda: deque(maxlen=20))
    local: threading.local = field(default_factory=threading.local)
    lock_fd: int | None = None  # the work folder's lock (make_workdir)

    @classmethod
    def load(cls, model: str | Path | Bundle | None, opts: ServeOptions) -> Service:
        """Load the model once (a bundle, run or checkpoint folder, None: the shipped one, or
        a Bundle already loaded; BundleError if unusable) and make the private work folder."""
        detect = opts.detect_options()
        bundle = load_runtime_model(model, detect.device, detect.runtime, detect.threads)
        scorer = scorer_for(bundle, detect.device)
        thr = bundle.threshold if detect.threshold is None else float(detect.threshold)
        root, lock_fd = make_workdir(opts.workdir)
        (root / "uploads").mkdir(mode=0o700)
        store = ResultStore(root / "results", opts.keep_minutes * 60.0)
        pool = concurrent.futures.ThreadPoolExecutor(max(1, opts.workers),
                                                     thread_name_prefix="lorefd-infer")
        svc = cls(bundle=bundle, opts=opts, scorer=scorer, threshold=thr, root=root,
                  store=store, pool=pool, lock_fd=lock_fd)
        svc.pipeline()  # the face detector loads now, not with the first request
        return svc

    @property
    def capacity(self) -> int:
        return max(1, self.opts.workers) + max(0, self.opts.queue)

    def pipeline(self) -> FacePipeline:
        """This thread's face pipeline (face detectors are not shared between threads)."""
        if getattr(self.local, "faces", None) is None:
            self.local.faces = FacePipeline.from_bundle(self.bundle, self.opts.retinaface_weights,
                                                        self.scorer.device)
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
                                 self.scorer.runtime)

    def model_json(self) -> dict[str, Any]:
        info = self.model_info()
        source = str(info.get("threshold_source") or "")
        rule = (source.split(": ", 1)[1] if source.startswith("given at export: ")
                and self.threshold == self.bundle.threshold else None)
        return {"model": info, "threshold": self.threshold, "threshold_rule": rule,
                "card": self.model_card(),
                "frames": int(self.opts.frames or self.bundle.preprocess["frames"]),
                "limits": {"max_upload_mb": self.opts.max_upload_mb,
                           "workers": self.opts.workers, "queue": self.opts.queue,
                           "keep_minutes": self.opts.keep_minutes,
                           "max_files": self.opts.max_files},
                "accepted": ACCEPTED}

    def run(self, uploads: list[Upload], heat_folder: Path | None) -> list[dict[str, Any]]:
        """Score the uploads (in a worker thread); results with client names, no server path."""
        faces = self.pipeline()
        ctx = DetectContext(bundle=self.bundle, scorer=self.scorer, faces=faces,
                            threshold=self.threshold,
                            frames=int(self.opts.frames or faces.frames),
                            batch_size=self.opts.batch_size or default_batch(self.scorer),
                            heatmaps=_HeatmapSink(heat_folder) if heat_folder is not None
                            else None)
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
        if self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = None
