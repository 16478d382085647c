"""Which files of the package a command runs: its import closure, read from the source (no import)."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

MODULE_STRING = re.compile(r"^(pipeline(?:\.\w+)+)(?::\w+)?$")  # "pipeline.modeling.zoo:gru" (registry builders)


def module_file(root: Path, module: str) -> Path | None:
    base = root / module.replace(".", "/")
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    return None


def _imports(root: Path, module: str, path: Path) -> set[str]:
    """Every ``pipeline`` module ``path`` imports (module level or lazily inside functions), plus
    module paths named in strings (the registry imports builders by name)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (m := MODULE_STRING.match(node.value)):
            names = [m[1]]
        found |= {n for n in names if n.split(".")[0] == "pipeline" and module_file(root, n)}
    return found


def closure(root: Path, modules: list[str]) -> set[Path]:
    """Files of every module reachable from ``modules``, with their packages' ``__init__.py``."""
    todo, seen = list(modules), set()
    while todo:
        mod = todo.pop()
        parts = mod.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
            todo.append(".".join(parts[:i]))
        if mod in seen or not (path := module_file(root, mod)):
            continue
        seen.add(mod)
        todo.extend(_imports(root, mod, path))
    return {module_file(root, m).relative_to(root) for m in seen}  # type: ignore[union-attr]


def command_modules(cmd: str) -> list[str]:
    """``python -m pipeline.stages frames --out x`` -> the modules that command runs."""
    argv = shlex.split(cmd)
    if "-m" not in argv:
        return []
    mod = argv[argv.index("-m") + 1]
    rest = argv[argv.index("-m") + 2 :]
    mods = [mod, f"{mod}.__main__"]
    if mod == "pipeline.stages" and rest:  # the dispatcher imports the named stage only
        mods.append(f"pipeline.stages.{rest[0]}")
    return mods
