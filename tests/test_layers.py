"""vcap's import graph, built from the source: imports point down the layers only, there are no circles, every
function-local import of vcap's own code says why it is local, and no module grows past 500 lines."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vcap"

# lowest first; a module may import its own component and the components of lower layers. The report sits under
# the runners because every run ends by writing it; the package root (the API's lazy entry points) is the top.
LAYERS = (
    ("common",),
    ("evaluation", "processors"),
    ("datasets", "models"),
    ("tasks",),
    ("project",),
    ("inference",),
    ("report",),
    ("runners",),
    ("cli",),
    ("vcap",),
)
LAYER = {component: i for i, names in enumerate(LAYERS) for component in names}
MAX_LINES = 500


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vcap"


def imports(mods: dict[str, Path]):
    """``(importer, imported module, line, local, commented)`` for every import of vcap's own code."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    for module, path in mods.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` imports the module; `from mod import name` the module
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            text = "\n".join(lines[max(0, node.lineno - 2): node.end_lineno])
            for name in names:
                target = resolve(name) if name.split(".")[0] == "vcap" else None
                if target and target != module:
                    yield module, target, node.lineno, id(node) in local, "#" in text


def test_imports_point_down_the_layers():
    mods = modules()
    unknown = sorted({component(m) for m in mods} - set(LAYER))
    assert not unknown, f"components without a layer: {unknown}; add them to LAYERS"
    upward = [f"{a}:{line} imports {b}" for a, b, line, _, _ in imports(mods)
              if component(a) != component(b) and LAYER[component(b)] >= LAYER[component(a)]]
    assert not upward, "imports that do not point down the layers:\n" + "\n".join(upward)


def test_no_import_circles():
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for a, b, *_ in imports(mods):
        graph[a].add(b)
    # Tarjan's strongly connected components
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                circles.append(sorted(scc))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_function_local_imports_of_vcap_say_why():
    silent = [f"{a}:{line} imports {b}" for a, b, line, local, commented in imports(modules()) if local and not commented]
    assert not silent, "function-local imports of vcap's own modules without a comment giving the reason:\n" + \
        "\n".join(silent)


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
