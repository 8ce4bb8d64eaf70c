"""Arguments shared by several commands."""

from __future__ import annotations

import argparse


def add_config_args(p: argparse.ArgumentParser, default: str | None = "paper") -> None:
    """``--config`` (a YAML file or a bundled name) and repeatable ``--set KEY=VALUE``."""
    p.add_argument("--config", default=default,
                   help="YAML file or bundled name (paper, tiny, demo); default: %(default)s")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. --set train.epochs=5)")
