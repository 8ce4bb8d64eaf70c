"""The README stays true: every repository path it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "lorefd"
# repository paths anywhere in the text (also inside commands and code blocks)
REPO_PATH = re.compile(r"(?<![\w./~-])((?:src|configs|benchmarks|tests)/[\w./-]*[\w/])")
# package-relative paths as the method table writes them: `data/keyregion.py`, `data/synth/`
PACKAGE_PATH = re.compile(r"`((?:data|models|engines|evaluation|cli)/[\w/]*(?:\.py|/))`")


def readme_paths() -> list[tuple[str, Path]]:
    text = (ROOT / "README.md").read_text()
    found = [(m, ROOT / m) for m in REPO_PATH.findall(text)]
    found += [(m, PACKAGE / m) for m in PACKAGE_PATH.findall(text)]
    return found


def test_readme_names_paths() -> None:
    names = {name for name, _ in readme_paths()}
    assert {"configs/paper.yaml", "configs/tiny.yaml", "src/lorefd/config.py",
            "data/keyregion.py"} <= names  # the scan sees what it must check


def test_every_path_the_readme_names_exists() -> None:
    missing = sorted({name for name, path in readme_paths() if not path.exists()})
    assert not missing, f"README names paths that do not exist: {missing}"
