"""Symbolic links inside input folders are followed, dangling ones reported, never skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lorefd.data.images import walk_files
from lorefd.data.manifest import scan_folder
from lorefd.data.preprocess.adapters import index_folder


@pytest.fixture()
def tree(tmp_path: Path, faces_manifest: Path) -> Path:
    """root/real -> elsewhere/reals (a symlinked folder), root/fake/a.jpg, a dangling link,
    and a link loop."""
    face = next((faces_manifest.parent / "real").glob("*.jpg"))
    elsewhere = tmp_path / "elsewhere" / "reals"
    elsewhere.mkdir(parents=True)
    shutil.copy(face, elsewhere / "r1.jpg")
    root = tmp_path / "root"
    (root / "fake").mkdir(parents=True)
    shutil.copy(face, root / "fake" / "a.jpg")
    (root / "real").symlink_to(elsewhere, target_is_directory=True)
    (root / "fake" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (root / "fake" / "loop").symlink_to(root, target_is_directory=True)
    return root


def test_walk_follows_folder_links_and_reports_dangling_ones(tree: Path) -> None:
    files, broken = walk_files(tree)
    assert [f.relative_to(tree).as_posix() for f in files] == ["fake/a.jpg", "real/r1.jpg"]
    assert [b.relative_to(tree).as_posix() for b in broken] == ["fake/gone.jpg"]


def test_preprocess_folder_finds_reals_behind_a_link(tree: Path) -> None:
    index = index_folder(tree)
    labels = sorted((i.path.name, i.label) for i in index.items)
    assert labels == [("a.jpg", 1), ("r1.jpg", 0)]
    assert any("gone.jpg" in m and "dangling" in m for m in index.missing)
    assert not any("no real images" in m for m in index.missing)


def test_scan_folder_follows_links(tree: Path) -> None:
    assert sorted(Path(s.path).name for s in scan_folder(tree)) == ["a.jpg", "r1.jpg"]


def test_detect_inputs_include_linked_files_and_report_dangling_links(tree: Path) -> None:
    from lorefd.engines.detect import detect_file
    from lorefd.engines.inputs import collect_inputs

    items = collect_inputs([tree])
    assert sorted(i.rel.as_posix() for i in items) == [
        "root/fake/a.jpg", "root/fake/gone.jpg", "root/real/r1.jpg"]
    gone = next(i for i in items if i.path.name == "gone.jpg")
    res = detect_file(gone, ctx=None)  # a missing file needs no model
    assert res["status"] == "unreadable" and "broken symbolic link" in res["message"]
