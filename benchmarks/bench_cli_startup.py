"""Start-up time of the command line: `lorefd --help` and `lorefd COMMAND --help` (goal < 1.5 s).

    python benchmarks/bench_cli_startup.py [--repeat 3]

Each command runs in a fresh interpreter; the best of ``--repeat`` runs is reported (the
first may pay for a cold disk cache).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from lorefd.cli import COMMANDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for argv in [["--help"], *([c, "--help"] for c in COMMANDS)]:
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lorefd.cli", *argv], capture_output=True,
                           check=True)
            best = min(best, time.perf_counter() - t0)
        print(json.dumps({"command": " ".join(argv), "seconds": round(best, 3)}))


if __name__ == "__main__":
    main()
