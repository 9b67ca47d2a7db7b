"""The layout shows the architecture (ARCHITECTURE.md): no import circle among the project's modules,
no arrow up between layers, and top-level folders small enough to read. Checked on the source with
``ast``, lazy imports inside functions included, so a circle cannot hide behind a local import."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("sdcore", "sdcli", "training", "service", "loadtest")


def module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in list(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def arrows(graph: dict[str, set[str]], source: str, targets: tuple[str, ...]) -> list[str]:
    def within(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    return sorted(f"{m} -> {t}" for m, ts in graph.items() if within(m, source)
                  for t in ts if any(within(t, p) for p in targets))


def test_no_arrow_up() -> None:
    graph = import_graph()
    assert arrows(graph, "training", ("sdcli", "loadtest")) == []
    assert arrows(graph, "sdcore", ("training", "service", "sdcli", "loadtest")) == []
    assert arrows(graph, "service", ("training", "sdcli", "loadtest")) == []
    assert arrows(graph, "service.runtimes", ("service.api", "service.grpc_api", "service.repository",
                                              "service.batcher", "service.app")) == []
    assert arrows(graph, "service.repository", ("service.api", "service.grpc_api", "service.app")) == []
    assert arrows(graph, "training.stages", ("training.studies", "training.pipeline", "training.cli")) == []
    assert arrows(graph, "training.data", ("training.stages", "training.studies", "training.pipeline")) == []


def test_top_level_folders_hold_at_most_twelve_modules_each() -> None:
    for folder in ("training", "service"):
        modules = sorted(p.name for p in (REPO / folder).glob("*.py"))
        assert len(modules) <= 12, (folder, modules)


def test_every_package_says_what_lives_in_it() -> None:
    for folder in ("training", "service"):
        for init in (REPO / folder).rglob("__init__.py"):
            if "grpc_api" in init.parts or "routes" in init.parts:
                continue
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
            assert doc and len(doc) > 40, f"{init.relative_to(REPO)} has no opening docstring"
