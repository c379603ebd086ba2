"""The package's layout: rooms (subpackages, or top-level modules) whose imports all point down.

``ROOMS`` is the layout, from low to high: a room may import itself and the rooms before it, never one after
it, so there is no cycle between rooms. Every import counts, at module level or inside a function (a lazy
import still ties the rooms together). Files stay short enough to read top to bottom.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "worldmodel"
MAX_LINES = 450

#: From low to high.
ROOMS = [
    "files",  # safe writing
    "traffic",  # the simulator core
    "costs",  # costs of an ego view
    "data",  # HDF5 formats, importers, windows, replay of a recording
    "nn",  # networks, checkpoint files, DDP helpers
    "driving",  # environments, objective, worlds, planners, drivers, closed-loop harness
    "training",  # the loop, forward-model and policy training
    "ssl",  # self-supervised pretraining, on the loop
    "viz",  # videos and figures
    "evaluation",  # forward-model metrics, tables
    "bench",  # throughput benchmarks
    "cli",  # the command line
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "worldmodel" and len(parts) > 1 else None


def _imported(node: ast.AST, package: str) -> list[str]:
    """Absolute names of the modules (or names) an import statement brings in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: from the importing package upwards
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module == "worldmodel":  # ``from worldmodel import traffic``
        return [f"worldmodel.{alias.name}" for alias in node.names]
    return [module]


def room_edges() -> dict[tuple[str, str], list[str]]:
    """``{(room, imported room): ["file:line", ...]}`` over every import in the package."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        source = _room(module)
        if source is None:  # worldmodel/__init__.py
            continue
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported(node, package):
                target = _room(name)
                if target is not None and target != source:
                    edges[source, target].append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return edges


def test_every_room_is_in_the_layout():
    found = {_room(_module_name(p)) for p in PACKAGE.rglob("*.py")} - {None}
    assert found <= set(ROOMS), f"rooms missing from ROOMS: {sorted(found - set(ROOMS))}"


def test_rooms_import_only_rooms_below_them():
    rank = {room: k for k, room in enumerate(ROOMS)}
    upward = {
        f"{a} -> {b}": where
        for (a, b), where in room_edges().items()
        if rank.get(a, len(ROOMS)) <= rank.get(b, len(ROOMS))
    }
    assert not upward, f"imports that point up the layout (ROOMS): {upward}"


def test_no_cycle_between_rooms():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in room_edges():
        graph[a].add(b)
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(room: str, path: list[str]) -> None:
        state[room] = 1
        for nxt in sorted(graph[room]):
            assert state.get(nxt) != 1, f"cycle between rooms: {' -> '.join([*path, room, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, room])
        state[room] = 2

    for room in sorted(graph):
        if room not in state:
            visit(room, [])


def test_no_file_is_too_long():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines (split them by concept): {long}"
