"""``lorefd`` command line: one module per command, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from lorefd.utils import setup_logging
from lorefd.version import __version__

# Order shown in --help: the paper's pipeline first, then the beyond-the-paper tools.
COMMANDS = [
    "preprocess", "masks", "pretrain", "reconstruct", "train", "evaluate", "robustness",
    "protocol", "explain", "synth", "export", "detect", "quality", "serve", "recipe", "demo",
]
# Commands that need the training extra (torch, timm, scikit-learn, ...): in a base install
# they say so in one line before doing anything. The others (preprocess with dlib, detect,
# quality, serve) run on the base install; an option of theirs that needs the extra
# (`--runtime torch`, a checkpoint folder, RetinaFace) says so when it is used.
TRAINING = {"masks", "pretrain", "reconstruct", "train", "evaluate", "robustness", "protocol",
            "explain", "synth", "export", "recipe", "demo"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorefd", description="Face forgery detection by local reconstruction errors.")
    parser.add_argument("--version", action="version", version=f"lorefd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"lorefd.cli.{name}").register(sub)
    return parser


# OS errors that mean a path the user gave is wrong (not a bug): one line, exit 2
_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                PermissionError)
def user_error_code(exc: BaseException) -> int | None:
    """The exit status of an error the user can fix (2; 1 when nothing could be processed),
    or None for a bug (which keeps its traceback)."""
    from lorefd.errors import UserError, missing_extra

    if missing_extra(exc, "this") is not None:
        return 2
    if isinstance(exc, UserError):
        return exc.exit_code
    if isinstance(exc, _PATH_ERRORS):
        return 2
    return None  # a bare ValueError, TypeError, ...: a bug, reported with its traceback


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status, the same for every command: 0 success; 1 the run
    processed nothing; 2 a user error (bad path, config, data or model), said in one line
    without a traceback (``-v`` shows it); 130 interrupted."""
    from lorefd.errors import missing_extra, require_training_extra

    args = build_parser().parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        if args.command in TRAINING:
            require_training_extra(f"lorefd {args.command}")
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        code = user_error_code(exc)
        if code is None:
            raise
        if args.verbose:
            traceback.print_exc()
        # an ImportError of a training package that is not installed: the extra, in one line
        exc = missing_extra(exc, "this run") or exc
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, _PATH_ERRORS) and exc.filename and str(exc.filename) not in message:
            message += f": {exc.filename}"
        print(f"lorefd {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
