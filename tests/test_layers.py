"""Imports point down: no circles, plug-ins lean on the kernel only, the kernel on nothing above it.

Read from the source with `ast`, so every import counts: top level, under `if TYPE_CHECKING:`,
inside functions, and plug-ins registered by name (a "package.module.Class" string handed to a
call, which the registry imports as surely as an import statement would).
"""

from __future__ import annotations

import ast
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

# -- the layers, as data --------------------------------------------------------------------------
# "x.*" is the module x and every module below it.

KERNEL = (
    "connector",  # the package itself: its __init__ holds the version only
    "connector.events",
    "connector.errors",
    "connector.status",
    "connector.units",
    "connector.types",
    "connector.retry",
    "connector.phones",
    "connector.segments",
    "connector.ledger.*",
    "connector.http",
    "connector.redact",
    "connector.logs",
    "connector.plugins",  # how a plug-in declares its type name; the registries use it
    "connector.web",  # what a plug-in that serves HTTP hands the server: routes, error shape
    "connector.policy",  # the send policy step's words, shared by the engine and the policies
    "connector.progress",  # how a source shows progress of a long file or sheet
    "connector.optout_lists",  # what a kind of opt-out list gives (a Google Sheet tab: sources)
)
APPLICATION = (
    "connector.__main__",
    "connector.engine",
    "connector.send_queue",
    "connector.runtime",
    "connector.server",
    "connector.config",
    "connector.config_loader",
    "connector.config_errors",
    "connector.rules",
    "connector.commands",
    "connector.cli",
    "connector.metrics",
    "connector.openapi",
    "connector.policy_step",
    "connector.optouts",
    "connector.preview",
    "connector.access",  # server.token
    "connector.masking",  # numbers as the server and the status page show them
    "connector.page.*",  # the status page
    "connector.rehearsal",
    "connector.rule_test_file",
    "connector.rule_tests",
    "connector.schema",
    "connector.assembly",
    "connector.batch_gate",
    "connector.entries",
    "connector.reload",
    "connector.resolve",
    "connector.stop_signal",
)
CORE = "connector"
PLUGIN_PACKAGES = ("sources", "sinks", "policies")

ROOT = Path(__file__).resolve().parent.parent


def in_layer(module: str, layer: tuple[str, ...]) -> bool:
    return any(
        module == entry.removesuffix(".*") or (entry.endswith(".*") and module.startswith(entry[:-1]))
        for entry in layer
    )


def is_plugin(module: str) -> bool:
    return module.partition(".")[0] in PLUGIN_PACKAGES


def layer_of(module: str) -> str:
    if is_plugin(module):
        return "plug-in"
    kernel, application = in_layer(module, KERNEL), in_layer(module, APPLICATION)
    if kernel == application:
        return "unclassified" if not kernel else "both kernel and application"
    return "kernel" if kernel else "application"


# -- reading the imports --------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    file: str
    line: int
    how: str  # "", "under TYPE_CHECKING", "inside a function", "by name"

    def __str__(self) -> str:
        how = f" {self.how}" if self.how else ""
        return f"{self.file}:{self.line} {self.importer} imports {self.imported}{how}"


def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in (CORE, *PLUGIN_PACKAGES):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Reader(ast.NodeVisitor):
    """Every import of one module, with where it stands; names resolved to modules of the tree."""

    def __init__(self, module: str, is_package: bool, file: str, known: set[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.file = file
        self.known = known
        self.found: list[Import] = []
        self._context: list[str] = []

    def _add(self, node: ast.AST, name: str, how: str | None = None) -> None:
        target = self._known_prefix(name)
        if target is not None and target != self.module:
            context = how if how is not None else (self._context[-1] if self._context else "")
            self.found.append(Import(self.module, target, self.file, getattr(node, "lineno", 0), context))

    def _known_prefix(self, name: str) -> str | None:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in self.known:
                return candidate
        return None

    def _within(self, how: str, nodes: list[ast.stmt]) -> None:
        self._context.append(how)
        for node in nodes:
            self.visit(node)
        self._context.pop()

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._within("under TYPE_CHECKING", node.body)
            for other in node.orelse:
                self.visit(other)
        else:
            self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:  # these run when the module is imported
            self.visit(decorator)
        self.visit(node.args)
        self._within("inside a function", node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(node, submodule if submodule in self.known else base)

    def visit_Call(self, node: ast.Call) -> None:
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                parts = arg.value.split(".")
                named = len(parts) > 1 and all(p.isidentifier() for p in parts)
                if named and parts[0] in (CORE, *PLUGIN_PACKAGES):
                    self._add(node, arg.value, "by name")
        self.generic_visit(node)


def read_imports() -> list[Import]:
    files = module_files()
    known = set(files)
    found: list[Import] = []
    for module, path in files.items():
        reader = _Reader(module, path.name == "__init__.py", str(path.relative_to(ROOT)), known)
        reader.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found += reader.found
    return list(dict.fromkeys(found))  # `from x import a, b` is one import of x


IMPORTS = read_imports()


# -- circles --------------------------------------------------------------------------------------


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(sorted(group))
    return groups


def shortest_cycle(graph: dict[str, set[str]], start: str, allowed: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside `allowed`."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for step in sorted(graph.get(node, ())):
            if step not in allowed:
                continue
            if step == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if step not in came_from:
                came_from[step] = node
                queue.append(step)
    return []


def test_no_import_circle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for found in IMPORTS:
        graph[found.importer].add(found.imported)
        where[(found.importer, found.imported)].append(found)
    report: list[str] = []
    for group in strongly_connected(graph):
        if len(group) < 2:
            continue
        members = set(group)
        cycles: list[list[str]] = []
        for start in group:
            cycle = shortest_cycle(graph, start, members)
            if cycle and not any(set(pairwise(cycle)) == set(pairwise(c)) for c in cycles):
                cycles.append(cycle)
        report.append(f"circle among {len(group)} modules: {', '.join(group)}")
        for cycle in cycles:
            report.append("  " + " -> ".join(cycle))
            for a, b in pairwise(cycle):
                report += [f"      {found}" for found in where[(a, b)]]
    if report:
        pytest.fail("imports form circles:\n" + "\n".join(report), pytrace=False)


# -- layers ---------------------------------------------------------------------------------------


def test_every_core_module_is_kernel_or_application() -> None:
    wrong = [
        f"{module} ({path.relative_to(ROOT)}): {layer_of(module)}"
        for module, path in module_files().items()
        if not is_plugin(module) and layer_of(module) not in ("kernel", "application")
    ]
    if wrong:
        pytest.fail("add each to KERNEL or APPLICATION at the top of tests/test_layers.py (once):\n"
                    + "\n".join(wrong), pytrace=False)


def test_plugins_import_only_the_kernel() -> None:
    wrong = [
        f"{found} ({layer_of(found.imported)})"
        for found in IMPORTS
        if is_plugin(found.importer) and not is_plugin(found.imported)
        and layer_of(found.imported) != "kernel"
    ]
    if wrong:
        pytest.fail(
            "plug-ins importing more than the kernel of connector/:\n" + "\n".join(wrong), pytrace=False
        )


def test_the_kernel_imports_no_application_module_and_no_plugin() -> None:
    wrong = [
        f"{found} ({layer_of(found.imported)})"
        for found in IMPORTS
        if layer_of(found.importer) == "kernel" and layer_of(found.imported) != "kernel"
    ]
    if wrong:
        pytest.fail("kernel modules importing upwards:\n" + "\n".join(wrong), pytrace=False)


def test_the_reader_sees_every_kind_of_import() -> None:
    # The reader is what the layer tests stand on: imports it missed would pass unseen.
    source = (
        "from typing import TYPE_CHECKING\nimport connector.events\nfrom . import status\n"
        "from connector.ledger import base\nif TYPE_CHECKING:\n    from connector.engine import Engine\n"
        "def f():\n    from connector import runtime\n    load('sinks.dry_run.DryRunSink')\n"
    )
    known = {
        "connector", "connector.events", "connector.status", "connector.ledger", "connector.ledger.base",
        "connector.engine", "connector.runtime", "connector.probe", "sinks", "sinks.dry_run",
    }
    reader = _Reader("connector.probe", False, "probe.py", known)
    reader.visit(ast.parse(source))
    assert [(i.imported, i.how) for i in reader.found] == [
        ("connector.events", ""),
        ("connector.status", ""),
        ("connector.ledger.base", ""),
        ("connector.engine", "under TYPE_CHECKING"),
        ("connector.runtime", "inside a function"),
        ("sinks.dry_run", "by name"),
    ]
