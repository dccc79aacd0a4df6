"""The package's shape, checked over its source with ``ast`` (nothing of cleo_dask is imported).

* no import cycles: no module imports one that (directly or through others) imports it back;
* no module over 500 lines;
* no module uses another module's ``_private`` name (``from m import _x`` or ``m._x``);
* a lower layer never imports an upper one (``LAYERS`` below, lowest first; ARCHITECTURE.md);
* every module has a docstring saying the one idea it owns.

Every import counts: at the top, inside functions (lazy imports) and under ``if TYPE_CHECKING:``
(where a lower layer needs an upper type for a hint, use a small Protocol in the lower layer, or Any).
``python tests/test_structure.py`` prints the same findings as a report.
"""
from __future__ import annotations

import ast
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cleo_dask"
MAX_LINES = 500

#: Top-level names of the package by layer, lowest first. A module may import from its own layer or
#: lower ones. "" is the package's own ``__init__`` (the public API), a user of everything below it.
LAYERS: list[set[str]] = [
    {"errors", "config", "util", "version"},
    {"failures", "admission"},
    {"core"},
    {"monitor", "cluster"},
    {"runs"},
    {"durable", "schedules", "hosted", "queues"},
    {"engine", "dynamic"},
    {"cli", ""},
]


@dataclass(frozen=True)
class Import:
    """One import statement of ``source`` that reaches ``target`` (both dotted module names)."""
    source: str
    target: str
    line: int
    text: str           # the statement as written, for messages

    def where(self, graph: Graph) -> str:
        return f"{graph.files[self.source]}:{self.line}: {self.text}"


@dataclass
class Graph:
    """The modules of one package and the imports between them."""
    root: Path
    files: dict[str, str] = field(default_factory=dict)           # module -> path relative to root's parent
    lines: dict[str, int] = field(default_factory=dict)           # module -> number of lines
    docstring: dict[str, bool] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)
    private: list[Import] = field(default_factory=list)           # uses of another module's _private name

    def edges(self) -> dict[str, dict[str, Import]]:
        """module -> {imported module: the first statement importing it}."""
        out: dict[str, dict[str, Import]] = defaultdict(dict)
        for imp in self.imports:
            out[imp.source].setdefault(imp.target, imp)
        return out


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def read_package(root: Path) -> Graph:
    """Parse every module under ``root`` (a package directory) into a :class:`Graph`."""
    graph = Graph(root)
    trees = {}
    for path in sorted(root.rglob("*.py")):
        name = _module_name(root, path)
        source = path.read_text()
        trees[name] = (path, ast.parse(source, filename=str(path)), source.splitlines())
        graph.files[name] = str(path.relative_to(root.parent))
        graph.lines[name] = len(source.splitlines())
        graph.docstring[name] = ast.get_docstring(trees[name][1]) is not None
    for name, (path, tree, lines) in trees.items():
        _read_imports(graph, name, path.name == "__init__.py", tree, lines)
    return graph


def _read_imports(graph: Graph, module: str, is_init: bool, tree: ast.Module, lines: list[str]) -> None:
    package = graph.root.name
    here = module if is_init else module.rpartition(".")[0]
    modules = graph.files.keys()

    def owner(dotted: str) -> str | None:
        """The module that ``dotted`` (a module, or a name inside one) lives in."""
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def statement(node: ast.AST) -> str:
        return " ".join(line.strip() for line in lines[node.lineno - 1:node.end_lineno])

    def add(node: ast.AST, target: str | None) -> None:
        if target and target != module:
            graph.imports.append(Import(module, target, node.lineno, statement(node)))

    aliases: dict[str, str] = {}        # local name bound to a module of the package -> that module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:              # relative: from . import x / from ..core import task
                parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base != package and not base.startswith(package + "."):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in modules:
                    add(node, full)
                    aliases[alias.asname or alias.name] = full
                else:
                    add(node, owner(base))
                    if _is_private(alias.name) and owner(base) != module:
                        graph.private.append(Import(module, owner(base), node.lineno, statement(node)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    add(node, owner(alias.name))
                    if alias.asname:
                        aliases[alias.asname] = owner(alias.name)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            # __import__("cleo_dask.x") / importlib.import_module("cleo_dask.x") with a literal name
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            arg = node.args[0].value
            if called in ("__import__", "import_module") and isinstance(arg, str) and arg.startswith(package):
                add(node, owner(arg))
    for node in ast.walk(tree):         # m._x where m is a module of the package bound by an import
        if (isinstance(node, ast.Attribute) and _is_private(node.attr) and isinstance(node.value, ast.Name)
                and aliases.get(node.value.id, module) != module
                and f"{aliases[node.value.id]}.{node.attr}" not in modules):
            graph.private.append(Import(module, aliases[node.value.id], node.lineno, lines[node.lineno - 1].strip()))


def cycles(graph: Graph) -> list[list[Import]]:
    """The shortest import loop through each module that is on one (each loop listed once)."""
    edges = graph.edges()
    found: dict[frozenset[str], list[Import]] = {}
    for start in sorted(graph.files):
        path = _shortest_path(edges, start, start)
        if path:
            found.setdefault(frozenset(imp.source for imp in path), path)
    return list(found.values())


def _shortest_path(edges: dict[str, dict[str, Import]], start: str, goal: str) -> list[Import] | None:
    """Breadth-first: the fewest imports leading from ``start`` back to ``goal``."""
    came: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for module in frontier:
            for target, imp in sorted(edges.get(module, {}).items()):
                if target == goal:
                    path = [imp]
                    while path[0].source != start:
                        path.insert(0, came[path[0].source])
                    return path
                if target not in came and target != start:
                    came[target] = imp
                    nxt.append(target)
        frontier = nxt
    return None


def layer_of(module: str) -> int:
    """Index in LAYERS of ``module`` (``cleo_dask.core.task`` -> core's layer); len(LAYERS) if in none."""
    top = (module.split(".") + [""])[1]
    return next((i for i, names in enumerate(LAYERS) if top in names), len(LAYERS))


def upward_imports(graph: Graph) -> list[Import]:
    return [imp for imp in graph.imports if layer_of(imp.target) > layer_of(imp.source)]


# -- the report: what each check found, as one message ------------------------------------------

def describe_cycles(graph: Graph) -> list[str]:
    out = []
    for path in cycles(graph):
        chain = " -> ".join([imp.source for imp in path] + [path[0].source])
        out.append(f"cycle {chain}\n" + "\n".join(f"    {imp.where(graph)}" for imp in path))
    return out


def describe_long(graph: Graph) -> list[str]:
    return [f"{graph.files[m]}: {n} lines" for m, n in sorted(graph.lines.items()) if n > MAX_LINES]


def describe_private(graph: Graph) -> list[str]:
    statements = {(imp.source, imp.line): imp for imp in graph.private}   # one line per statement
    return [f"{imp.where(graph)}  (a private name of {imp.target})" for _, imp in sorted(statements.items())]


def describe_upward(graph: Graph) -> list[str]:
    return [f"{imp.where(graph)}  (layer {layer_of(imp.source)} imports layer {layer_of(imp.target)})"
            for imp in sorted(upward_imports(graph), key=lambda i: (i.source, i.line))]


def _fail_if(problems: list[str], what: str) -> None:
    if problems:
        pytest.fail(f"{len(problems)} {what}:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def package() -> Graph:
    return read_package(PACKAGE)


def test_no_module_imports_one_that_imports_it_back(package):
    _fail_if(describe_cycles(package), "import cycles (each shown as its shortest loop, with the import lines)")


def test_no_module_is_over_500_lines(package):
    _fail_if(describe_long(package), f"modules over {MAX_LINES} lines (split them by idea)")


def test_no_module_uses_another_modules_private_names(package):
    _fail_if(describe_private(package), "uses of another module's _private name (make it public or add a function)")


def test_lower_layers_never_import_upper_ones(package):
    _fail_if(describe_upward(package), "upward imports (see LAYERS in tests/test_structure.py)")


def test_every_module_is_in_a_layer_and_has_a_docstring(package):
    _fail_if([f"{graph_file}: in no layer (add its folder to LAYERS)" for m, graph_file in package.files.items()
              if layer_of(m) == len(LAYERS)], "modules outside the layers")
    _fail_if([f"{package.files[m]}" for m, has in package.docstring.items() if not has],
             "modules without a docstring")


# -- the checker itself, on a small fake package ------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "cleo_dask"


def test_the_checker_finds_a_cycle_through_a_lazy_import_private_names_and_upward_imports(tmp_path):
    pkg = _write(tmp_path, {
        "cleo_dask/__init__.py": '"""API."""\nfrom cleo_dask.engine import Engine\n',
        "cleo_dask/engine.py": '"""Engine."""\nfrom .core import task\nfrom .core.task import _helper\n',
        "cleo_dask/core/__init__.py": '"""Core."""\n',
        "cleo_dask/core/task.py": '''\
            """Task."""
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from cleo_dask.engine import Engine

            def _helper():
                from ..core import workflow   # lazy: still an import
                return workflow
            ''',
        "cleo_dask/core/workflow.py": '"""Workflow."""\nimport cleo_dask.core.task as t\n\nx = t._helper\n',
        "cleo_dask/util/__init__.py": "",
    })
    graph = read_package(pkg)

    loops = describe_cycles(graph)
    assert [loop.splitlines()[0] for loop in loops] == [
        "cycle cleo_dask.core.task -> cleo_dask.core.workflow -> cleo_dask.core.task",
        "cycle cleo_dask.engine -> cleo_dask.core.task -> cleo_dask.engine"]
    assert "cleo_dask/core/task.py:7: from ..core import workflow" in loops[0]       # lazy imports count
    assert "cleo_dask/core/workflow.py:2: import cleo_dask.core.task as t" in loops[0]
    assert "cleo_dask/core/task.py:4: from cleo_dask.engine import Engine" in loops[1]  # so do type hints'
    assert describe_upward(graph) == [
        "cleo_dask/core/task.py:4: from cleo_dask.engine import Engine  (layer 2 imports layer 6)"]
    assert describe_private(graph) == [
        "cleo_dask/core/workflow.py:4: x = t._helper  (a private name of cleo_dask.core.task)",
        "cleo_dask/engine.py:3: from .core.task import _helper  (a private name of cleo_dask.core.task)"]
    assert describe_long(graph) == []
    assert not graph.docstring["cleo_dask.util"]


def test_the_checker_finds_nothing_in_a_clean_package(tmp_path):
    pkg = _write(tmp_path, {
        "cleo_dask/__init__.py": '"""API."""\nfrom cleo_dask.engine import Engine\nfrom cleo_dask import errors\n',
        "cleo_dask/errors.py": '"""Errors."""\n',
        "cleo_dask/engine.py": '"""Engine."""\nfrom cleo_dask.errors import CleoError\n' + "\n" * MAX_LINES,
    })
    graph = read_package(pkg)
    assert (describe_cycles(graph), describe_upward(graph), describe_private(graph)) == ([], [], [])
    assert describe_long(graph) == [f"cleo_dask/engine.py: {MAX_LINES + 2} lines"]


if __name__ == "__main__":
    g = read_package(PACKAGE)
    for title, found in [("CYCLES", describe_cycles(g)), ("LONG", describe_long(g)),
                         ("PRIVATE", describe_private(g)), ("UPWARD", describe_upward(g))]:
        print(f"{title}: {len(found) or 'none'}", *found, sep="\n  ")
