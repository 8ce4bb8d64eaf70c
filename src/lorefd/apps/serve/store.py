"""Heatmaps of past ``lorefd serve`` requests, kept under random ids and deleted when they expire."""

from __future__ import annotations

import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
NAME_RE = re.compile(r"^[0-9]{1,4}\.(png|mp4)$")


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
