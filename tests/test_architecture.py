"""The layers of src/softprompt read bottom to top (ARCHITECTURE.md): a module imports only
modules of its own layer or below, and the import graph has no cycle. Walks every import
statement with `ast`, function-local ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "softprompt"

# Lowest first. A module belongs to the first entry its dotted name starts with.
LAYERS: list[tuple[str, ...]] = [
    ("softprompt.errors", "softprompt.plots", "softprompt.stats", "softprompt.lock"),
    ("softprompt.models", "softprompt.tasks"),
    ("softprompt.io",),
    (
        "softprompt.prompt",
        "softprompt.reparam",
        "softprompt.truncate",
        "softprompt.budget",
        "softprompt.prepend",
        "softprompt.batching",
        "softprompt.config",
        "softprompt.distributed",
    ),
    ("softprompt.scoring",),
    ("softprompt.train", "softprompt.tuning", "softprompt.evaluate", "softprompt.ensemble", "softprompt.inspect"),
    ("softprompt.spot", "softprompt.bench", "softprompt.serve", "softprompt.study"),
    ("softprompt.cli",),
    ("softprompt.__main__", "softprompt"),  # the package's API re-exports everything
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(name: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(name == p or (p != "softprompt" and name.startswith(p + ".")) for p in prefixes):
            return i
    raise AssertionError(f"{name}: in no layer of tests/test_architecture.py (add it to LAYERS and ARCHITECTURE.md)")


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """softprompt modules imported by module `name` at `path` (`from pkg import module` counts as the module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "softprompt")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.split(".")[0] != "softprompt":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, name, set(files)) - {name} for name, path in files.items()}


def test_no_module_imports_a_higher_layer():
    back = [
        f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
        for src, targets in graph().items()
        for dst in targets
        if layer(dst) > layer(src)
    ]
    assert not back, "\n".join(sorted(back))


def test_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt == "softprompt" or nxt not in edges:
                continue
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_only_the_cli_imports_typer():
    users = [
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if any(
            isinstance(n, (ast.Import, ast.ImportFrom))
            and "typer"
            in {
                *(a.name.split(".")[0] for a in getattr(n, "names", [])),
                (getattr(n, "module", None) or "").split(".")[0],
            }
            for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert users and all(u.startswith("softprompt.cli") for u in users), users


def test_the_checker_sees_a_function_local_back_edge(tmp_path):
    fake = tmp_path / "io.py"
    fake.write_text("def f():\n    from softprompt.cli import runtime\n    from . import errors\n")
    found = imports(fake, "softprompt.io", {"softprompt.cli.runtime", "softprompt.errors"})
    assert found == {"softprompt.cli.runtime", "softprompt.errors"}
    assert layer("softprompt.cli.runtime") > layer("softprompt.io") > layer("softprompt.errors")
