"""No import cycle between the modules of service/, not even one hidden by an import inside a
function (it still ties the two modules together; it only moves the failure to run time).

Read from the source, not by importing: every `import service...` and `from service... import`
anywhere in a module counts, except under `if TYPE_CHECKING:` (never run). Importing
`service.a.b` runs the package `service.a` first, so it counts as importing that package too:
that is how `service.core.rules` once reached the ORM through `service/scanner/__init__.py`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"


def module_files() -> dict[str, Path]:
    modules = {}
    for path in SERVICE.rglob("*.py"):
        parts = list(path.relative_to(SERVICE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_names(tree: ast.Module) -> Iterator[str]:
    """Every absolute module name imported in `tree` (`from a import b` gives a.b and a)."""
    for statement in tree.body:
        if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield node.module
                yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of service/ that importing it runs directly (packages included)."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, set())
        for name in imported_names(ast.parse(path.read_text(), str(path))):
            while name:  # service.a.b: the module (if it is one) and every package above it
                if name in modules and name != module and not module.startswith(name + "."):
                    edges.add(name)
                name = name.rpartition(".")[0]
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while (member := stack.pop()) != module:
                component.append(member)
            if component:
                found.append(sorted([module, *component]))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_in_the_service():
    assert cycles(import_graph()) == []


def test_the_check_sees_a_cycle_through_a_package_and_a_function_level_import():
    graph = {"a": {"b.c"}, "b": set(), "b.c": set(), "d": set()}
    assert cycles(graph) == []
    graph["b"] = {"a"}  # a -> b.c runs b, which imports a
    graph["a"] = {"b.c", "b"}
    assert cycles(graph) == [["a", "b"]]
    tree = ast.parse("import os\ndef f():\n    from b.c import x\n")
    assert list(imported_names(tree)) == ["os", "b.c", "b.c.x"]


# What each layer may import of the others (the rules its package docstring states). A layer
# is a package of service/ (service.http.api and service.scanner.sources are layers of their own).
MAY_IMPORT = {
    "service.core": set(),
    "service.db": {"service.core"},
    "service.scanner.sources": {"service.core", "service.config", "service.children"},
    "service.config": {"service.core", "service.db", "service.store"},
    "service.notify": {"service.core", "service.db", "service.config"},
    "service.store": {"service.core", "service.db", "service.notify", "service.scanner"},
    "service.verify": {"service.core"},
    "service.http.api": {
        "service.core", "service.db", "service.store", "service.notify", "service.runtime",
        "service.http", "service.logs",
    },
}  # fmt: skip
# Every package of service/ is a layer; a module at the top (settings, logs) is its own.
LAYERS = sorted(
    {*MAY_IMPORT, "service.http.web"}
    | {f"service.{path.parent.name}" for path in SERVICE.glob("*/__init__.py")},
    key=len,
)


def layer_of(module: str) -> str:
    """The most specific layer `module` is in (its own name when it is in none)."""
    found = module
    for layer in LAYERS:
        if module == layer or module.startswith(layer + "."):
            found = layer
    return found


def test_each_layer_imports_only_what_it_may():
    graph = import_graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if (allowed := MAY_IMPORT.get(layer_of(module))) is not None
        for target in targets
        if layer_of(target) != layer_of(module) and target != "service"
        and layer_of(target) not in allowed
    )  # fmt: skip
    assert wrong == []


def test_nothing_imports_the_command_line():
    graph = import_graph()
    assert sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if not module.startswith("service.cli") and module != "service.__main__"
        for target in targets
        if target.startswith("service.cli")
    ) == []  # fmt: skip
