"""The code keeps DESIGN.md's layering table: every import of ours points along an arrow the
table allows, no modules import each other in a cycle (not even inside a package), and no
source module grows past 600 lines (migrations excepted).

Imports are read with `ast` from every module under src/jean_memory, including imports inside
functions (a lazy import is still an arrow), relative or absolute, `from jean_memory.x import y`
(an arrow to the module `x.y` when that is a module, else to `x`) and `import jean_memory.x`.

What violates today is listed, entry by entry, in KNOWN_VIOLATIONS: the test fails on any
violation not listed, and on any listed entry that no longer violates, so the list can only
shrink. The checker's own test (a synthetic package and table) keeps it from passing silently.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "jean_memory"
MAX_LINES = 600

#: A place may import itself and what its row names. "*" is anything of ours.
#: Rows are DESIGN.md's "Layout" table; `oauth.verify` and `oauth.scopes` are the only parts of
#: oauth/ that mcp_server/ may import.
TABLE: dict[str, set[str]] = {
    "leaf": set(),
    "db": {"leaf"},
    "observability": {"leaf"},
    "accounts": {"db", "leaf"},
    "web": {"leaf"},
    "oauth": {"accounts", "db", "web", "observability", "leaf"},
    "memory": {"db", "leaf"},
    "mcp_server": {"oauth.verify", "oauth.scopes", "memory", "accounts", "observability", "leaf"},
    "pages": {"accounts", "oauth", "memory", "web", "observability", "leaf"},
    "doctor": set(),
    "app": {"*"},
    "cli": {"*"},
}

#: Top-level modules that are not leaves: app.py and what it assembles (DESIGN.md: "app.py
#: assembles routes, middleware and the background tasks"; the maintenance loop is one of those
#: tasks and touches oauth/, db/ and memory/, which may not import each other), and the command
#: line split across modules.
ASSEMBLY = {"app": "app", "maintenance": "app", "cli": "cli", "cli_accounts": "cli", "serving": "cli"}

#: Exactly what violates today; each entry is ("arrow", importer, imported), ("cycle", *modules
#: of one cycle, sorted) or ("size", module). Remove an entry when its violation is gone.
KNOWN_VIOLATIONS: set[tuple[str, ...]] = set()  # issue 13 emptied it: keep it so

Violation = tuple[str, ...]


def module_files(src: Path, package: str) -> dict[str, Path]:
    """Every module of `package` under `src`, by dotted name (a package by its __init__.py)."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, known: Iterable[str], package: str) -> set[str]:
    """The modules of ours that module `name` imports anywhere in its body."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(target: str) -> str | None:
        """`target` or its closest enclosing module of ours."""
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            bases = [base]
            names = [alias.name for alias in node.names]
        else:
            continue
        for base in bases:
            if base != package and not base.startswith(package + "."):
                continue
            # `from x import y` names the module x.y when there is one, else something in x.
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
            targets = submodules if submodules and len(submodules) == len(names) else [base, *submodules]
            for target in targets:
                resolved = resolve(target)
                if resolved and resolved != name:
                    found.add(resolved)
    return found


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    modules = module_files(src, package)
    return {name: imports_of(name, path, modules, package) for name, path in modules.items()}


def place_of(module: str, package: str = PACKAGE) -> str:
    """The row of TABLE a module belongs to."""
    parts = module.split(".")[1:]
    if not parts:
        return "leaf"  # the package's own __init__: sets an environment default, imports nothing
    if len(parts) == 1 and parts[0] in ASSEMBLY:
        return ASSEMBLY[parts[0]]
    if len(parts) == 1 and parts[0] not in TABLE:
        return "leaf"
    return parts[0]


def names_of(module: str) -> set[str]:
    """What an importer's row may name to allow importing `module`: its place, and for the
    modules a row names on their own (oauth.verify) that name too."""
    place = place_of(module)
    return {place, ".".join(module.split(".")[1:3])}


def cycles(graph: Mapping[str, set[str]]) -> list[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(
    graph: Mapping[str, set[str]],
    table: Mapping[str, set[str]],
    place: Callable[[str], str],
    names: Callable[[str], set[str]],
    sizes: Mapping[str, int],
    max_lines: int = MAX_LINES,
) -> set[Violation]:
    found: set[Violation] = set()
    for importer, imported in graph.items():
        allowed = table[place(importer)]
        for target in imported:
            if "*" in allowed or place(target) == place(importer) or names(target) & allowed:
                continue
            found.add(("arrow", importer, target))
    found.update(("cycle", *component) for component in cycles(graph))
    found.update(("size", module) for module, lines in sizes.items() if lines > max_lines)
    return found


def source_sizes(src: Path, package: str) -> dict[str, int]:
    return {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in module_files(src, package).items()
        if not name.startswith(f"{package}.db.migrations")
    }


def current_violations() -> set[Violation]:
    return violations(import_graph(SRC, PACKAGE), TABLE, place_of, names_of, source_sizes(SRC, PACKAGE))


def test_every_place_is_a_row_of_the_table() -> None:
    places = {place_of(module) for module in module_files(SRC, PACKAGE)}
    assert places <= TABLE.keys(), f"modules outside DESIGN.md's table: {places - TABLE.keys()}"


def test_imports_follow_the_layering_table() -> None:
    found = current_violations()
    new = sorted(found - KNOWN_VIOLATIONS)
    gone = sorted(KNOWN_VIOLATIONS - found)
    assert not new, "violations of DESIGN.md's layering (fix them; do not list them):\n" + "\n".join(map(str, new))
    assert not gone, "fixed, so remove from KNOWN_VIOLATIONS:\n" + "\n".join(map(str, gone))


# -- the checker itself -------------------------------------------------------------------------


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_checker_finds_arrows_cycles_and_size(tmp_path: Path) -> None:
    """A synthetic package with one of each violation, written every way an import can be."""
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/leaf.py", "import os\n")
    write(tmp_path, "pkg/low/__init__.py", "")
    write(tmp_path, "pkg/low/a.py", "from pkg import leaf\n")
    # a cycle inside one package, one side of it a relative import inside a function
    write(tmp_path, "pkg/low/b.py", "import pkg.low.c\n")
    write(tmp_path, "pkg/low/c.py", "def f():\n    from . import b\n    return b\n")
    write(tmp_path, "pkg/high/__init__.py", "")
    write(tmp_path, "pkg/high/ok.py", "from pkg.low.a import x\nfrom pkg.leaf import y\n")
    write(tmp_path, "pkg/high/special.py", "from pkg.low import special\n")
    write(tmp_path, "pkg/low/special.py", "")
    # low may not import high: absolute, from a function body, and relative with two dots
    write(tmp_path, "pkg/low/up.py", "def f():\n    import pkg.high.ok\n")
    write(tmp_path, "pkg/low/up2.py", "from ..high import ok\n")
    write(tmp_path, "pkg/high/big.py", "x = 1\n" * 11)

    def place(module: str) -> str:
        parts = module.split(".")
        return "leaf" if len(parts) < 3 else parts[1]

    def names(module: str) -> set[str]:
        return {place(module), ".".join(module.split(".")[1:3])}

    table = {"leaf": set(), "low": {"leaf"}, "high": {"low.a", "leaf"}}
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.low.c"] == {"pkg.low.b"}
    assert graph["pkg.low.up2"] == {"pkg.high.ok"}
    assert graph["pkg.high.ok"] == {"pkg.low.a", "pkg.leaf"}
    sizes = source_sizes(tmp_path, "pkg")
    assert violations(graph, table, place, names, sizes, max_lines=10) == {
        ("arrow", "pkg.high.special", "pkg.low.special"),  # high may import low.a only
        ("arrow", "pkg.low.up", "pkg.high.ok"),
        ("arrow", "pkg.low.up2", "pkg.high.ok"),
        ("cycle", "pkg.low.b", "pkg.low.c"),
        ("size", "pkg.high.big"),
    }


def test_the_table_matches_design_md_in_the_real_tree() -> None:
    """Spot checks of the real mapping, so a place_of bug cannot wave every arrow through."""
    assert place_of("jean_memory.off_loop") == "leaf"
    assert place_of("jean_memory.app") == "app"
    assert place_of("jean_memory.oauth.cimd") == "oauth"
    assert names_of("jean_memory.oauth.verify") == {"oauth", "oauth.verify"}
    assert not names_of("jean_memory.oauth.service") & TABLE["mcp_server"]
    graph = import_graph(SRC, PACKAGE)
    assert "jean_memory.memory.onnx_encoder" in graph["jean_memory.memory.int8_model"]
    assert "jean_memory.off_loop" in graph["jean_memory.oauth.token"]
