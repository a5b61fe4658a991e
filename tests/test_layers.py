"""The project's modules form layers: no import cycle among core/ and dashboard/ (function-level
imports counted), and a module imports another inside a function only to keep a heavy or
optional dependency out of plain imports, saying which on that line or the line above.

Parsed with `ast`, nothing imported: fast, and it names the cycle or the line that breaks a rule.
Imports under `if TYPE_CHECKING:` never run and are not edges. `importlib` registries (the env
modules, the CLI's verb modules) are plug-ins by name, not edges either.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "dashboard")
#: Dependencies worth keeping out of a plain import: big (torch and the stack on it, numba's
#: compiler), the dashboard's (streamlit, plotly, igraph), or optional / external simulators.
HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tensorboard", "numba", "streamlit",
         "plotly", "igraph", "scienceworld", "alfworld", "textworld", "playwright", "ray", "gguf")


@dataclass
class Module:
    name: str
    path: Path
    lines: list[str]
    top: set[str] = field(default_factory=set)  # project modules imported at module level
    inner: list[tuple[int, str]] = field(default_factory=list)  # (line, project module) inside functions
    heavy: set[str] = field(default_factory=set)  # HEAVY roots imported at module level


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def parse_modules() -> dict[str, Module]:
    mods = {module_name(p): p for top in PACKAGES for p in (REPO / top).rglob("*.py")
            if "__pycache__" not in p.parts}

    def project(name: str) -> str | None:
        """The project module `name` is (or is inside: `core.stages.run_policy` is core.stages)."""
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    out = {}
    for name, path in mods.items():
        text = path.read_text(encoding="utf-8")
        mod = out[name] = Module(name, path, text.splitlines())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def visit(node: ast.AST, in_function: bool, mod: Module = mod, package: str = package) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        up = package.split(".")[: len(package.split(".")) - child.level + 1]
                        base = ".".join([*up, base] if base else up)
                    # `from pkg import sub` needs the module pkg.sub; `from pkg import name`, pkg itself
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in child.names]
                else:
                    visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
                    continue
                found = {t for t in map(project, targets) if t and t != mod.name}
                if in_function:
                    mod.inner += [(child.lineno, t) for t in sorted(found)]
                else:
                    mod.top |= found
                    mod.heavy |= {t.split(".")[0] for t in targets if t.split(".")[0] in HEAVY}

        visit(ast.parse(text), False)
    return out


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(edges):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def heavy_reach(mods: dict[str, Module], name: str) -> set[str]:
    """The HEAVY dependencies a plain `import name` loads: its module-level imports, transitively."""
    seen, todo, heavy = {name}, [name], set()
    while todo:
        mod = mods[todo.pop()]
        heavy |= mod.heavy
        for dep in mod.top - seen:
            seen.add(dep)
            todo.append(dep)
    return heavy


def test_no_import_cycles():
    mods = parse_modules()
    edges = {m.name: m.top | {t for _, t in m.inner} for m in mods.values()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + " (move what they share down a layer)"


def test_function_level_imports_only_keep_a_heavy_dependency_out():
    """A project module imported inside a function carries a comment (that line or the one above)
    naming a HEAVY dependency that the imported module loads and the importing one does not."""
    mods = parse_modules()
    bad = []
    for mod in mods.values():
        for line, target in mod.inner:
            comment = " ".join(text.partition("#")[2].lower() for text in mod.lines[max(line - 2, 0):line])
            named = set(HEAVY) & set(re.findall(r"\w+", comment))
            avoided = heavy_reach(mods, target) - heavy_reach(mods, mod.name)
            if not named & avoided:
                bad.append(f"{mod.path.relative_to(REPO)}:{line} imports {target} inside a function"
                           + (f" (it would keep {', '.join(sorted(avoided))} out: say so in a comment)" if avoided
                              else ": nothing heavy is kept out; import it at the top"))
    assert not bad, "\n".join(bad)


def test_the_checks_find_what_they_look_for():
    """The walker sees a function-level edge and the cycle it closes."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    mods = parse_modules()
    assert "core.mcts_kernel" in {t for _, t in mods["core.mcts"].inner}
    assert "numba" in heavy_reach(mods, "core.mcts_kernel") - heavy_reach(mods, "core.mcts")
