"""Shared test setup: CPU threads, the bundled faces, small generated inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One thread per xdist worker (two workers on two cores); two when run alone.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

ASSETS = Path(__file__).resolve().parents[1] / "src" / "lorefd" / "assets"


@pytest.fixture(scope="session")
def faces_manifest() -> Path:
    """The bundled 160 real FFHQ faces with landmarks (no ../shared needed)."""
    return ASSETS / "faces" / "manifest.csv"


@pytest.fixture(autouse=True)
def _keep_log_handlers():
    """`lorefd.cli.main()` attaches a log handler; drop it after each test."""
    import logging

    logger = logging.getLogger("lorefd")
    before = list(logger.handlers)
    yield
    logger.handlers[:] = before
