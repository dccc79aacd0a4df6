"""Every ``from cleo_dask.x import name`` names something that module defines (checked over ``ast``).

Lazy imports inside functions run only when their code does: a name that moved or was renamed
would otherwise surface as an ImportError in front of a user, not in CI.  This walks the package,
the tests, the benchmarks and the notebooks' code cells.
"""
from __future__ import annotations

import ast
import functools
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cleo_dask"


@functools.lru_cache(maxsize=None)
def module_path(module: str) -> Path | None:
    """The file of a dotted ``cleo_dask`` module (a package's ``__init__``), if it exists."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def bound_names(path: Path) -> set[str]:
    """Names a module binds at its top level (also inside top-level ``if`` / ``try`` blocks)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
    visit(ast.parse(path.read_text()).body)
    return names


def unresolved(source: str, where: str) -> list[str]:
    """``where:line: from m import name`` for each imported name ``m`` does not define."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("cleo_dask"):
            continue
        path = module_path(node.module)
        if path is None:
            out.append(f"{where}:{node.lineno}: no module {node.module}")
            continue
        defined = bound_names(path)
        for alias in node.names:
            if alias.name != "*" and alias.name not in defined and module_path(f"{node.module}.{alias.name}") is None:
                out.append(f"{where}:{node.lineno}: {node.module} has no {alias.name!r}")
    return out


def python_sources() -> list[tuple[str, str]]:
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    sources = [(p.read_text(), str(p.relative_to(ROOT))) for p in files]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
        sources.append((code, str(nb.relative_to(ROOT))))
    return sources


def test_every_imported_cleo_dask_name_exists():
    problems = [p for source, where in python_sources() for p in unresolved(source, where)]
    assert not problems, "imports of names that do not exist:\n" + "\n".join(problems)


def test_the_checker_sees_a_missing_name():
    assert unresolved("def f():\n    from cleo_dask.errors import NoSuchError\n", "x.py") == \
        ["x.py:2: cleo_dask.errors has no 'NoSuchError'"]
    assert unresolved("from cleo_dask.errors import CleoError\nfrom cleo_dask import core\n", "x.py") == []
