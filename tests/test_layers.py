"""Imports flow one way: ``data → models → engines → evaluation → apps → cli`` (README).

Every import in the package is read with ``ast`` -- module level and inside functions (lazy
imports count: they run too) -- and none may reach a later layer. Modules outside the layers
(``lorefd.config``, ``utils``, ``checkpoint``, ``render``, ...) are the base every layer may
use, so they import no layer themselves (``if TYPE_CHECKING:`` blocks aside). The package's
``__init__`` (the two-line Python API) is the top: it may reach any layer and nothing in the
package imports a name from it (``lorefd.version`` holds ``__version__``).
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lorefd"
LAYERS = ["data", "models", "engines", "evaluation", "apps", "cli"]
BASE = -1
ROOT = len(LAYERS)  # the package root ``lorefd/__init__.py``: above every layer


def module_name(path: Path, root: Path = SRC) -> str:
    """``lorefd.x.y`` of a file under ``root`` (the ``lorefd`` package folder)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    """Index in LAYERS, BASE for other lorefd modules, ROOT for the package root itself, None
    outside lorefd."""
    parts = module.split(".")
    if parts[0] != "lorefd":
        return None
    if len(parts) == 1:
        return ROOT
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else BASE


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``path``, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree)
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod != "lorefd":
                out.append((node.lineno, mod))
                continue
            # `from lorefd import engines` imports that module; `from lorefd import detect` a
            # name of the package root
            for a in node.names:
                sub = root / a.name
                is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                out.append((node.lineno, f"lorefd.{a.name}" if is_module else "lorefd"))
    return out


def violations(root: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "__init__.py":
            continue
        own = layer(module_name(path, root))
        for line, mod in imports(path, root):
            target = layer(mod)
            if target is not None and target > own:
                where = LAYERS[own] if 0 <= own < ROOT else "base"
                bad.append(f"{path.relative_to(root.parent)}:{line}: {where} imports {mod}")
    return bad


def test_imports_follow_the_layers() -> None:
    assert violations() == []


def test_the_check_catches_a_lazy_import_against_the_direction(tmp_path: Path) -> None:
    pkg = tmp_path / "lorefd"
    for sub in ("data", "engines"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "bad.py").write_text(
        "def f():\n    from lorefd.engines import detect\n    return detect\n")
    (pkg / "data" / "rel.py").write_text("from ..engines import detect\n")
    (pkg / "engines" / "ok.py").write_text("from lorefd.data import bad\nimport lorefd.models\n")
    found = violations(pkg)
    assert len(found) == 2 and all("data imports lorefd.engines" in v for v in found)


def test_the_check_catches_a_layer_importing_the_package_root(tmp_path: Path) -> None:
    pkg = tmp_path / "lorefd"
    (pkg / "models").mkdir(parents=True)
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "version.py").write_text("__version__ = '0'\n")
    (pkg / "models" / "bad.py").write_text("from lorefd import __version__\n")
    (pkg / "models" / "ok.py").write_text("from lorefd import version\nfrom lorefd.version import x\n")
    (pkg / "models" / "bad2.py").write_text("import lorefd\n")
    found = violations(pkg)
    assert len(found) == 2 and all("models imports lorefd" in v for v in found), found


@pytest.mark.parametrize("module,expected", [("lorefd.cli.detect", 5),
                                             ("lorefd.apps.serve.routes", 4), ("lorefd.utils", BASE),
                                             ("lorefd", ROOT),
                                             ("lorefd.data", 0), ("numpy", None)])
def test_layer_of(module: str, expected: int | None) -> None:
    assert layer(module) == expected


# One of each concept: the names the duplicates had are gone from the package (a second
# loader, scoring loop, metrics module, split or formatter would bring one back).
GONE = ["def load_detector", "def load_mae_for_detector",
        "def resolve_detector_checkpoint", "def score_models", "def split_reals", "def _pct",
        "def _positive", "def _probability", "def timed", "_LEGACY_USER_ERRORS",
        "class Context", "from lorefd.engines.threshold", "from lorefd.evaluation.metrics",
        "roc_auc_score(", "def to_tensor"]
ONLY_IN = {"roc_auc_score(": "metrics.py", "def to_tensor": "data/images.py"}


@pytest.mark.parametrize("needle", GONE)
def test_one_of_each(needle: str) -> None:
    where = [str(p.relative_to(SRC)) for p in sorted(SRC.rglob("*.py")) if needle in p.read_text()]
    allowed = [w for w in where if ONLY_IN.get(needle) == w]
    assert where == allowed, f"{needle!r} in {where}"


class _Anonymous(ast.NodeTransformer):
    """Every variable and argument named ``_``: a copy whose names were changed is a copy."""

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.copy_location(ast.Name(id="_", ctx=node.ctx), node)

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg, node.annotation = "_", None
        return node


def function_shapes(root: Path = SRC, min_statements: int = 5) -> dict[str, list[str]]:
    """``{shape: ["file:line name", ...]}``: each function body of ``min_statements`` or more
    (docstring aside) as its syntax tree with the variable names erased."""
    shapes: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]
            if sum(isinstance(s, ast.stmt) for b in body for s in ast.walk(b)) < min_statements:
                continue
            tree = _Anonymous().visit(ast.Module(body=copy.deepcopy(body), type_ignores=[]))
            shapes.setdefault(ast.dump(tree, annotate_fields=False), []).append(
                f"{path.relative_to(root)}:{node.lineno} {node.name}")
    return shapes


def test_no_function_twice() -> None:
    """A second loader or scoring loop under a new name is still the same code: no two
    functions may have the same body, whatever their names and variables are called."""
    twice = [where for where in function_shapes().values() if len(where) > 1]
    assert not twice, f"the same function body twice: {twice}"


def test_function_shapes_see_a_renamed_copy(tmp_path: Path) -> None:
    body = "    y = x + 1\n    z = y * 2\n    if z:\n        z -= 1\n    return z\n"
    (tmp_path / "a.py").write_text("def load(x):\n" + body)
    (tmp_path / "b.py").write_text("def fetch(v):\n" + body.replace("x", "v"))
    (tmp_path / "c.py").write_text("def other(x):\n" + body.replace("+ 1", "+ 2"))
    twice = [w for w in function_shapes(tmp_path).values() if len(w) > 1]
    assert twice == [["a.py:1 load", "b.py:1 fetch"]]


# ------------------------------------------------------------------------------ no cycles
def _module_files(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def import_graph(root: Path = SRC) -> dict[str, dict[str, int]]:
    """``{module: {imported lorefd module: line}}`` for every import of every module, at any
    depth (``if TYPE_CHECKING:`` blocks aside); ``from a.b import c`` counts as an import of
    ``a.b.c`` where that is a module, else of ``a.b``."""
    files = _module_files(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1]
                                    + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            for t in targets:
                if t in files and t != name:
                    edges.setdefault(t, node.lineno)
        graph[name] = edges
    return graph


def cycles(root: Path = SRC) -> list[list[str]]:
    """Every strongly connected set of modules (more than one module: each reaches the
    others through imports), as sorted module names."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    """No module reaches itself through imports, lazy ones included (a cycle inside a layer:
    the layers test cannot see it). A package's ``__init__`` re-exporting its modules is not
    a cycle: importing ``a.b`` runs ``a/__init__`` first, but that is not an edge here."""
    assert cycles() == []


def test_the_cycle_check_catches_a_lazy_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "lorefd"
    (pkg / "models" / "sub").mkdir(parents=True)
    for init in (pkg, pkg / "models", pkg / "models" / "sub"):
        (init / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text("from lorefd.models.sub import b\n")
    (pkg / "models" / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "models" / "c.py").write_text("def g():\n    import lorefd.models.a\n")
    (pkg / "models" / "d.py").write_text("from lorefd.models import a, e\n")  # into it: no cycle
    (pkg / "models" / "e.py").write_text(  # for type checkers only: no cycle
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lorefd.models import d\n")
    assert cycles(pkg) == [["lorefd.models.a", "lorefd.models.c", "lorefd.models.sub.b"]]


MAX_LINES = 450  # a module longer than this holds more than one concept: split it


def test_no_module_is_too_long() -> None:
    long = {str(p.relative_to(SRC)): n for p in sorted(SRC.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules above {MAX_LINES} lines: {long}"
