"""``cascade init DIR``: a new pipeline project that runs as generated.

The project is the template folder ``shared/dev/templates/init/`` with four words filled in:
``__PIPELINE__`` (the pipeline name, from DIR), ``__MODULE__`` (its Python module,
``<name>_processors``), ``__BUCKET__`` (the raw bucket stem) and ``__SCHEMA__`` (the absolute path
of this checkout's ``docs/definition-schema.json``, for editor completion). What it holds: a
definition with two phases (a raw load; a SQL and a Python processor), quality gates, a calendar,
sample raw files, a README that is the tutorial, a processor test case (``tests/store_trends.yaml``,
run by ``cascade test``), a test and a ``pytest.ini``.

Inside DIR every ``cascade`` command uses ``./pipeline.yaml`` (``cascade.cli.use_project_definition``)
and the functions import the module from DIR (``pipeline.make_importable``). Nothing is overwritten:
a folder that exists and is not empty is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cascade.definition.schema import REPO_ROOT, SCHEMA_PATH
from cascade.errors import CascadeError

TEMPLATE = Path(__file__).resolve().parent / "templates" / "init"
FIRST_DATE = "2025-01-01"  # the calendar's first day: needs no lookback history
LAST_SAMPLE_DATE = "2025-01-07"


class ScaffoldError(CascadeError):
    """``cascade init`` cannot create the project (folder not empty, name not usable)."""


@dataclass(frozen=True)
class Scaffold:
    """A created project: where, the pipeline name, the files written."""

    root: Path
    name: str
    files: list[str] = field(default_factory=list)

    def next_steps(self) -> str:
        return "\n".join([
            f"created {self.root}/ - pipeline {self.name!r}: " + ", ".join(self.files),
            "",
            "next:",
            f"  cd {self.root}",
            "  cascade lint                                    # every problem with its line; SQL by BigQuery's analyzer",
            "  cascade test                                    # the processor test cases in tests/ (local BigQuery only)",
            f"  cascade up --start {FIRST_DATE} --end {LAST_SAMPLE_DATE}  # emulators, functions, raw files",
            f"  cascade trigger --date {FIRST_DATE}               # phase 1, then phase 2 on its completion",
            f"  cascade wait --date {FIRST_DATE} --phase 2        # exit 0 when the date completed",
            f"  cascade status --date {FIRST_DATE}",
            "  cascade down",
            "",
            "the project's README.md walks through it; python -m pytest runs its test",
        ])


def pipeline_name(folder: Path) -> str:
    """A pipeline name from a folder name: lowercase identifier (``My-Shop`` -> ``my_shop``)."""
    name = re.sub(r"[^a-z0-9]+", "_", folder.resolve().name.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = f"p_{name}".rstrip("_")
    return name[:40]


def scaffold(root: Path, name: str | None = None) -> Scaffold:
    """Create the project in ``root`` (which must not exist or be empty)."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{root} exists and is not empty; cascade init writes into a new or empty folder "
                            f"(nothing is overwritten)")
    name = name or pipeline_name(root)
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
        raise ScaffoldError(f"pipeline name {name!r} must be a lowercase identifier of at most 40 characters "
                            f"(pass --name)")
    words = {"__PIPELINE__": name, "__MODULE__": f"{name}_processors",
             "__BUCKET__": f"{name.replace('_', '-')}-landing", "__SCHEMA__": str(SCHEMA_PATH),
             "__CASCADE__": str(REPO_ROOT / "README.md")}
    written = []
    for src in sorted(p for p in TEMPLATE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        rel = src.relative_to(TEMPLATE).as_posix()
        for word, value in words.items():
            rel = rel.replace(word, value)
        text = src.read_text()
        for word, value in words.items():
            text = text.replace(word, value)
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        written.append(rel)
    top = sorted({w.split("/")[0] + ("/" if "/" in w else "") for w in written})
    return Scaffold(root, name, top)
