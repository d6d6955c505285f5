"""What the running functions were started with, against the definition and code in use.

Owns the versions a local function process is started with and the comparison of those versions
with the local ones. Three parts, each a digest:

* ``definition`` - ``versions.definition_version``: what determines every processor's rows, the
  phases and the calendar (formatting-only changes do not count).
* ``files``      - the definition file as written, and the Python modules beside it (the project's
  ``python:`` / ``synthetic:`` modules live there; a module elsewhere on PYTHONPATH counts through
  ``definition``, which holds the source of every Python processor's module).
* ``framework``  - Cascade's own runtime code: every module of the ``cascade`` package a function
  imports (all but the CLI, the linter and the status page) and the generic entry point
  ``functions/phase/main.py``.

``cascade up`` records them with each function it starts (``LocalStack.start_process(meta=...)``)
and restarts a function when any differs; ``drift`` tells ``cascade status`` and the status page
that the running functions run another definition or code than the local one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cascade.definition.model import Pipeline
from cascade.definition.versions import DIGEST_CHARS, definition_version

PACKAGE = Path(__file__).resolve().parents[1]
ENTRY_POINT = PACKAGE.parent / "functions" / "phase" / "main.py"
# Sub-packages of `cascade` that a function never imports (local tooling only).
_NOT_RUNTIME = ("cli", "lint", "ui")
PARTS = ("definition", "files", "framework")
_LABEL = {"definition": "the definition", "files": "the definition file or its Python modules",
          "framework": "Cascade's runtime code"}


def _files_digest(paths: list[Path], root: Path | None = None) -> str:
    h = hashlib.sha256()
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            data = b"<missing>"
        name = str(path.relative_to(root)) if root else str(path)
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:DIGEST_CHARS]


def framework_digest() -> str:
    """The digest of Cascade's runtime code (the package's modules a function imports, and its entry point)."""
    files = sorted(p for p in PACKAGE.rglob("*.py")
                   if p.relative_to(PACKAGE).parts[0] not in _NOT_RUNTIME and "__pycache__" not in p.parts)
    return _files_digest([*files, ENTRY_POINT], PACKAGE.parent)


def files_digest(pipeline: Pipeline) -> str:
    """The digest of the definition file and the Python modules in its folder ("" without a file)."""
    if not pipeline.source_path:
        return ""
    source = Path(pipeline.source_path).resolve()
    return _files_digest([source, *sorted(source.parent.glob("*.py"))])


def local_versions(pipeline: Pipeline) -> dict[str, str]:
    """The versions a function started now from ``pipeline`` would run."""
    return {"definition": definition_version(pipeline), "files": files_digest(pipeline),
            "framework": framework_digest()}


@dataclass(frozen=True)
class Drift:
    """Running functions whose recorded versions differ from the local ones."""

    phases: list[int]  # the phases whose running function differs
    changed: list[str]  # which parts differ (of PARTS)
    running_definition: str | None
    local_definition: str
    # part -> (running, local) digests, for the parts that differ (running: the first phase it differs in)
    digests: dict[str, tuple[str | None, str]] = field(default_factory=dict)

    @property
    def message(self) -> str:
        """Only the parts that differ, each with its own digests: ``... were started with other runtime
        code than the local one: Cascade's runtime code changed (running 1a.., local 2b..); run ...``."""
        heads = (["another definition"] if {"definition", "files"} & set(self.changed) else []) \
            + (["other runtime code"] if "framework" in self.changed else [])
        parts = ", ".join(f"{_LABEL[p]} changed (running {self.digests.get(p, (None, ''))[0] or 'unknown'}, "
                          f"local {self.digests.get(p, (None, ''))[1] or 'none'})" for p in self.changed)
        return (f"the running functions of phase(s) {', '.join(map(str, self.phases))} were started with "
                f"{' and '.join(heads)} than the local one: {parts}; run `cascade up` to restart them")

    def to_dict(self) -> dict[str, Any]:
        return {"differs": True, "phases": self.phases, "changed": self.changed,
                "running_definition": self.running_definition, "local_definition": self.local_definition,
                "digests": {p: {"running": r, "local": loc} for p, (r, loc) in self.digests.items()},
                "message": self.message}


def drift(local: Mapping[str, str], running: Mapping[int, Mapping[str, Any]]) -> Drift | None:
    """Compare the local versions with each running function's recorded ones (phase -> versions;
    a function recorded without versions was started by an older Cascade: it differs)."""
    phases, digests = [], {}
    for phase, recorded in sorted(running.items()):
        diff = [p for p in PARTS if recorded.get(p) != local.get(p)]
        if diff:
            phases.append(phase)
            for p in diff:
                digests.setdefault(p, (recorded.get(p), local.get(p, "")))
    if not phases:
        return None
    first = running[phases[0]].get("definition")
    changed = [p for p in PARTS if p in digests]
    return Drift(phases, changed, first, local["definition"], {p: digests[p] for p in changed})


def local_drift(pipeline: Pipeline, state_dir: Path) -> Drift | None:
    """The drift of the functions ``cascade up`` started for ``pipeline`` under ``state_dir`` (None when
    none is running, or all run the local definition and code). The local definition is read again
    from its file: a long-running caller (the status page) compares with what is on disk now."""
    from cascade.definition.loading import load
    from cascade.dev.local import running_functions
    from cascade.errors import DefinitionError

    running = running_functions(pipeline, state_dir)
    if not running:
        return None
    if pipeline.source_path:
        try:
            pipeline = load(pipeline.source_path, namespace=pipeline.namespace)
        except DefinitionError:
            pass  # an invalid file on disk: its `files` digest still differs
    return drift(local_versions(pipeline), running)
