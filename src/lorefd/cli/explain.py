"""`lorefd explain` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="(not implemented yet)")
    p.set_defaults(func=lambda args: (_ for _ in ()).throw(SystemExit("lorefd explain: not implemented yet")))
