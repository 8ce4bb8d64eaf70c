"""``lorefd`` command line: one module per command, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lorefd import __version__
from lorefd.utils import setup_logging

# Order shown in --help: the paper's pipeline first, then the beyond-the-paper tools.
COMMANDS = [
    "preprocess", "masks", "pretrain", "reconstruct", "train", "evaluate", "protocol", "explain",
    "synth", "export", "detect", "serve", "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorefd", description="Face forgery detection by local reconstruction errors.")
    parser.add_argument("--version", action="version", version=f"lorefd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"lorefd.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    from lorefd.checkpoint import CheckpointError
    from lorefd.config import ConfigError
    from lorefd.data.manifest import ManifestError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ManifestError, CheckpointError, ConfigError, FileNotFoundError,
            FileExistsError) as exc:  # the user's input, not a bug: no traceback
        print(f"lorefd {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
