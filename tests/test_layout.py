"""The package's modules import one another in layers: no import cycle, however indirect.

Every import counts, including those inside functions (a lazy import is still a dependency);
only imports under ``if TYPE_CHECKING:`` are left out, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "beluga_workflows"


def module_names() -> dict[str, tuple[Path, bool]]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        names[".".join(parts)] = (path, is_package)
    return names


def imports_of(name: str, path: Path, is_package: bool, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            submodules = {f"{module}.{alias.name}" for alias in node.names} & known
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(module)
    return {target for target in found & known if target != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    known = set(modules)
    return {name: imports_of(name, *modules[name], known) for name in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "beluga_workflows.engine.steps" in graph  # the walk found the package
    assert "beluga_workflows.interpreter" in graph["beluga_workflows.replay"]
    found = cycles(graph)
    assert found == [], "import cycles: " + "; ".join(" ↔ ".join(c) for c in found)


def test_the_permission_table_is_shared_from_the_top_of_the_package() -> None:
    graph = import_graph()
    for adapter in (
        "beluga_workflows.admin",
        "beluga_workflows.api.views",
        "beluga_workflows.management.commands.workflow",
    ):
        assert "beluga_workflows.permissions" in graph[adapter], adapter
    # The table itself knows nothing of DRF: the admin and the CLI use it without the API.
    assert "rest_framework" not in (PACKAGE / "permissions.py").read_text()


def test_the_public_api_imports_before_django_is_set_up() -> None:
    # Workflow modules and scripts import it at the top, before django.setup() (models can't).
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", "from beluga_workflows import workflow; print(workflow.defn)"],
        cwd=PACKAGE.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
