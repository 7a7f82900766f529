#!/usr/bin/env python3
"""Check that recallscope's imports go one way: cli → run layer → analysis stages → core, no cycles.

Reads every module of the package with ``ast`` (nothing is imported or run) and collects each
module's imports of other package modules, those inside functions included (an import inside a
function is still a dependency; hiding one there does not break a cycle). Fails (exit 1, one line
per problem naming the module and the import) when:

- a module imports a module of a higher layer (an analysis stage importing the run layer, the
  report or the CLI; a core module importing a stage or the run layer);
- the imports form a cycle (an import of a module by its own package's ``__init__`` through a
  submodule counts);
- a module that must stay torch-free (the report, figures, the run directory, errors, constraints)
  reaches torch or transformers through the imports that run when it is imported (the package's
  ``__init__`` included);
- a module belongs to no layer (add it to LAYERS below when you add a module).

Usage: ``python scripts/check_imports.py [SRC_DIR]`` (default: src/recallscope next to this script).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "recallscope"

# Top to bottom; a module may import its own layer or any layer below. Names are module paths
# relative to the package; "report" covers recallscope.report and every module under it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("__init__", "__main__", "cli", "printing")),
    ("run layer", ("pipeline", "study", "rundir", "records", "sweeps", "executors", "report", "benchmarks")),
    (
        "analysis",
        (
            "recall",
            "patch",
            "path_patching",
            "movers",
            "decompose",
            "intercept",
            "suppress",
            "claims",
            "causal_trace",
            "knockout",
            "surgery",
            "onset",
        ),
    ),
    (
        "core",
        (
            "models",
            "tasks",
            "lens",
            "components",
            "stats",
            "figures",
            "display",
            "columns",
            "errors",
            "progress",
            "constraints",
            "version",
            "presets",
            "terminal",
            "verdicts",
            "locks",
        ),
    ),
]
# These must not reach torch (or transformers) through the package imports that run when they are
# imported: the report re-renders a run directory without loading the model stack.
TORCH_FREE = (
    "report",
    "figures",
    "display",
    "columns",
    "study",
    "rundir",
    "records",
    "locks",
    "errors",
    "constraints",
    "version",
    "progress",
    "terminal",
    "verdicts",
)
HEAVY = ("torch", "transformers")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(name: str) -> int | None:
    for i, (_, members) in enumerate(LAYERS):
        for m in members:
            if name == m or name.startswith(m + "."):
                return i
    return None


def resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    """The absolute module (relative to the package) a ``from ... import`` names."""
    if node.level == 0:
        mod = node.module or ""
        return mod[len(PACKAGE) + 1 :] if mod.startswith(PACKAGE + ".") else ("" if mod == PACKAGE else "\0" + mod)
    base = current.split(".") if current != "__init__" else []
    if not is_package:
        base = base[:-1]
    up = node.level - 1
    base = base[: len(base) - up] if up else base
    return ".".join(base + ([node.module] if node.module else []))


def collect(root: Path):
    """(package imports per module: {(target, line)}, external packages imported at import time per module,
    package imports run at import time per module, the modules)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        modules[module_name(path, root)] = path
    names = set(modules)
    internal: dict[str, set[tuple[str, int]]] = {m: set() for m in names}
    external: dict[str, set[str]] = {m: set() for m in names}
    eager: dict[str, set[str]] = {m: set() for m in names}  # package imports run when the module is imported

    def existing(target: str) -> str:
        # the longest existing module that ``target`` names ("models.view.ModelView" → "models.view")
        parts = target.split(".") if target else ["__init__"]
        while parts:
            cand = ".".join(parts)
            if cand in names:
                return cand
            parts = parts[:-1]
        return "__init__"

    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, now in _walk_runtime(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        internal[name].add((existing(alias.name[len(PACKAGE) + 1 :]), node.lineno))
                        if now:
                            eager[name].add(existing(alias.name[len(PACKAGE) + 1 :]))
                    elif now:
                        external[name].add(alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                target = resolve(node, name, is_package)
                if target.startswith("\0"):
                    if now:
                        external[name].add(target[1:].split(".")[0])
                    continue
                for alias in node.names:  # ``from . import claims`` imports the module claims
                    sub = f"{target}.{alias.name}" if target else alias.name
                    internal[name].add((existing(sub) if sub in names else existing(target), node.lineno))
                    if now:
                        eager[name].add(existing(sub) if sub in names else existing(target))
        internal[name] = {(t, line) for t, line in internal[name] if t != name}
        eager[name].discard(name)
    return internal, external, eager, names


def _walk_runtime(tree: ast.AST):
    """(node, at import time) for every node of ``tree`` except the bodies of ``if TYPE_CHECKING:``
    (never run); nodes inside a function run when it is called, not when the module is imported."""
    todo = [(tree, True)]
    while todo:
        node, now = todo.pop()
        yield node, now
        inner = now and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                todo.extend((c, inner) for c in child.orelse)
                continue
            todo.append((child, inner))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def dotted(name: str) -> str:
    return PACKAGE if name == "__init__" else f"{PACKAGE}.{name}"


def check(root: Path) -> list[str]:
    internal, external, eager, names = collect(root)
    problems = []
    for name in sorted(names):
        if layer_of(name) is None:
            problems.append(f"{dotted(name)}: belongs to no layer; add it to LAYERS in scripts/check_imports.py")
    for name in sorted(names):
        mine = layer_of(name)
        if mine is None:
            continue
        for target, line in sorted(internal[name]):
            theirs = layer_of(target)
            # a package's __init__ re-exporting its own submodules is not an upward import
            if theirs is not None and theirs < mine and not target.startswith(name + "."):
                problems.append(
                    f"{dotted(name)} (line {line}) imports {dotted(target)}: {_article(LAYERS[mine][0])} module may not "
                    f"import the {LAYERS[theirs][0]}"
                )
    graph = {n: {t for t, _ in internal[n]} for n in names}
    for comp in find_cycles(graph):
        members = set(comp)
        edges = [f"{dotted(a)} (line {line}) → {dotted(b)}" for a in comp for b, line in sorted(internal[a]) if b in members]
        problems.append(f"import cycle among {', '.join(dotted(c) for c in comp)}: {'; '.join(edges)}")
    # torch-free modules: no chain of package imports may reach torch/transformers
    heavy = {n for n in names if external[n] & set(HEAVY)}
    # importing ``pkg.sub`` runs ``pkg/__init__`` (and the package's) first
    runs = {n: set(eager[n]) for n in names}
    for n in names:
        parts = n.split(".")
        for k in range(1, len(parts)):
            if ".".join(parts[:k]) in names:
                runs[n].add(".".join(parts[:k]))
        if n != "__init__":
            runs[n].add("__init__")
    for name in sorted(names):
        if not any(name == m or name.startswith(m + ".") for m in TORCH_FREE):
            continue
        seen, todo, parent = {name}, [name], {name: None}
        while todo:
            v = todo.pop()
            if v in heavy:
                chain = [v]
                while parent[chain[-1]] is not None:
                    chain.append(parent[chain[-1]])
                via = " → ".join(dotted(c) for c in reversed(chain))
                problems.append(
                    f"{dotted(name)} must not import torch, but does through {via} → {sorted(external[v] & set(HEAVY))[0]}"
                )
                break
            for w in sorted(runs[v]):
                if w not in seen:
                    seen.add(w)
                    parent[w] = v
                    todo.append(w)
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "src" / PACKAGE
    if not (root / "__init__.py").is_file():
        print(f"check_imports: {root} is not the {PACKAGE} package", file=sys.stderr)
        return 2
    problems = check(root)
    for p in problems:
        print(f"check_imports: {p}", file=sys.stderr)
    if problems:
        return 1
    n = len(list(root.rglob("*.py")))
    print(f"check_imports: {n} modules, imports go one way, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
