"""The README and its docs/ pages stay true: every repository path and link they name exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "lorefd"
# repository paths anywhere in the text (also inside commands and code blocks)
REPO_PATH = re.compile(
    r"(?<![\w./~-])((?:src|configs|benchmarks|scripts|tests|docs)/[\w./-]*[\w/])")
# package-relative paths as the method table writes them: `data/keyregion.py`, `data/synth/`
PACKAGE_PATH = re.compile(
    r"`((?:data|models|engines|evaluation|apps|cli)/[\w/]*(?:\.py|/))`")


# Markdown links and images: [text](target) / ![alt](target), relative to the page
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# pages that name repository paths without being linked from the README's docs list
CARDS = [PACKAGE / "assets" / "model" / "MODEL.md", ROOT / "benchmarks" / "RESULTS.md"]


def readme_paths() -> list[tuple[str, Path]]:
    found = []
    for page in PAGES + CARDS:
        text = page.read_text()
        found += [(m, ROOT / m) for m in REPO_PATH.findall(text)]
        found += [(m, PACKAGE / m) for m in PACKAGE_PATH.findall(text)]
        found += [(f"{page.name}: {m}", page.parent / m) for m in LINK.findall(text)
                  if "://" not in m]
    return found


def test_readme_names_paths() -> None:
    names = {name for name, _ in readme_paths()}
    assert {"configs/paper.yaml", "configs/tiny.yaml", "src/lorefd/config.py",
            "data/keyregion.py"} <= names  # the scan sees what it must check


def test_every_path_the_readme_names_exists() -> None:
    missing = sorted({name for name, path in readme_paths() if not path.exists()})
    assert not missing, f"README names paths that do not exist: {missing}"


def test_readme_links_every_docs_page() -> None:
    text = (ROOT / "README.md").read_text()
    unlinked = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in text]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_readme_first_screen_is_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README is {len(lines)} lines; move sections to docs/"


# The repository speaks of itself: no tracker numbers, no tool of one particular session.
WORD = re.compile(r"\b" + "is" + r"sues?\b", re.IGNORECASE)
SESSION_TOOLS = ("run(" + "command=", "carry" + "=[")
TEXT_SUFFIXES = {".py", ".md", ".sh", ".yaml", ".toml", ".txt", ".cfg", ""}


def repository_texts() -> list[Path]:
    tops = ["src", "tests", "docs", "benchmarks", "scripts", "configs", ".ci"]
    files = [ROOT / n for n in ("README.md", "Makefile", "pyproject.toml")]
    for top in tops:
        files += [p for p in sorted((ROOT / top).rglob("*")) if p.is_file()
                  and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts]
    return [p for p in files if p.exists()]


def test_the_repository_names_no_tracker_or_session_tool() -> None:
    found = []
    for path in repository_texts():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if WORD.search(line) or any(t in line for t in SESSION_TOOLS):
                found.append(f"{path.relative_to(ROOT)}:{n}")
    assert len(repository_texts()) > 50  # the scan sees the tree
    assert not found, f"lines that speak of a tracker or a session tool: {found}"
