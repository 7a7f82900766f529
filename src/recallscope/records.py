"""What a stage's record holds, and when the files it describes may be reused.

A run reuses a stage found in its run directory only when the stage's record (written by
:meth:`recallscope.rundir.RunDir.write_stage` after the stage's tables) equals what the run would
write now on each of these fields, the record's **key**:

- ``identity``: the run identity (model and its hash, relation and its content hash, shots, seed,
  prompt cap, dtype, preset, demonstrations);
- ``prompts_sha256``: the prompts themselves (text, token ids, subject span, answer token), so a
  change of tokenizer or of prompt construction is another stage;
- ``config``: the stage's resolved config (every setting, its derived seed included);
- ``inputs``: for each stage it requires or reads, the content hash of that stage's record
  (:func:`content_sha256`; ``None`` where it does not exist), so a stage computed from another
  version of its input is never read beside the new input;
- ``recallscope`` and ``code_sha256``: the package version and a hash of the source of the code
  that computes the stage (:func:`code_sha256`: its compute function, the run-layer helpers it
  calls, and every package module it reaches), so results computed by other code are not reused
  without saying so.

:func:`stale_reason` says, in a few words, why a record does not match (the log line of the
recomputation: ``patch: recomputing (config changed: mode 'total' -> 'path')``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import json
import sys
import types
from pathlib import Path
from typing import Any, Callable

from .rundir import dumps, without_timings
from .version import __version__

KEY = ("identity", "prompts_sha256", "config", "inputs", "recallscope", "code_sha256")
PACKAGE = __name__.rpartition(".")[0]
# Code that cannot change a stage's tables: the figures its .plot() draws, progress bars.
_NOT_RESULTS = (f"{PACKAGE}.figures", f"{PACKAGE}.progress")


def prompts_sha256(prompts) -> str:
    """sha256 of what the stages read from a prompt set: each prompt's text, token ids, subject
    span, answer token and demonstrations' template, and the counts of prompts dropped."""
    rows = [[p.text, list(p.input_ids), list(p.subject_span), p.answer_id, p.demo_template, p.index] for p in prompts.prompts]
    body = {
        "prompts": rows,
        "dropped": dict(sorted((str(k), int(v)) for k, v in prompts.dropped.items())),
        "answer_ids": list(prompts.answer_ids),
        "shots": prompts.shots,
    }
    return hashlib.sha256(json.dumps(body, ensure_ascii=False).encode("utf-8")).hexdigest()


def key(identity: dict, prompts_hash: str, config: Any, inputs: dict[str, str | None], code: str | None) -> dict:
    """The record key of a stage as this run would write it (``config``: the dataclass or its dict)."""
    as_dict = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    return json.loads(
        dumps(
            {
                "identity": identity,
                "prompts_sha256": prompts_hash,
                "config": as_dict,
                "inputs": inputs,
                "recallscope": __version__,
                "code_sha256": code,
            }
        )
    )


def content_sha256(record: dict) -> str:
    """What a stage's readers depend on: its key, the sha256 of each of its tables and its
    summary entry without timings. A stage recomputed with the same outcome (a deterministic stage
    redone under --force) keeps its content hash, so the stages that read it stay valid."""
    body = {k: record.get(k) for k in KEY}
    body["tables"] = {str(n): e.get("sha256") for n, e in (record.get("tables") or {}).items()}
    body["summary"] = without_timings(record.get("summary"))
    return hashlib.sha256(dumps(body).encode("utf-8")).hexdigest()


def _changes(old: Any, new: Any) -> str:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "config changed"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    shown = ", ".join(f"{k} {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys[:3])
    return "config changed: " + shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def stale_reason(record: dict, now: dict, own: bool = True) -> str | None:
    """None when ``record`` matches the key ``now``; else why not, in a few words. ``own`` False
    checks only what the stage was computed *from* (identity, prompts, inputs), not its own config
    and code: a stage a run does not run keeps the config it was made with."""
    if record.get("identity") != now["identity"]:
        return "the run's identity changed"
    if record.get("prompts_sha256") != now["prompts_sha256"]:
        return "the prompts changed"
    old_inputs = record.get("inputs") if isinstance(record.get("inputs"), dict) else {}
    for dep in sorted(set(old_inputs) | set(now["inputs"])):
        before, after = old_inputs.get(dep), now["inputs"].get(dep)
        if before != after:
            if after is None:
                return f"its input {dep} is gone"
            if before is None:
                return f"its input {dep} exists now and did not when it was computed"
            return f"its input {dep} changed"
    if not own:
        return None
    if record.get("config") != now["config"]:
        return _changes(record.get("config"), now["config"])
    if record.get("recallscope") != now["recallscope"]:
        return f"computed by recallscope {record.get('recallscope')}, this is {now['recallscope']}"
    if record.get("code_sha256") != now["code_sha256"]:
        old = str(record.get("code_sha256"))[:12]
        return f"computed by other code (code sha256 {old}... -> {str(now['code_sha256'])[:12]}...)"
    return None


# ----------------------------------------------------------------------------- the code of a stage
def code_sha256(compute: Callable, config_type: type) -> str | None:
    """sha256 of the source that computes a stage: ``compute`` (the run layer's function feeding
    the stage), the functions of its own module it calls (transitively), and the source files of
    every package module reached from the modules it names and from ``config_type``'s module,
    through their imports (figures and progress bars left out: they draw, they do not compute).
    None when the source cannot be read (a build without .py files)."""
    try:
        return _code_sha256(compute, config_type)
    except (OSError, TypeError):
        return None


@functools.lru_cache(maxsize=None)
def _code_sha256(compute: Callable, config_type: type) -> str:
    digest = hashlib.sha256()
    functions: dict[str, str] = {}
    modules: set[str] = {config_type.__module__}
    todo = [compute]
    while todo:
        fn = todo.pop()
        qualname = f"{fn.__module__}.{fn.__qualname__}"
        if qualname in functions:
            continue
        functions[qualname] = inspect.getsource(fn)
        for name in _names(fn.__code__):
            value = fn.__globals__.get(name)
            if isinstance(value, types.ModuleType) and value.__name__.startswith(PACKAGE + "."):
                modules.add(value.__name__)
            elif isinstance(value, types.FunctionType) and value.__module__ == fn.__module__:
                todo.append(value)
            elif getattr(value, "__module__", "").startswith(PACKAGE + ".") and value.__module__ != fn.__module__:
                modules.add(value.__module__)
    for qualname in sorted(functions):
        digest.update(qualname.encode() + b"\0" + functions[qualname].encode("utf-8") + b"\0")
    for path in sorted(_closure(frozenset(modules))):
        digest.update(str(Path(path).relative_to(_root())).encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return digest.hexdigest()


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _root() -> Path:
    return Path(sys.modules[PACKAGE].__file__).parent


def _file_of(module: str) -> Path | None:
    rel = module[len(PACKAGE) + 1 :].split(".") if module != PACKAGE else []
    base = _root().joinpath(*rel)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def _closure(modules: frozenset[str]) -> frozenset[str]:
    """Source files of ``modules`` and of every package module they import (transitively)."""
    seen: set[str] = set()
    files: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen or module.startswith(_NOT_RESULTS):
            continue
        seen.add(module)
        path = _file_of(module)
        if path is None:
            continue
        files.add(str(path))
        is_package = path.name == "__init__.py"
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = module.split(".")
                    base = ".".join(parts[: len(parts) - node.level + (1 if is_package else 0)])
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                if target.startswith(PACKAGE):
                    # ``from . import verdicts`` reads the submodule, not the package's lazy __init__
                    # (which names every module: counting it made every stage's hash the whole package's)
                    if target != PACKAGE:
                        todo.append(target)
                    # ``from .models import view`` names a submodule
                    todo.extend(f"{target}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                todo.extend(alias.name for alias in node.names if alias.name.startswith(PACKAGE) and alias.name != PACKAGE)
    return frozenset(files)


def _runtime_imports(tree: ast.AST):
    """The import statements of a module that run: those under ``if TYPE_CHECKING:`` are left out
    (they only name types for checkers, and the package's own __init__ names every module there)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )
