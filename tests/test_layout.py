"""The code's layout holds: no import circle, no module over 400 lines, one place
that builds script calls. Read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "redispool"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its text
    (under TYPE_CHECKING and inside functions too: a hidden circle is a circle)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import module` depends on the module, not on pkg/__init__
            targets = [f"{base}.{alias.name}" for alias in node.names]
            if not any(t in known for t in targets):
                targets = [base]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def test_no_import_circle_in_the_package() -> None:
    mods = modules()
    graph = {name: imports_of(name, path, set(mods)) for name, path in mods.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}  # fmt: skip
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def builds_fcall(path: Path) -> bool:
    """The module spells the command FCALL in code (not in a docstring), or calls .fcall()."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and node.value in ("FCALL", "fcall"):
            return True
        if isinstance(node, ast.Attribute) and node.attr == "fcall":
            return True
    return False


def test_only_the_protocol_layer_builds_a_script_call() -> None:
    # scripts.Script sends an Op's function; acl names the command in the ACL rules
    allowed = {"redispool.protocol.op", "redispool.scripts", "redispool.acl"}
    builders = [name for name, path in modules().items()
                if builds_fcall(path) and name not in allowed]  # fmt: skip
    assert builders == [], f"modules that build FCALL themselves: {builders}"
