"""What a Cloud Function bundle holds: the library's import closure of the entry points and the
runtime requirements, both read from the repository (never listed by hand)."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS_PATH = REPO_ROOT / "requirements.txt"

# Distributions the deployed functions need at run time; their pins are taken from requirements.txt
# (the single pin list), so the functions run exactly the versions the tests ran.
RUNTIME_PACKAGES = (
    "functions-framework",
    "cloudevents",
    "google-cloud-pubsub",
    "google-cloud-bigquery",
    "google-cloud-firestore",
    "google-cloud-storage",
    "PyYAML",
)


def runtime_requirements(path: Path = REQUIREMENTS_PATH) -> list[str]:
    """The pinned lines of ``RUNTIME_PACKAGES`` from ``requirements.txt`` (error if one is missing)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]
        pins[name.lower().replace("_", "-")] = line
    missing = [p for p in RUNTIME_PACKAGES if p.lower() not in pins]
    if missing:
        raise ValueError(f"{path} pins none of the runtime packages {missing}")
    return [pins[p.lower()] for p in RUNTIME_PACKAGES]


# The one function entry point every phase deploys (the phase comes from CASCADE_PHASE).
GENERIC_FUNCTION_DIR = "functions/phase"

# The packages a function may import (runtime/, definition/, state/, ops/ for the sweeper, the errors): the
# closure below never reaches the local tooling (cli/, ui/, lint/, backfill/, dev/, deploy/), which
# tests/test_layout.py checks from the imports themselves.
SHIPPED_PACKAGES = ("runtime", "definition", "state", "ops")


def runtime_files(root: Path = REPO_ROOT) -> list[str]:
    """The library files the Cloud Functions need: the import closure of every ``functions/*/main.py``
    within ``shared`` (read from the code, not listed by hand), plus the packages' ``__init__.py``.
    What is not imported at run time - the CLI, emulators, backfills, UI, fault injection - stays
    out of the function zips."""
    import ast

    lib = root / "shared"

    def module_file(dotted: str) -> Path | None:
        base = lib.joinpath(*dotted.split(".")[1:])
        for cand in (base.with_suffix(".py"), base / "__init__.py"):
            if cand.is_file():
                return cand
        return None

    def imports(path: Path) -> set[str]:
        pkg = ".".join(("cascade", *path.relative_to(lib).with_suffix("").parts)) if lib in path.parents else ""
        if path.name != "__init__.py":
            pkg = pkg.rsplit(".", 1)[0] if "." in pkg else ""
        else:
            pkg = pkg[: -len(".__init__")]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
        return {m for m in found if m == "cascade" or m.startswith("cascade.")}

    todo = sorted((root / "functions").glob("*/main.py"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        for mod in imports(path):
            parts = mod.split(".")
            for i in range(1, len(parts) + 1):  # the packages on the way are imported too
                f = module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return sorted(f.relative_to(root).as_posix() for f in seen if lib in f.parents)
