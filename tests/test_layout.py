"""The package's layout is a rule, checked from the imports themselves: what ships in a function
imports only what ships, and the local tooling never leaks into a function's zip."""

from __future__ import annotations

import ast
from pathlib import Path

from cascade.deploy.bundle import runtime_files

from .harness import ROOT

LIB = ROOT / "shared"
# What a phase or sweeper function may import: the runtime, the definition, state, and the errors.
RUNTIME_CORE = ("runtime", "definition", "state")
TOOLING = ("cli", "ui", "lint", "backfill", "dev", "deploy")


def _cascade_imports(path: Path) -> set[str]:
    """Every ``cascade`` module a file imports, at the top or inside a function (relative imports
    resolved)."""
    rel = path.relative_to(LIB).with_suffix("").parts
    package = ["cascade", *rel[:-1]]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]) if node.level \
                else node.module or ""
            found.add(base.rstrip("."))
    return {m for m in found if m == "cascade" or m.startswith("cascade.")}


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_runtime_core_imports_only_the_runtime_core_and_the_errors():
    offenders = {}
    for pkg in RUNTIME_CORE:
        for path in sorted((LIB / pkg).rglob("*.py")):
            bad = sorted(m for m in _cascade_imports(path)
                         if m != "cascade" and _package_of(m) not in (*RUNTIME_CORE, "errors"))
            if bad:
                offenders[path.relative_to(ROOT).as_posix()] = bad
    assert offenders == {}


def test_operations_shipped_with_the_sweeper_import_no_local_tooling():
    offenders = {path.relative_to(ROOT).as_posix(): sorted(m for m in _cascade_imports(path) if _package_of(m) in TOOLING)
                 for path in sorted((LIB / "ops").rglob("*.py"))}
    shipped = {f for f in runtime_files() if f.startswith("shared/ops/")}
    assert {f: bad for f, bad in offenders.items() if f in shipped and bad} == {}


def test_a_function_zip_holds_no_local_tooling_package():
    files = runtime_files()
    assert "shared/runtime/runner.py" in files and "shared/state/tracker.py" in files
    assert [f for f in files if f.split("/")[1] in TOOLING] == []


def test_every_module_lives_in_a_role_folder_except_the_public_api_and_the_errors():
    top = sorted(p.name for p in LIB.glob("*.py"))
    assert top == ["__init__.py", "errors.py"]
